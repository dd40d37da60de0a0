"""`preftune eval rm RUN --data FILE [--json OUT]`: how well a reward model orders held-out pairs.

Output keys (stable; `preftune report` reads them). Pairs with `close: true` are ties: they are
counted apart and never scored as wins. Lengths are characters of the rendered response.
  num_pairs                   pairs evaluated (ties included)
  num_ties                    pairs marked close: true
  accuracy                    share of non-tie pairs with r_chosen > r_rejected
  accuracy_including_close    the same over every pair, close ones taken at their chosen/rejected label
  accuracy_by                 {"category"|"source"|"annotator": {value: {"accuracy", "n"}}} (non-tie pairs)
  ece, reliability            calibration of P(chosen wins) = sigmoid(r_chosen - r_rejected): both
                              orientations (p, label 1) and (1 - p, label 0) of each non-tie pair,
                              10 equal bins; reliability rows {lo, hi, n, mean_prob, frac_positive}
  accuracy_chosen_shorter / num_chosen_shorter   non-tie pairs whose chosen is shorter
  accuracy_chosen_longer / num_chosen_longer     non-tie pairs whose chosen is longer
  length_baseline_accuracy    the "longer wins" rule on the non-tie pairs (equal lengths count 1/2)
  reward_length_corr          {"pearson", "spearman", "n"} of reward vs length over every response
  head_accuracy               multi-head models: {head: {"accuracy", "n"}} against rows' `attributes`
                              verdicts (ties and missing verdicts excluded)
  accuracy_most_certain_decile / accuracy_least_certain_decile   ensembles: accuracy on the 10% of
                              non-tie pairs with the lowest / highest std over members of r_c - r_r
  num_truncated               responses cut to the model's max_length while scoring
  rewards                     {"chosen", "rejected", "chosen_lengths", "rejected_lengths"} per pair
                              (+ "margin_std" for ensembles), for plots
Accuracies over no pairs are null.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

GROUPS = ("category", "source", "annotator")
VERDICT_SIGN = {"chosen": 1.0, "rejected": -1.0}


def _acc(mask, correct) -> float | None:
    n = int(mask.sum())
    return float(correct[mask].mean()) if n else None


def evaluate_rm(scorer: Any, records: list, batch_size: int = 32) -> dict:
    """Score each pair's chosen and rejected with `scorer` (a RewardScorer or anything with the same
    `score(prompts, responses, batch_size) -> {"reward", "std", "heads", "members"}`) and compute the
    keys listed in the module docstring."""
    import numpy as np

    from preftune.data.records import render_text
    from preftune.eval.metrics import expected_calibration_error, length_correlation

    if not records:
        raise ValueError("evaluate_rm needs at least one pair")
    N = len(records)
    prompts = [r.prompt for r in records] * 2
    responses = [r.chosen for r in records] + [r.rejected for r in records]
    out = scorer.score(prompts, responses, batch_size=batch_size)
    reward = np.asarray(out["reward"], dtype=np.float64)
    rc, rr = reward[:N], reward[N:]
    lengths = np.array([len(render_text(x)) for x in responses], dtype=np.float64)
    lc, lr = lengths[:N], lengths[N:]
    tie = np.array([bool(r.close) for r in records])
    decided = ~tie
    correct = rc > rr
    res: dict[str, Any] = {"num_pairs": N, "num_ties": int(tie.sum()), "accuracy": _acc(decided, correct),
                           "accuracy_including_close": float(correct.mean())}
    res["accuracy_by"] = {}
    for g in GROUPS:
        values = [getattr(r, g) for r in records]
        table = {}
        for v in sorted({v for v in values if v is not None}, key=str):
            m = decided & np.array([x == v for x in values])
            if m.any():
                table[str(v)] = {"accuracy": _acc(m, correct), "n": int(m.sum())}
        res["accuracy_by"][g] = table
    if decided.any():
        p = 1.0 / (1.0 + np.exp(-(rc - rr)[decided]))
        ece, bins = expected_calibration_error(np.concatenate([p, 1 - p]),
                                               np.concatenate([np.ones_like(p), np.zeros_like(p)]), 10)
    else:
        ece, bins = None, []
    res["ece"], res["reliability"] = ece, bins
    shorter, longer = decided & (lc < lr), decided & (lc > lr)
    res.update({"accuracy_chosen_shorter": _acc(shorter, correct), "num_chosen_shorter": int(shorter.sum()),
                "accuracy_chosen_longer": _acc(longer, correct), "num_chosen_longer": int(longer.sum())})
    base = np.where(lc > lr, 1.0, np.where(lc < lr, 0.0, 0.5))
    res["length_baseline_accuracy"] = float(base[decided].mean()) if decided.any() else None
    res["reward_length_corr"] = length_correlation(reward, lengths)
    heads = out.get("heads") or {}
    if len(heads) > 1:
        res["head_accuracy"] = {}
        for h, values in heads.items():
            if h == "overall":
                continue
            v = np.asarray(values, dtype=np.float64)
            sign = np.array([VERDICT_SIGN.get((r.attributes or {}).get(h), 0.0) for r in records])
            m = sign != 0
            res["head_accuracy"][h] = {"accuracy": _acc(m, (v[:N] - v[N:]) * sign > 0), "n": int(m.sum())}
    res["num_truncated"] = int(out.get("num_truncated", 0))
    rewards = {"chosen": rc.tolist(), "rejected": rr.tolist(), "chosen_lengths": lc.tolist(),
               "rejected_lengths": lr.tolist()}
    members = out.get("members")
    if out.get("std") is not None and members is not None and np.asarray(members).shape[0] > 1:
        mm = np.asarray(members, dtype=np.float64)
        margin_std = (mm[:, :N] - mm[:, N:]).std(0)
        rewards["margin_std"] = margin_std.tolist()
        idx = np.flatnonzero(decided)
        order = idx[np.argsort(margin_std[idx], kind="mergesort")]
        k = max(1, round(0.1 * order.size)) if order.size else 0
        res["accuracy_most_certain_decile"] = float(correct[order[:k]].mean()) if k else None
        res["accuracy_least_certain_decile"] = float(correct[order[-k:]].mean()) if k else None
    res["rewards"] = rewards
    return res


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def format_table(res: dict) -> str:
    """A short human summary of `evaluate_rm`'s output."""
    corr = res["reward_length_corr"]
    lines = [f"pairs: {res['num_pairs']} ({res['num_ties']} ties, reported apart)",
             f"accuracy:                 {_fmt(res['accuracy'])}",
             f"length baseline (longer): {_fmt(res['length_baseline_accuracy'])}",
             f"chosen shorter:           {_fmt(res['accuracy_chosen_shorter'])}  (n={res['num_chosen_shorter']})",
             f"chosen longer:            {_fmt(res['accuracy_chosen_longer'])}  (n={res['num_chosen_longer']})",
             f"ECE:                      {_fmt(res['ece'])}",
             f"reward~length spearman:   {_fmt(corr['spearman'])}"]
    for h, v in (res.get("head_accuracy") or {}).items():
        lines.append(f"head {h:<21} {_fmt(v['accuracy'])}  (n={v['n']})")
    if "accuracy_most_certain_decile" in res:
        lines.append(f"most / least certain 10%: {_fmt(res['accuracy_most_certain_decile'])} / "
                     f"{_fmt(res['accuracy_least_certain_decile'])}")
    for g, table in res["accuracy_by"].items():
        if 1 < len(table) <= 12:
            lines.append(f"by {g}: " + ", ".join(f"{k} {_fmt(v['accuracy'])} ({v['n']})" for k, v in table.items()))
    if res.get("num_truncated"):
        lines.append(f"responses truncated while scoring: {res['num_truncated']}")
    return "\n".join(lines)


