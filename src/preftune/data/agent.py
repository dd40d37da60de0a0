"""Agent rows: tool definitions, tool calls and tool results in the record (OpenAI / TRL convention).

A row may carry `tools`, a list of JSON-schema function definitions:

    {"type": "function", "function": {"name": "calculator", "description": "...",
                                      "parameters": {"type": "object", "properties": {...}}}}

(the legacy OpenAI `functions` entry `{"name", "parameters"}` is accepted and normalised to that form).
An assistant message may carry `tool_calls`:

    [{"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": "{\\"x\\": 1}"}}]

(`arguments` is kept as the JSON text the model wrote; an object is serialised once, on reading), and may
then have no `content` (normalised to ""). A `tool` message carries `tool_call_id` (and optionally `name`).

The trajectory of a row is its prompt followed by one response (chosen, rejected, ...). `check_trajectory`
walks it in order and reports, with the field path of the offending message: a call whose arguments do not
match its tool's schema (checked with the `jsonschema` package), a call to a tool not in `tools`, a tool
result whose `tool_call_id` answers no earlier call, and a call not answered before the next assistant turn.
A trajectory may end with calls still open: a step-level continuation is exactly such a call.
"""

from __future__ import annotations

import json
from typing import Any

# The documented rendering for chat templates without tool support (and for plain-text views).
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE = "<tool_response>", "</tool_response>"


def _problem(problems: list, field: str, message: str) -> None:
    from preftune.data.records import Problem  # records imports this module: import at call time

    problems.append(Problem(field, message))


# ----------------------------------------------------------------------------- tools

def normalise_tools(value: Any, problems: list, name: str = "tools") -> list[dict]:
    """The row's tool definitions as `{"type": "function", "function": {...}}`; problems for a bad entry,
    a missing or repeated name, or `parameters` that is not a valid JSON schema."""
    if value is None:
        return []
    if not isinstance(value, list):
        _problem(problems, name, f"must be a list of function definitions, got {type(value).__name__}")
        return []
    out, seen = [], set()
    for i, t in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(t, dict):
            _problem(problems, where, f"must be a function definition object, got {type(t).__name__}")
            continue
        if "function" in t:
            if t.get("type", "function") != "function":
                _problem(problems, f"{where}.type", f"must be 'function', got {t.get('type')!r}")
            fn, fwhere = t["function"], f"{where}.function"
        else:  # legacy `functions` entry: the definition itself
            fn, fwhere = t, where
        if not isinstance(fn, dict):
            _problem(problems, fwhere, f"must be an object, got {type(fn).__name__}")
            continue
        fname = fn.get("name")
        if not isinstance(fname, str) or not fname.strip():
            _problem(problems, f"{fwhere}.name", "must be a non-empty string")
            continue
        if fname in seen:
            _problem(problems, f"{fwhere}.name", f"tool {fname!r} is defined twice")
        seen.add(fname)
        params = fn.get("parameters")
        if params is not None:
            why = _schema_problem(params)
            if why:
                _problem(problems, f"{fwhere}.parameters", why)
        out.append({"type": "function", "function": dict(fn)})
    return out


def _schema_problem(schema: Any) -> str | None:
    if not isinstance(schema, dict):
        return f"must be a JSON schema object, got {type(schema).__name__}"
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.exceptions.SchemaError as e:
        return f"is not a valid JSON schema: {e.message}"
    return None


def tools_by_name(tools: list[dict]) -> dict[str, dict]:
    return {t["function"]["name"]: t["function"] for t in tools}


# ----------------------------------------------------------------------------- messages

def message_extras(m: dict, role: Any, where: str, problems: list) -> dict:
    """The agent keys of one message, normalised: `tool_calls` of an assistant message, `tool_call_id`
    (and `name`) of a tool message. Problems for those keys on another role or malformed."""
    out: dict[str, Any] = {}
    calls = m.get("tool_calls")
    if calls is not None and calls != []:
        if role != "assistant":
            _problem(problems, f"{where}.tool_calls", f"only assistant messages make tool calls (role is {role!r})")
        elif not isinstance(calls, list):
            _problem(problems, f"{where}.tool_calls", f"must be a list of calls, got {type(calls).__name__}")
        else:
            out["tool_calls"] = [_call(c, f"{where}.tool_calls[{j}]", problems) for j, c in enumerate(calls)]
    if role == "tool":
        # A tool message without an id is plain tool text (rows before tool calls were structured);
        # `check_trajectory` asks for the id as soon as a call is open.
        cid = m.get("tool_call_id")
        if cid is not None and (not isinstance(cid, str) or not cid):
            _problem(problems, f"{where}.tool_call_id", f"must be a non-empty string, got {cid!r}")
        elif cid is not None:
            out["tool_call_id"] = cid
        if isinstance(m.get("name"), str):
            out["name"] = m["name"]
    elif m.get("tool_call_id") is not None:
        _problem(problems, f"{where}.tool_call_id", f"only tool messages answer calls (role is {role!r})")
    return out


