"""`preftune score RUN --data FILE -o OUT`: add reward-model scores to every response of a file.

Each row gets: pairs `chosen_reward`, `rejected_reward`
(+ `chosen_reward_std`/`rejected_reward_std` for ensembles, `chosen_head_rewards`/`rejected_head_rewards`
when multi-head); single responses (`completion` or `response`) `reward` (+ `reward_std`, `head_rewards`);
rated rows (`completions`) `completion_rewards` (+ `completion_reward_stds`).
"""

from __future__ import annotations

from pathlib import Path

from preftune.models.scoring import RewardScorer, load_scorer


def _responses(row: dict, where: str) -> tuple[str, list]:
    """(kind, responses) of a raw row: pair (chosen, rejected), single, or rated (completions)."""
    if "prompt" not in row:
        raise ValueError(f"{where}: prompt: is missing")
    if "chosen" in row or "rejected" in row:
        for k in ("chosen", "rejected"):
            if row.get(k) is None:
                raise ValueError(f"{where}: {k}: is missing")
        return "pair", [row["chosen"], row["rejected"]]
    for k in ("completion", "response"):
        if row.get(k) is not None:
            return "single", [row[k]]
    if isinstance(row.get("completions"), list):
        return "rated", list(row["completions"])
    raise ValueError(f"{where}: no response to score (expected chosen/rejected, completion, response or completions)")


def score_rows(scorer: RewardScorer, rows: list[dict], wheres: list[str],
               batch_size: int = 16) -> tuple[list[dict], int]:
    """Rows with their rewards added (see the module docstring); also returns #truncated responses."""
    kinds, prompts, responses, owner = [], [], [], []
    for i, (row, where) in enumerate(zip(rows, wheres)):
        kind, resp = _responses(row, where)
        kinds.append(kind)
        for r in resp:
            prompts.append(row["prompt"])
            responses.append(r)
            owner.append(i)
    out = scorer.score(prompts, responses, batch_size)
    multi = len(scorer.heads) > 1
    per_row: list[list[int]] = [[] for _ in rows]
    for j, i in enumerate(owner):
        per_row[i].append(j)
    result = []
    for row, kind, idx in zip(rows, kinds, per_row):
        new = dict(row)
        names = ["chosen", "rejected"] if kind == "pair" else [None]

        def put(prefix: str | None, j: int, new: dict = new) -> None:
            base = f"{prefix}_reward" if prefix else "reward"
            new[base] = float(out["reward"][j])
            if out["std"] is not None:
                new[base + "_std"] = float(out["std"][j])
            if multi:
                new[(f"{prefix}_" if prefix else "") + "head_rewards"] = {h: float(v[j])
                                                                          for h, v in out["heads"].items()}
        if kind == "rated":
            new["completion_rewards"] = [float(out["reward"][j]) for j in idx]
            if out["std"] is not None:
                new["completion_reward_stds"] = [float(out["std"][j]) for j in idx]
        else:
            for name, j in zip(names, idx):
                put(name, j)
        result.append(new)
    return result, out["num_truncated"]


def register(sub) -> None:
    p = sub.add_parser("score", help="add reward-model scores to each response of a file",
                       description="Score every response of FILE with a reward model run (or ensemble): pairs get "
                                   "chosen_reward / rejected_reward, single responses get reward; ensembles add "
                                   "*_std, multi-head models *head_rewards.")
    p.add_argument("run", help="reward-model run folder (RUN or RUN/final) or a model folder/alias")
    p.add_argument("--data", required=True, help="rows to score (jsonl/json/csv/parquet)")
    p.add_argument("-o", "--out", required=True, help="output file")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--force", action="store_true", help="overwrite OUT")
    p.set_defaults(func=run_score)


def _read_rows(path: str) -> tuple[list[dict], list[str]]:
    """Every row of FILE with its FILE:LINE, validated like every other reader (the data layer's record
    checks); ValueError listing the bad rows, before any model loads."""
    from preftune.data.io import iter_raw
    from preftune.data.records import parse_response_row

    rows, wheres, problems = [], [], []
    num_bad = 0
    for raw in iter_raw(path):
        found = [raw.error] if raw.error is not None else [str(p) for p in parse_response_row(raw.row)[1]]
        if found:
            num_bad += 1
            problems += [f"{raw.where}: {p}" for p in found]
        else:
            rows.append(raw.row)
            wheres.append(raw.where)
    if num_bad:
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(f"{path}: {num_bad} bad row(s); nothing was scored. Run `preftune data check {path}` "
                         "for every problem.\n" + "\n".join(problems[:20]) + more)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows, wheres


def run_score(args) -> int:
    from preftune.data.io import write_rows
    from preftune.data.paths import check_outputs, rows_output

    inputs = [("--data", args.data)] + ([("RUN", args.run)] if Path(args.run).exists() else [])
    check_outputs([rows_output("-o", args.out)], inputs, force=args.force)
    rows, wheres = _read_rows(args.data)  # every bad row fails before the model loads
    scorer = load_scorer(args.run)
    scored, num_truncated = score_rows(scorer, rows, wheres, args.batch_size)
    write_rows(scored, args.out, overwrite=args.force)
    note = f" ({num_truncated} responses truncated to max_length {scorer.info['max_length']})" if num_truncated else ""
    print(f"scored {len(rows)} rows -> {args.out}{note}")
    return 0
