"""The admin's numbers, per rater: progress, agreement with the other raters (Cohen's kappa, scikit-learn),
honeypot accuracy with its Wilson interval (statsmodels), median seconds per label, position bias (share of
decided labels that picked the response shown first) and length bias (share that picked the longer one).

Agreement of a rater with "the others" pools, over every item they share, the pairs (this rater's verdict,
another rater's verdict) and computes one Cohen's kappa on those pairs (verdicts: response 1, response 2,
tie); `pairwise` holds kappa for each pair of raters. Kappa is None where it is undefined (one verdict
everywhere on both sides).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from itertools import combinations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from preftune.data.records import render_text
from preftune.label.export import _preferred
from preftune.label.store import Assignment, Label, Pair, Principal

VERDICTS = ("1", "2", "tie")
# Flags: a rater is flagged when a rule's evidence is at least its minimum count.
FLAG_HONEYPOT_UPPER = 0.5   # the Wilson interval's upper end below this: worse than a coin on known answers
FLAG_KAPPA = 0.2            # agreement with the others below "fair" (Landis & Koch), on >= FLAG_MIN_SHARED pairs
FLAG_MIN_SHARED = 10
FLAG_POSITION = (0.2, 0.8)  # share picking the first-shown response outside this, on >= FLAG_MIN_DECIDED labels
FLAG_MIN_DECIDED = 10


def _kappa(a: list[str], b: list[str]) -> float | None:
    import warnings

    from sklearn.metrics import cohen_kappa_score

    if not a:
        return None
    with warnings.catch_warnings():  # a constant pair of verdict lists gives 0/0: reported as None
        warnings.simplefilter("ignore", RuntimeWarning)
        k = float(cohen_kappa_score(a, b, labels=list(VERDICTS)))
    return round(k, 4) if math.isfinite(k) else None


def wilson(correct: int, n: int, alpha: float = 0.05) -> list[float] | None:
    from statsmodels.stats.proportion import proportion_confint

    if n == 0:
        return None
    lo, hi = proportion_confint(correct, n, alpha=alpha, method="wilson")
    return [round(float(lo), 4), round(float(hi), 4)]


def _share(hits: int, n: int) -> float | None:
    return round(hits / n, 4) if n else None


def _rater_row(name: str, rows: list[dict], num_open: int, kappa_pairs: tuple[list, list]) -> dict:
    gold = [r for r in rows if r["gold"] is not None]
    correct = sum(r["verdict"] == r["gold"] for r in gold)
    decided = [r for r in rows if r["verdict"] != "tie"]
    sized = [r for r in decided if r["len_1"] != r["len_2"]]
    longer = sum((r["verdict"] == "1") == (r["len_1"] > r["len_2"]) for r in sized)
    first = sum((r["verdict"] == "1") == r["a_is_1"] for r in decided)
    out = {"rater": name, "num_labels": len(rows), "num_open": num_open,
           "num_regular": len(rows) - len(gold), "num_honeypots": len(gold),
           "honeypot_accuracy": _share(correct, len(gold)), "honeypot_interval": wilson(correct, len(gold)),
           "kappa_with_others": _kappa(*kappa_pairs), "num_shared": len(kappa_pairs[0]),
           "median_seconds": round(statistics.median(r["seconds"] for r in rows), 3) if rows else None,
           "tie_rate": _share(len(rows) - len(decided), len(rows)),
           "first_shown_share": _share(first, len(decided)), "num_decided": len(decided),
           "longer_share": _share(longer, len(sized))}
    out["flags"] = _flags(out)
    return out


def _flags(r: dict) -> list[str]:
    flags = []
    if r["honeypot_interval"] and r["honeypot_interval"][1] < FLAG_HONEYPOT_UPPER:
        flags.append(f"honeypot accuracy {r['honeypot_accuracy']:.2f}, interval below {FLAG_HONEYPOT_UPPER}")
    kappa = r["kappa_with_others"]
    if kappa is not None and r["num_shared"] >= FLAG_MIN_SHARED and kappa < FLAG_KAPPA:
        flags.append(f"kappa with others {r['kappa_with_others']:.2f} < {FLAG_KAPPA}")
    share = r["first_shown_share"]
    if share is not None and r["num_decided"] >= FLAG_MIN_DECIDED and not FLAG_POSITION[0] <= share <= FLAG_POSITION[1]:
        flags.append(f"picks the first-shown response {share:.0%} of the time")
    return flags


def _label_facts(s: Session) -> list[dict]:
    q = (select(Label, Pair, Principal.name).join(Pair, Pair.id == Label.pair_id)
         .join(Principal, Principal.id == Label.rater_id).order_by(Label.id))
    out = []
    for label, pair, name in s.execute(q):
        pref = _preferred(label.choice, label.a_is_1)
        out.append({"rater": name, "pair": pair.id, "gold": pair.gold, "verdict": "tie" if pref is None else str(pref),
                    "a_is_1": label.a_is_1, "seconds": label.seconds,
                    "len_1": len(render_text(pair.response_1)), "len_2": len(render_text(pair.response_2))})
    return out


def project_stats(s: Session, settings: dict) -> dict:
    """Totals and one row per rater (every rater, labelled or not), as `GET /api/stats` returns them."""
    facts = _label_facts(s)
    raters = s.scalars(select(Principal.name).where(Principal.role == "rater").order_by(Principal.id)).all()
    open_by = dict(s.execute(select(Principal.name, func.count(Assignment.id))
                             .join(Assignment, Assignment.rater_id == Principal.id)
                             .where(Assignment.done.is_(False)).group_by(Principal.name)).all())
    by_pair: dict[int, dict[str, str]] = defaultdict(dict)
    for f in facts:
        if f["gold"] is None:
            by_pair[f["pair"]][f["rater"]] = f["verdict"]
    pooled: dict[str, tuple[list, list]] = {r: ([], []) for r in raters}
    pairwise: dict[tuple[str, str], tuple[list, list]] = defaultdict(lambda: ([], []))
    for votes in by_pair.values():
        for a, b in combinations(sorted(votes), 2):
            for x, y in ((a, b), (b, a)):
                pooled[x][0].append(votes[x])
                pooled[x][1].append(votes[y])
            pairwise[(a, b)][0].append(votes[a])
            pairwise[(a, b)][1].append(votes[b])
    rows = [_rater_row(r, [f for f in facts if f["rater"] == r], open_by.get(r, 0), pooled[r]) for r in raters]
    regular = s.scalar(select(func.count(Pair.id)).where(Pair.gold.is_(None))) or 0
    per_pair = settings["labels_per_pair"]
    return {"num_pairs": regular,
            "num_honeypots": (s.scalar(select(func.count(Pair.id))) or 0) - regular,
            "labels_per_pair": per_pair, "num_labels": len(facts), "num_open": sum(open_by.values()),
            "num_complete": sum(len(v) >= per_pair for v in by_pair.values()),
            "raters": rows,
            "pairwise": [{"raters": [a, b], "kappa": _kappa(*v), "num_shared": len(v[0])}
                         for (a, b), v in sorted(pairwise.items())]}
