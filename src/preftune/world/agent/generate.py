"""Preference pairs of the tool-use world (`preftune data world --agent -o DIR`).

Each task's good trajectory calls the needed tools one turn at a time (the results come from executing
them) and then answers. Two kinds of pair, both with the row's `tools`:
- step-level: the prompt is the good trajectory up to one of its assistant turns; chosen is the good next
  step, rejected a flawed one (wrong tool, invalid or wrong arguments, answering without the tool, a
  misused or invented result, a repeated or unnecessary call, not stopping when done);
- trajectory-level: the prompt is the user's question; chosen is the whole good trajectory, rejected a whole
  flawed one (its calls executed too, so a wrong argument leads to a wrong result and answer).
Every pair is scored by the gold scorer (world/agent/gold.py); `attributes` holds its verdict per dimension,
`margin` the difference of the totals, `extra` the level, the flaw, the task (enough to score a policy's own
trajectory later) and both totals. A flaw the gold does not rank below the good step is not written (counted
in the summary as `intent_mismatches`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from preftune.data.records import PairRecord
from preftune.world.agent import gold
from preftune.world.agent.tasks import CATEGORIES, AgentTask, sample_task
from preftune.world.agent.tools import COUNTRIES, DOCS, TOOLS, execute, fmt

SOURCE = "preftune-world-agent"
LEVELS = ("step", "trajectory")


def _call(cid: str, name: str, arguments: dict) -> dict:
    return {"id": cid, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def answer_text(task: AgentTask, value: str | None = None) -> str:
    value = task.answer if value is None else value
    return value if task.category == "no_tool" else f"The answer is {value}."


def run_calls(calls: list[tuple[str, dict]], first_id: int = 1) -> list[dict]:
    """Assistant turns making `calls` one at a time, each followed by its executed tool result."""
    out = []
    for k, (name, args) in enumerate(calls, start=first_id):
        cid = f"call_{k}"
        out += [{"role": "assistant", "content": "", "tool_calls": [_call(cid, name, args)]},
                {"role": "tool", "tool_call_id": cid, "content": execute(name, args)}]
    return out


def good_trajectory(task: AgentTask) -> list[dict]:
    """The good continuation of the user's question: every needed call, then the answer."""
    return run_calls([(c["name"], c["arguments"]) for c in task.calls]) + [
        {"role": "assistant", "content": answer_text(task)}]


def _wrong_number(task: AgentTask, rng: random.Random) -> str:
    x = float(task.answer)
    return fmt(x + max(1, round(abs(x) * rng.uniform(0.05, 0.3))))


def _other(values, not_this, rng: random.Random):
    return rng.choice([v for v in values if v != not_this])


def _wrong_args(task: AgentTask, call: dict, rng: random.Random) -> dict:
    """Valid arguments that do something else than `call`."""
    a = dict(call["arguments"])
    if call["name"] == "calculator":
        a["expression"] = a["expression"].replace("*", "+", 1) if "*" in a["expression"] else a["expression"] + " + 1"
    elif call["name"] == "convert_units":
        a["from_unit"], a["to_unit"] = a["to_unit"], a["from_unit"]
    elif call["name"] == "lookup":
        a["country"] = _other(sorted(COUNTRIES), a["country"], rng)
    else:
        gold_doc = gold.search(a["query"])
        a["query"] = DOCS[_other(sorted(DOCS), gold_doc, rng)][0]
    return a


def _invalid_args(call: dict) -> dict | None:
    """Arguments that match the schema but that the tool refuses (None where the tool refuses nothing)."""
    return {"calculator": {"expression": call["arguments"].get("expression", "1").replace("*", " x ") + " ="},
            "lookup": {**call["arguments"], "country": "Atlantis"}}.get(call["name"])


def _misused(task: AgentTask, seen: str, rng: random.Random) -> str | None:
    """An answer with a number the trajectory did see, but not the answer (None when there is none)."""
    if not task.numeric:
        return None
    nums = sorted({fmt(x) for x in gold.numbers(seen)} - {fmt(float(task.answer))})
    return rng.choice(nums) if nums else None


@dataclass
class _Pair:
    level: str
    flaw: str
    prompt: list
    chosen: list
    rejected: list


