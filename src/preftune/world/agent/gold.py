"""The gold scorer of the tool-use world, per step and per trajectory.

Dimensions (each in [0, 1], or None where it does not apply; `total` = their mean over the defined ones):
- tool_choice: the right tool, or none. A call is right when its tool is one of the calls still needed; an
  answer is right when nothing is needed any more. Trajectory: right calls (at most one per needed call) /
  max(needed calls, calls made); a no-tool task scores 1 with no call and 0 with any.
- arguments: of a call to a right tool, 1 when the arguments do what the needed call does (the calculator's
  expression has its value, the search finds its document, ...), 0.5 when they are valid but wrong, 0 when
  invalid (not a JSON object, not matching the schema, or the tool answers with an error).
- answer: the final answer holds the gold answer (numbers compared as numbers), i.e. the result is used right.
- grounded: no invented tool results. Every number of the final answer appears in the prompt or a tool result,
  and so does every candidate text answer it names; an assistant that writes a `<tool_response>` block itself
  scores 0.
- efficiency: no unnecessary or repeated calls: 1 - 0.5 per call that repeats an earlier one (same tool and
  arguments) or that no needed call asked for (floored at 0).
- stopping: the trajectory ends with an answer and makes no call once everything needed is in hand. A step:
  a call scores 1 while calls are still needed and 0 after; an answer scores 1 when nothing is needed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from preftune.data.agent import TOOL_RESPONSE_OPEN
from preftune.world.agent.tasks import AgentTask
from preftune.world.agent.tools import TOOLS, calculate, execute, find_country, search

AGENT_ATTRIBUTES = ("tool_choice", "arguments", "answer", "grounded", "efficiency", "stopping")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def numbers(text: str) -> list[float]:
    out = []
    for m in _NUMBER.findall(text):
        try:
            out.append(float(m.replace(",", "")))
        except ValueError:
            continue
    return out


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))  # printed values compare exactly; float noise does not count


def _args(call: dict) -> dict | None:
    raw = call.get("function", {}).get("arguments")
    try:
        args = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return None
    return args if isinstance(args, dict) else None


def _valid(name: str, args: dict | None) -> bool:
    """A JSON object matching the tool's schema, on which the tool does not answer with an error."""
    import jsonschema

    if args is None or name not in _SCHEMAS:
        return False
    if not jsonschema.Draft202012Validator(_SCHEMAS[name]).is_valid(args):
        return False
    return not execute(name, args).startswith("error:")


def does_what(name: str, args: dict, gold: dict) -> bool:
    """Whether a valid call does what the gold call does."""
    g = gold["arguments"]
    if name != gold["name"]:
        return False
    if name == "calculator":
        return _close(calculate(args["expression"]), calculate(g["expression"]))
    if name == "convert_units":
        return (_close(float(args["value"]), float(g["value"])) and args["from_unit"] == g["from_unit"]
                and args["to_unit"] == g["to_unit"])
    if name == "lookup":
        return find_country(args["country"]) == find_country(g["country"]) and args["field"] == g["field"]
    return search(args["query"]) == search(g["query"])


@dataclass
class _State:
    """What a trajectory has done so far."""
    done: list[bool]
    calls: list[tuple[str, str]] = field(default_factory=list)  # (tool, canonical arguments) of every call
    seen: list[str] = field(default_factory=list)               # prompt and tool results, the texts to ground on

    def remaining(self, task: AgentTask) -> list[int]:
        return [i for i, d in enumerate(self.done) if not d]


def _judge_call(task: AgentTask, state: _State, call: dict) -> dict:
    """One call's tool_choice / arguments / efficiency / stopping, and the state updated."""
    name = call.get("function", {}).get("name")
    args = _args(call)
    remaining = state.remaining(task)
    key = (name, json.dumps(args, sort_keys=True) if args is not None else str(call.get("function")))
    repeated = key in state.calls
    state.calls.append(key)
    right = [i for i in remaining if task.calls[i]["name"] == name]
    out = {"tool_choice": 1.0 if right else 0.0, "arguments": None, "efficiency": 0.0 if repeated or not right else 1.0,
           "stopping": 1.0 if remaining else 0.0}
    if right:
        valid = _valid(name, args)
        hit = next((i for i in right if valid and does_what(name, args, task.calls[i])), None)
        out["arguments"] = 1.0 if hit is not None else 0.5 if valid else 0.0
        if hit is not None and not repeated:
            state.done[hit] = True
    return out


