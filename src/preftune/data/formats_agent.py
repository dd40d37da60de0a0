"""Tool-calling rows of TRL and OpenAI, for `preftune data convert` (the parsers live in formats.py).

- TRL: assistant messages with `tool_calls` (`{"type": "function", "function": {"name", "arguments": {...}}}`,
  usually without an `id`), `tool` messages with `name` (usually without `tool_call_id`), a row-level `tools`
  list of JSON-schema functions.
- OpenAI fine-tuning rows: `tools` (typed), or the legacy `functions` list with assistant `function_call`
  (`{"name", "arguments": "<json>"}`) and `function` role results carrying `name`; preference rows keep
  them under `input` (`input.tools` / `input.functions`).

A call without an id gets `call_<turn>_<k>` (its message's position in the trajectory and its position in the
message), so chosen and rejected, which share the prompt, name its calls alike. A result without
`tool_call_id` answers the earliest open call of its `name` (the earliest open call when it has none): the
order both TRL and OpenAI's legacy format imply. Validation of the result is the record's (data/agent.py).
"""

from __future__ import annotations

from typing import Any

_AGENT_KEYS = ("tool_calls", "function_call", "tool_call_id")


def is_agent_message(m: dict) -> bool:
    return any(m.get(k) is not None for k in _AGENT_KEYS) or (
        m.get("role", m.get("from")) in ("tool", "function") and isinstance(m.get("name"), str))


def agent_message(m: dict, role: Any, content: str) -> dict:
    """One tool-calling message in the record's shape (ids linked later by `link`)."""
    out: dict[str, Any] = {"role": role, "content": content}
    calls = m.get("tool_calls")
    if m.get("function_call") is not None and not calls:  # OpenAI's legacy single call
        calls = [{"type": "function", "function": m["function_call"]}]
    if calls:
        out["tool_calls"] = [dict(c, type=c.get("type", "function")) if isinstance(c, dict) else c for c in calls]
    for k in ("tool_call_id", "name"):
        if m.get(k) is not None and role == "tool":
            out[k] = m[k]
    return out


def link(conv: list[dict]) -> list[dict]:
    """Give calls without an id `call_<turn>_<k>` and results without `tool_call_id` the earliest open
    call (of their `name` when they have one). Messages that already carry ids are left as they are."""
    out, open_calls = [], []  # open_calls: [(id, name)] in call order
    for i, m in enumerate(conv):
        m = dict(m)
        if isinstance(m.get("tool_calls"), list):
            calls = []
            for k, c in enumerate(m["tool_calls"]):
                if isinstance(c, dict):
                    c = dict(c)
                    c.setdefault("id", f"call_{i}_{k}")
                    fn = c.get("function")
                    open_calls.append((c["id"], fn.get("name") if isinstance(fn, dict) else None))
                calls.append(c)
            m["tool_calls"] = calls
        elif m.get("role") == "tool":
            cid = m.get("tool_call_id")
            if cid is None and open_calls:
                named = [c for c in open_calls if c[1] == m.get("name")]
                cid = (named or open_calls)[0][0]
                m["tool_call_id"] = cid
            open_calls = [c for c in open_calls if c[0] != cid]
        out.append(m)
    return out


def _is_messages(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(m, dict) for m in v)


def finish(out: dict, src: dict) -> dict:
    """A converted pair/unpaired row with the source's tools (`tools`, `functions`, or under `input`)
    and the ids of its calls and results linked across prompt + each response."""
    inp = src.get("input") if isinstance(src.get("input"), dict) else {}
    tools = next((v for v in (src.get("tools"), src.get("functions"), inp.get("tools"), inp.get("functions"))
                  if v is not None), None)
    out.pop("functions", None)
    if tools is not None:
        out["tools"] = tools
    prompt = out.get("prompt")
    if not _is_messages(prompt):
        return out
    for name in ("chosen", "rejected", "completion"):
        if _is_messages(out.get(name)):
            linked = link(prompt + out[name])
            out["prompt"], out[name] = linked[:len(prompt)], linked[len(prompt):]
    return out