def register(sub) -> None:
    p = sub.add_parser("rm", help="reward-model accuracy, calibration and length bias on held-out pairs",
                       description="Score held-out pairs with a reward model run and report accuracy (ties apart), "
                                   "accuracy per category/source/annotator, calibration (ECE), accuracy when the "
                                   "chosen answer is shorter/longer vs the 'longer wins' baseline, reward-length "
                                   "correlation, per-head and ensemble-uncertainty accuracies.")
    p.add_argument("run", help="reward-model run folder (RUN or RUN/final) or a model folder/alias")
    p.add_argument("--data", required=True, help="held-out pairs (or rated rows)")
    p.add_argument("--json", default=None, help="write the report here (default for a run folder: RUN/eval/rm.json)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    p.set_defaults(func=run_eval_rm)


def run_eval_rm(args: argparse.Namespace) -> int:
    import json

    from preftune.data.pairs import load_pairs
    from preftune.models.scoring import load_scorer

    out, force = args.json, args.force
    if out is None and (Path(args.run) / "final").is_dir():
        # the run's own output, rewritten on each evaluation (like metrics.jsonl)
        out, force = str(Path(args.run) / "eval" / "rm.json"), True
    if out is not None:  # before any work: not the input, exists only with --force, writable
        from preftune.data.paths import check_outputs

        check_outputs([("--json", out)], [("--data", args.data)], force=force)
    records, _ = load_pairs(args.data)
    scorer = load_scorer(args.run)
    res = evaluate_rm(scorer, records, args.batch_size)
    print(format_table(res))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {out}")
    return 0