def _call(c: Any, where: str, problems: list) -> dict:
    """One tool call as {"id", "type": "function", "function": {"name", "arguments" (JSON text)}}."""
    if not isinstance(c, dict):
        _problem(problems, where, f"must be a call object, got {type(c).__name__}")
        return {}
    cid = c.get("id")
    if not isinstance(cid, str) or not cid:
        _problem(problems, f"{where}.id", "is missing (the tool message's tool_call_id names it)"
                 if cid is None else f"must be a non-empty string, got {cid!r}")
    if c.get("type", "function") != "function":
        _problem(problems, f"{where}.type", f"must be 'function', got {c.get('type')!r}")
    fn = c.get("function")
    if not isinstance(fn, dict):
        _problem(problems, f"{where}.function", "must be an object with name and arguments")
        return {"id": cid, "type": "function", "function": {}}
    name, args = fn.get("name"), fn.get("arguments")
    if not isinstance(name, str) or not name:
        _problem(problems, f"{where}.function.name", "must be a non-empty string")
    if isinstance(args, dict):
        args = json.dumps(args, ensure_ascii=False)
    elif not isinstance(args, str):
        _problem(problems, f"{where}.function.arguments", "must be a JSON object (as text or an object)"
                 + (" (missing)" if args is None else f", got {type(args).__name__}"))
        args = None
    else:
        try:
            decoded = json.loads(args)
        except json.JSONDecodeError as e:
            _problem(problems, f"{where}.function.arguments", f"is not valid JSON ({e.msg} at column {e.colno})")
        else:
            if not isinstance(decoded, dict):
                _problem(problems, f"{where}.function.arguments",
                         f"must be a JSON object, got {type(decoded).__name__}")
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def decoded_arguments(call: dict) -> dict | None:
    """A normalised call's arguments as an object (None when they are not a valid JSON object)."""
    try:
        args = json.loads(call["function"]["arguments"])
    except (TypeError, KeyError, json.JSONDecodeError):
        return None
    return args if isinstance(args, dict) else None


# ----------------------------------------------------------------------------- the trajectory

def check_trajectory(segments: list[tuple[str, list[dict]]], tools: list[dict], problems: list) -> None:
    """Walk prompt + response in order (`segments` = [(field name, normalised messages), ...]) and
    append the cross-message problems, each at the field path of the message concerned."""
    import jsonschema

    by_name = tools_by_name(tools)
    pending: dict[str, tuple[str, str]] = {}  # open call id -> (field path, tool name)
    answered: set[str] = set()
    seen: set[str] = set()
    for seg, msgs in segments:
        for i, m in enumerate(msgs):
            where = f"{seg}[{i}]"
            if m.get("role") == "assistant":
                for cid, (cwhere, name) in pending.items():
                    _problem(problems, cwhere, f"call {cid!r} ({name}) is not answered by a tool message "
                                               f"before the next assistant turn ({where})")
                pending = {}
                for j, call in enumerate(m.get("tool_calls", [])):
                    _check_call(call, f"{where}.tool_calls[{j}]", by_name, seen, pending, problems, jsonschema)
            elif m.get("role") == "tool" and "tool_call_id" not in m and pending:
                open_ids = ", ".join(repr(k) for k in pending)
                _problem(problems, f"{where}.tool_call_id", f"is missing (the call it answers: one of {open_ids})")
            elif m.get("role") == "tool" and "tool_call_id" in m:
                cid = m["tool_call_id"]
                if cid in pending:
                    pending.pop(cid)
                    answered.add(cid)
                elif cid in answered:
                    _problem(problems, f"{where}.tool_call_id", f"answers call {cid!r}, which an earlier tool "
                                                                "message already answered")
                else:
                    open_ids = ", ".join(repr(k) for k in pending) or "none"
                    _problem(problems, f"{where}.tool_call_id",
                             f"{cid!r} answers no earlier call (open calls: {open_ids})")