def answer_correct(task: AgentTask, text: str) -> bool:
    """The text holds the gold answer: a number equal to it, or the answer's words (case aside)."""
    if task.numeric:
        return any(_close(x, float(task.answer)) for x in numbers(text))
    return task.answer.lower() in text.lower()


def _judge_answer(task: AgentTask, state: _State, text: str) -> dict:
    nums = numbers(text)
    correct = answer_correct(task, text)
    seen = " ".join(state.seen)
    seen_nums = numbers(seen)
    grounded = all(any(_close(x, y) for y in seen_nums) for x in nums) and all(
        v.lower() in seen.lower() for v in task.vocab if v.lower() in text.lower())
    remaining = state.remaining(task)
    return {"tool_choice": 0.0 if remaining else 1.0, "answer": float(correct),
            "grounded": float(grounded and TOOL_RESPONSE_OPEN not in text), "stopping": None if remaining else 1.0}


def _replay(task: AgentTask, history: list[dict]) -> _State:
    state = _State(done=[False] * len(task.calls))
    for m in history:
        if m["role"] == "assistant":
            for c in m.get("tool_calls") or []:
                _judge_call(task, state, c)
        elif m["role"] in ("user", "tool", "system"):
            state.seen.append(m["content"])
    return state


def _mean(dims: list[dict]) -> dict:
    out: dict = {}
    for a in AGENT_ATTRIBUTES:
        vals = [d[a] for d in dims if d.get(a) is not None]
        out[a] = sum(vals) / len(vals) if vals else None
    return out


def _total(scores: dict) -> dict:
    vals = [v for k, v in scores.items() if k in AGENT_ATTRIBUTES and v is not None]
    return {**scores, "total": round(sum(vals) / len(vals), 6) if vals else 0.0}


def score_step(task: AgentTask, history: list[dict], step: dict) -> dict:
    """Gold of one assistant step given the conversation before it (prompt, earlier calls and results)."""
    state = _replay(task, history)
    calls = step.get("tool_calls") or []
    if not calls:
        return _total({a: None for a in AGENT_ATTRIBUTES} | _judge_answer(task, state, step["content"]))
    scores = _mean([_judge_call(task, state, c) for c in calls])
    if TOOL_RESPONSE_OPEN in step["content"]:
        scores["grounded"] = 0.0
    return _total(scores)


def score_trajectory(task: AgentTask, conv: list[dict]) -> dict:
    """Gold of a whole trajectory (the prompt's user turn included); `steps` holds each assistant step's."""
    state = _State(done=[False] * len(task.calls))
    judged, steps, late_call, answer = [], [], False, None
    for k, m in enumerate(conv):
        if m["role"] != "assistant":
            state.seen.append(m["content"])
            continue
        steps.append(score_step(task, conv[:k], m))
        for c in m.get("tool_calls") or []:
            late_call |= not state.remaining(task)
            judged.append(_judge_call(task, state, c))
        if not m.get("tool_calls"):
            answer = _judge_answer(task, state, m["content"])
        if TOOL_RESPONSE_OPEN in m["content"]:
            answer = {**(answer or {}), "grounded": 0.0}
    right = sum(j["tool_choice"] for j in judged)
    if task.calls:
        tool_choice = min(right, len(task.calls)) / max(len(task.calls), len(judged))
    else:
        tool_choice = 0.0 if judged else 1.0
    args = [j["arguments"] for j in judged if j["arguments"] is not None]
    wasted = sum(j["efficiency"] == 0.0 for j in judged)
    ends_with_answer = bool(conv) and conv[-1]["role"] == "assistant" and not conv[-1].get("tool_calls")
    scores = {"tool_choice": tool_choice, "arguments": sum(args) / len(args) if args else None,
              "answer": (answer or {}).get("answer", 0.0), "grounded": (answer or {}).get("grounded"),
              "efficiency": max(0.0, 1.0 - 0.5 * wasted), "stopping": float(ends_with_answer and not late_call)}
    return {**_total(scores), "steps": steps}


def compare(a: dict, b: dict) -> dict:
    """Per-dimension verdicts of score dicts a (chosen) vs b (rejected), where both are defined."""
    out = {}
    for k in AGENT_ATTRIBUTES:
        if a.get(k) is None or b.get(k) is None:
            continue
        d = a[k] - b[k]
        out[k] = "tie" if abs(d) < 1e-9 else "chosen" if d > 0 else "rejected"
    return out
