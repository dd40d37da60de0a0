"""Agent evaluation on the tool-use world (`preftune eval policy MODEL --agent --prompts tasks_test.jsonl`).

A rollout: the policy answers the conversation so far; every `<tool_call>{"name", "arguments"}</tool_call>`
block in its text (the documented rendering of data/agent.py, also Qwen's and Hermes' format) is executed
by the world's tools and its result appended as a `tool` message; generation continues until a turn has no
call or `max_turns` turns were taken. The trajectory is scored by the world's gold (world/agent/gold.py).

Per task: success (the final answer holds the gold answer and is grounded), tool-selection accuracy
(gold tool_choice), argument accuracy (gold arguments; tasks with no call to a right tool are left out),
invalid-call rate (calls whose arguments are not a JSON object or that the tool refuses / all calls),
unnecessary-call rate (repeated or unneeded calls / all calls) and turns. The report gives each mean with
a bootstrap 95% interval, for the model, the baseline, and model - baseline (paired over tasks).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

import numpy as np

from preftune.data.agent import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from preftune.eval import metrics
from preftune.world.agent.gold import score_trajectory
from preftune.world.agent.tasks import AgentTask
from preftune.world.agent.tools import TOOLS, execute

_BLOCK = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)" + re.escape(TOOL_CALL_CLOSE), re.DOTALL)
AGENT_METRICS = ("success", "tool_selection", "argument_accuracy", "invalid_call_rate", "unnecessary_call_rate",
                 "turns")
Policy = Callable[[list[dict]], str]  # conversation so far -> the assistant's next text


def parse_tool_calls(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(text outside the blocks, [(tool name, arguments as JSON text)]) of one assistant turn. A block that
    is not `{"name": str, "arguments": ...}` JSON becomes a call named "" (invalid, scored as such)."""
    calls = []
    for body in _BLOCK.findall(text):
        try:
            obj = json.loads(body)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            args = obj.get("arguments", {})
            calls.append((obj["name"], args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)))
        else:
            calls.append(("", body.strip()))
    return _BLOCK.sub("", text).strip(), calls


def _run(name: str, arguments: str) -> str:
    try:
        args = json.loads(arguments)
    except json.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        return "error: arguments are not a JSON object"
    return execute(name, args)


def rollout(policy: Policy, task: AgentTask, max_turns: int = 4) -> list[dict]:
    """The conversation of one task: the user's question, then the policy's turns and the tools' results."""
    conv = [{"role": "user", "content": task.prompt}]
    for turn in range(max_turns):
        text = policy(conv)
        content, calls = parse_tool_calls(text)
        if not calls:
            conv.append({"role": "assistant", "content": text.strip()})
            break
        ids = [f"call_{turn}_{k}" for k in range(len(calls))]
        conv.append({"role": "assistant", "content": content, "tool_calls": [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, (name, args) in zip(ids, calls)]})
        conv += [{"role": "tool", "tool_call_id": cid, "content": _run(name, args)}
                 for cid, (name, args) in zip(ids, calls)]
    return conv


def task_metrics(task: AgentTask, conv: list[dict]) -> dict:
    gold = score_trajectory(task, conv)
    calls = [c for m in conv if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    results = [m["content"] for m in conv if m["role"] == "tool"]
    invalid = sum(r.startswith("error:") for r in results)
    wasted = round((1.0 - gold["efficiency"]) / 0.5)
    return {"success": float(gold["answer"] == 1.0 and gold["grounded"] == 1.0),
            "tool_selection": gold["tool_choice"], "argument_accuracy": gold["arguments"],
            "invalid_call_rate": invalid / len(calls) if calls else 0.0,
            "unnecessary_call_rate": min(wasted, len(calls)) / len(calls) if calls else 0.0,
            "turns": float(sum(m["role"] == "assistant" for m in conv)), "gold_total": gold["total"]}


def _summary(rows: list[dict], num_bootstrap: int, seed: int) -> dict:
    out = {}
    for k in AGENT_METRICS:
        vals = np.array([r[k] for r in rows if r[k] is not None], dtype=np.float64)
        out[k] = float(vals.mean()) if vals.size else None
        out[f"{k}_ci95"] = (list(metrics.bootstrap_ci(vals, num_resamples=num_bootstrap, seed=seed))
                            if vals.size else None)
    return out


def evaluate_agent(policy: Policy, baseline: Policy, tasks: Sequence[AgentTask], *, max_turns: int = 4,
                   num_bootstrap: int = 2000, seed: int = 0, progress: bool = False) -> dict:
    """Roll out both policies on every task; the report of the module docstring, with every trajectory."""
    from tqdm.auto import tqdm

    if not tasks:
        raise ValueError("evaluate_agent: no tasks")
    convs = {side: [rollout(pol, t, max_turns) for t in tqdm(tasks, desc=f"rollouts {side}", disable=not progress)]
             for side, pol in (("model", policy), ("baseline", baseline))}
    rows = {side: [task_metrics(t, c) for t, c in zip(tasks, convs[side])] for side in convs}
    diff = [{k: (a[k] - b[k]) if a[k] is not None and b[k] is not None else None for k in AGENT_METRICS}
            for a, b in zip(rows["model"], rows["baseline"])]
    return {"num_tasks": len(tasks), "max_turns": max_turns,
            "model": _summary(rows["model"], num_bootstrap, seed),
            "baseline": _summary(rows["baseline"], num_bootstrap, seed),
            "delta": _summary(diff, num_bootstrap, seed),
            "samples": [{"category": t.category, "prompt": t.prompt, "model": cm, "baseline": cb,
                         "metrics_model": rm, "metrics_baseline": rb}
                        for t, cm, cb, rm, rb in zip(tasks, convs["model"], convs["baseline"], rows["model"],
                                                     rows["baseline"])]}


def hf_policy(model, tokenizer, max_new_tokens: int = 96, max_prompt_length: int = 1024) -> Policy:
    """A Policy from a causal LM: the conversation rendered with the world's tools as training renders it
    (tokenize.tokenize_prompts), then greedy decoding up to the EOS."""
    import torch

    from preftune.tokenize import tokenize_prompts

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def policy(conv: list[dict]) -> str:
        (ids,), _ = tokenize_prompts([conv], tokenizer, max_prompt_length, tools=[TOOLS])
        x = torch.tensor([ids], device=device)
        with torch.no_grad():
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        return tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)

    return policy


def read_tasks(path: str) -> list[AgentTask]:
    """Tasks from a `tasks_test.jsonl` of `data world --agent` (rows with `task`); FILE:LINE on a bad row."""
    from preftune.data.io import iter_raw

    tasks = []
    for raw in iter_raw(path):
        task = raw.row.get("task") if isinstance(raw.row, dict) else None
        try:
            tasks.append(AgentTask.from_dict(task))
        except TypeError:
            raise ValueError(f"{raw.where}: task: missing or not a tool-use world task (write the file with "
                             "`preftune data world --agent`)") from None
    if not tasks:
        raise ValueError(f"{path}: no tasks")
    return tasks
