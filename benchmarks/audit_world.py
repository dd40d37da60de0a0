"""The audit's thresholds on the verifiable world, at full size and over seeds (tests assert smaller versions).

(a) `--labels-per-pair 3` with the default pool (clean:4, noisy:2, length:1, position:1): the largest gap between
    a labeller's Dawid-Skene accuracy and its realised accuracy, which labellers are flagged, and the accuracy
    against gold of Dawid-Skene-aggregated and majority-vote labels.
(b) `--noise 0.2` (20% of the labels flipped by a noisy labeller): precision of the top 20% of rows by the
    cross-fitted suspicion against the true flips, and AUROC; with the annotator prior and without annotators.

    python benchmarks/audit_world.py [--num-pairs 2000] [--seeds 0,1,2] [--out benchmarks/results/audit_world.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from preftune.audit.noise import add_mislabel_scores
from preftune.data.audit import audit_report
from preftune.world.generate import generate_world


def multi_labelled(n: int, seed: int) -> dict:
    w = generate_world(n, seed=seed, num_test_pairs=1, labels_per_pair=3)
    rep = audit_report(w.train, list(range(1, len(w.train) + 1)), ties="none")
    truth = w.summary["annotators"]
    gaps = {a["annotator"]: abs(a["dawid_skene_accuracy"] - truth[a["annotator"]]["accuracy"])
            for a in rep["annotators"]}
    ds_right = mv_right = 0
    for it in rep["items"]:
        want = "chosen" if w.train[it["lines"][0] - 1].extra["gold_chosen_is_better"] else "rejected"
        ds_right += max(("chosen", "rejected"), key=lambda v: it["ds_posterior"][v]) == want
        mv_right += it["majority"] == want
    return {"seed": seed, "max_ds_gap": max(gaps.values()), "worst": max(gaps, key=gaps.get),
            "flagged": {a["annotator"]: [f["flag"] for f in a["flags"]] for a in rep["annotators"] if a["flags"]},
            "ds_vs_gold": ds_right / len(rep["items"]), "majority_vs_gold": mv_right / len(rep["items"]),
            "fleiss_kappa": rep["agreement"]["fleiss_kappa"]}


def flipped(n: int, seed: int, annotators: bool) -> dict:
    w = generate_world(n, seed=seed, num_test_pairs=1, noise=0.2)
    train = w.train if annotators else copy.deepcopy(w.train)
    if not annotators:
        for r in train:
            r.annotator = None
    lines = list(range(1, len(train) + 1))
    t0 = time.perf_counter()
    rep = audit_report(train, lines, ties="none")
    add_mislabel_scores(rep, train, lines, folds=5)
    sus = np.array([it["rows"][0]["suspicion"] for it in rep["items"]])
    flip = np.array([not train[it["lines"][0] - 1].extra["gold_chosen_is_better"] for it in rep["items"]])
    top = np.argsort(-sus)[: int(0.2 * len(sus))]
    return {"seed": seed, "annotators": annotators, "flip_share": float(flip.mean()),
            "precision_top20": float(flip[top].mean()), "auroc": float(roc_auc_score(flip, sus)),
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-pairs", type=int, default=2000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="benchmarks/results/audit_world.json")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    res = {"num_pairs": args.num_pairs, "multi_labelled": [multi_labelled(args.num_pairs, s) for s in seeds],
           "flipped": [flipped(args.num_pairs, s, a) for s in seeds for a in (True, False)]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print("| seed | max DS-accuracy gap | flagged | DS vs gold | majority vs gold | Fleiss' kappa |")
    print("|---|---|---|---|---|---|")
    for r in res["multi_labelled"]:
        flags = "; ".join(f"{k}: {','.join(v)}" for k, v in r["flagged"].items())
        print(f"| {r['seed']} | {r['max_ds_gap']:.3f} ({r['worst']}) | {flags} | {r['ds_vs_gold']:.3f} | "
              f"{r['majority_vs_gold']:.3f} | {r['fleiss_kappa']:.3f} |")
    print("\n| seed | annotators | flipped share | precision top 20% | AUROC | seconds |")
    print("|---|---|---|---|---|---|")
    for r in res["flipped"]:
        print(f"| {r['seed']} | {'yes' if r['annotators'] else 'no'} | {r['flip_share']:.3f} | "
              f"{r['precision_top20']:.3f} | {r['auroc']:.3f} | {r['seconds']} |")


if __name__ == "__main__":
    main()