def _answer_step_flaws(task: AgentTask, prefix: list, rng: random.Random) -> dict:
    """Flawed answers / calls where the good next step is the answer."""
    seen = " ".join(m["content"] for m in prefix if m["role"] != "assistant")
    out = {}
    if task.calls:
        last = task.calls[-1]
        out["repeat_call"] = [{"role": "assistant", "content": "", "tool_calls": [
            _call(f"call_{len(task.calls) + 1}", last["name"], last["arguments"])]}]
        wrong = _wrong_number(task, rng) if task.numeric else _other(task.vocab, task.answer, rng)
        out["invented_result"] = [{"role": "assistant", "content": answer_text(task, wrong)}]
        misused = _misused(task, seen, rng)
        if misused is not None:
            out["misused_result"] = [{"role": "assistant", "content": answer_text(task, misused)}]
    else:
        out["unnecessary_call"] = [{"role": "assistant", "content": "", "tool_calls": [
            _call("call_1", "search_docs", {"query": prefix[0]["content"]})]}]
        out["wrong_answer"] = [{"role": "assistant", "content": answer_text(task, task.answer[::-1])}]
    return out


def _call_step_flaws(task: AgentTask, k: int, rng: random.Random) -> dict:
    """Flawed steps where the good next step is the k-th needed call."""
    call, cid = task.calls[k], f"call_{k + 1}"
    other_tool = _other([t["function"]["name"] for t in TOOLS], call["name"], rng)
    other_args = next(c["arguments"] for c in _examples() if c["name"] == other_tool)
    out = {"wrong_tool": [{"role": "assistant", "content": "", "tool_calls": [_call(cid, other_tool, other_args)]}],
           "wrong_arguments": [{"role": "assistant", "content": "", "tool_calls": [
               _call(cid, call["name"], _wrong_args(task, call, rng))]}]}
    bad = _invalid_args(call)
    if bad is not None:
        out["invalid_arguments"] = [{"role": "assistant", "content": "", "tool_calls": [_call(cid, call["name"], bad)]}]
    wrong = _wrong_number(task, rng) if task.numeric else _other(task.vocab, task.answer, rng)
    out["skipped_tool"] = [{"role": "assistant", "content": answer_text(task, wrong)}]
    out["fabricated_result"] = [{"role": "assistant", "content": f"<tool_response>{wrong}</tool_response>\n"
                                                                 + answer_text(task, wrong)}]
    return out


def _examples() -> list[dict]:
    return [{"name": "calculator", "arguments": {"expression": "2 + 2"}},
            {"name": "convert_units", "arguments": {"value": 1, "from_unit": "km", "to_unit": "m"}},
            {"name": "lookup", "arguments": {"country": "Arvenia", "field": "capital"}},
            {"name": "search_docs", "arguments": {"query": "Harrow Tower"}}]


def _trajectory_flaws(task: AgentTask, rng: random.Random) -> dict:
    calls = [(c["name"], c["arguments"]) for c in task.calls]
    user = [{"role": "user", "content": task.prompt}]
    out = {}
    if not calls:
        out["unnecessary_call"] = run_calls([("search_docs", {"query": task.prompt})]) + [
            {"role": "assistant", "content": answer_text(task)}]
        return out
    wrong = _wrong_number(task, rng) if task.numeric else _other(task.vocab, task.answer, rng)
    out["skipped_tool"] = [{"role": "assistant", "content": answer_text(task, wrong)}]
    out["repeat_call"] = run_calls(calls + [calls[-1]]) + [{"role": "assistant", "content": answer_text(task)}]
    bad = [(n, a) for n, a in calls]
    bad[-1] = (bad[-1][0], _wrong_args(task, task.calls[-1], rng))
    traj = run_calls(bad)
    out["wrong_arguments"] = traj + [{"role": "assistant", "content": answer_text(
        task, traj[-1]["content"] if task.category != "search" else wrong)}]
    good = run_calls(calls)
    misused = _misused(task, " ".join(m["content"] for m in user + good if m["role"] != "assistant"), rng)
    if misused is not None:
        out["misused_result"] = good + [{"role": "assistant", "content": answer_text(task, misused)}]
    return out


def task_pairs(task: AgentTask, rng: random.Random) -> list[_Pair]:
    """One step-level pair (a random step, a random flaw there) and one trajectory-level pair."""
    user = [{"role": "user", "content": task.prompt}]
    good = good_trajectory(task)
    steps = [i for i, m in enumerate(good) if m["role"] == "assistant"]
    k = rng.randrange(len(steps))
    prefix = user + good[:steps[k]]
    flaws = _call_step_flaws(task, k, rng) if k < len(task.calls) else _answer_step_flaws(task, prefix, rng)
    name = rng.choice(sorted(flaws))
    pairs = [_Pair("step", name, prefix, [good[steps[k]]], flaws[name])]
    traj = _trajectory_flaws(task, rng)
    name = rng.choice(sorted(traj))
    pairs.append(_Pair("trajectory", name, user, good, traj[name]))
    return pairs