def _check_call(call: dict, where: str, by_name: dict, seen: set, pending: dict, problems: list, jsonschema) -> None:
    cid, fn = call.get("id"), call.get("function") or {}
    name = fn.get("name")
    if isinstance(cid, str) and cid:
        if cid in seen:
            _problem(problems, f"{where}.id", f"call id {cid!r} is used twice in the trajectory")
        seen.add(cid)
        pending[cid] = (where, name)
    if not isinstance(name, str) or not name:
        return
    if name not in by_name:
        known = ", ".join(sorted(by_name)) or "the row has no `tools` list"
        _problem(problems, f"{where}.function.name", f"calls {name!r}, which is not in tools ({known})")
        return
    schema, args = by_name[name].get("parameters"), decoded_arguments(call)
    if schema is None or args is None or _schema_problem(schema):
        return  # no schema, or the arguments / the schema are already reported as broken
    errors = sorted(jsonschema.validators.validator_for(schema)(schema).iter_errors(args),
                    key=lambda e: [str(p) for p in e.path])
    if errors:
        shown = "; ".join((f"at {'.'.join(str(p) for p in e.path)}: " if e.path else "") + e.message
                          for e in errors[:3])
        _problem(problems, f"{where}.function.arguments", f"do not match the parameters of tool {name!r}: {shown}")


# ----------------------------------------------------------------------------- text views

def call_json(call: dict) -> str:
    """`{"name": ..., "arguments": {...}}` of one call, the body of a <tool_call> block."""
    args = decoded_arguments(call)
    return json.dumps({"name": call["function"]["name"], "arguments": args if args is not None
                       else call["function"]["arguments"]}, ensure_ascii=False)


def message_text(m: dict) -> str:
    """The text of one message with its tool calls as `<tool_call>{json}</tool_call>` blocks after the
    content (one per line); the content alone for a message without calls."""
    calls = m.get("tool_calls") or []
    if not calls:
        return m["content"]
    blocks = "\n".join(f"{TOOL_CALL_OPEN}{call_json(c)}{TOOL_CALL_CLOSE}" for c in calls)
    return f"{m['content']}\n{blocks}" if m["content"] else blocks


def is_agent_conversation(conv: list[dict]) -> bool:
    return any(m.get("tool_calls") or m.get("role") == "tool" for m in conv)


# ----------------------------------------------------------------------------- rendering for chat templates

TOOLS_PREAMBLE = ("You can call functions. Their JSON schemas are inside <tools></tools>:\n<tools>\n{tools}\n</tools>\n"
                  "To call one, write <tool_call>{{\"name\": <function name>, \"arguments\": <arguments object>}}"
                  "</tool_call>; each result comes back inside <tool_response></tool_response>.")


def plain_messages(conv: list[dict], tools: list[dict]) -> list[dict]:
    """The documented rendering for a chat template without tool support, as plain {"role", "content"}
    messages any template accepts: the tool schemas (one JSON object a line) in the system turn (appended
    to the first system message, or a new one first); an assistant's calls as `<tool_call>{json}</tool_call>`
    lines after its text; each run of tool results as ONE user turn of `<tool_response>...</tool_response>`
    blocks (templates that insist on alternating roles accept it). Earlier turns render the same whatever
    follows them, so the prompt is a prefix of prompt + response."""
    out: list[dict] = []
    for m in conv:
        if m["role"] == "tool":
            block = f"{TOOL_RESPONSE_OPEN}{m['content']}{TOOL_RESPONSE_CLOSE}"
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
        else:
            out.append({"role": m["role"], "content": message_text(m)})
    out = [{"role": m["role"], "content": m["content"]} for m in out]
    if tools:
        preamble = TOOLS_PREAMBLE.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{preamble}"}
        else:
            out.insert(0, {"role": "system", "content": preamble})
    return out


def template_messages(conv: list[dict]) -> list[dict]:
    """Messages for a chat template that supports tools (transformers' convention): the calls'
    arguments as objects, tool results with their `tool_call_id` (and `name` when known)."""
    out = []
    for m in conv:
        m = dict(m)
        if m.get("tool_calls"):
            m["tool_calls"] = [{**c, "function": {"name": c["function"]["name"], "arguments": decoded_arguments(c)
                                                  if decoded_arguments(c) is not None else c["function"]["arguments"]}}
                               for c in m["tool_calls"]]
        out.append(m)
    return out