def score_pair(task: AgentTask, pair: _Pair) -> tuple[dict, dict]:
    if pair.level == "step":
        return (gold.score_step(task, pair.prompt, pair.chosen[0]),
                gold.score_step(task, pair.prompt, pair.rejected[0]))
    return (gold.score_trajectory(task, pair.prompt + pair.chosen),
            gold.score_trajectory(task, pair.prompt + pair.rejected))


def generate_agent_world(num_tasks: int = 500, num_test_tasks: int = 100, seed: int = 0) -> dict:
    """{"train": [PairRecord], "test": [PairRecord], "tasks_test": [task rows], "summary": {...}}: two pairs per
    task (one step-level, one trajectory-level). Deterministic for a seed."""
    if num_tasks < 1 or num_test_tasks < 0:
        raise ValueError(f"num_tasks must be >= 1 and num_test_tasks >= 0, got {num_tasks} and {num_test_tasks}")
    out, stats = {}, {"intent_mismatches": 0}
    for split, n, rng in (("train", num_tasks, random.Random(seed)),
                          ("test", num_test_tasks, random.Random(seed * 1_000_003 + 7))):
        rows, tasks = [], []
        for i in range(n):
            task = sample_task(rng, split, CATEGORIES[i % len(CATEGORIES)])
            tasks.append(task)
            for pair in task_pairs(task, rng):
                sc, sr = score_pair(task, pair)
                if sc["total"] <= sr["total"]:
                    stats["intent_mismatches"] += 1
                    continue
                rows.append(PairRecord(
                    id=f"world-agent-{split}-{seed}-{len(rows)}", prompt=pair.prompt, chosen=pair.chosen,
                    rejected=pair.rejected, tools=TOOLS, annotator="gold", category=task.category, source=SOURCE,
                    attributes=gold.compare(sc, sr), margin=round(sc["total"] - sr["total"], 6),
                    extra={"level": pair.level, "flaw": pair.flaw, "task": task.to_dict(),
                           "gold_chosen": sc["total"], "gold_rejected": sr["total"]}))
        out[split] = rows
        out[f"tasks_{split}"] = tasks
    summary = {"seed": seed, "num_train": len(out["train"]), "num_test": len(out["test"]), **stats,
               "levels": _counts(r.extra["level"] for r in out["train"]),
               "flaws": _counts(f"{r.extra['level']}:{r.extra['flaw']}" for r in out["train"]),
               "categories": _counts(r.category for r in out["train"]),
               "mean_margin": round(sum(r.margin for r in out["train"]) / max(1, len(out["train"])), 4)}
    return {"train": out["train"], "test": out["test"], "summary": summary,
            "tasks_test": [{"id": f"world-agent-test-task-{seed}-{i}",
                            "prompt": [{"role": "user", "content": t.prompt}],
                            "tools": TOOLS, "category": t.category, "task": t.to_dict()}
                           for i, t in enumerate(out["tasks_test"])]}


def _counts(values) -> dict:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def run_agent_world(args) -> int:
    """`preftune data world --agent -o DIR`: train.jsonl, test.jsonl, tasks_test.jsonl, summary.json."""
    from pathlib import Path

    from preftune.data.io import write_rows
    from preftune.data.paths import Output, check_writable

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not args.force:
        raise ValueError(f"{out} is not empty; pass --force to write into it")
    check_writable(Output("-o", out, folder=True))
    world = generate_agent_world(args.num_tasks, args.num_test_tasks, args.seed)
    out.mkdir(parents=True, exist_ok=True)
    write_rows(world["train"], out / "train.jsonl", overwrite=True)
    write_rows(world["test"], out / "test.jsonl", overwrite=True)
    write_rows(world["tasks_test"], out / "tasks_test.jsonl", overwrite=True)
    (out / "summary.json").write_text(json.dumps(world["summary"], indent=2) + "\n", encoding="utf-8")
    s = world["summary"]
    print(f"wrote {out}: train.jsonl ({s['num_train']} pairs: {s['levels']}), test.jsonl ({s['num_test']} pairs), "
          f"tasks_test.jsonl ({len(world['tasks_test'])} tasks), summary.json")
    print(f"categories: {s['categories']}; flaws not ranked below the good step by gold (not written): "
          f"{s['intent_mismatches']}")
    return 0
