"""Labeller agreement and calibration on multi-labelled comparisons (pure functions, no torch).

An *item* is one comparison (the same prompt and the same two responses, in either order); each row
labelling it is a `Label` whose `value` is a category code: `A` (the item's first response, in the
item's own fixed order, wins), `B` (the second wins) or `TIE`. Every statistic below works on those
codes, so it does not matter which response a row calls `chosen`.

- `count_table`, `raw_agreement`, `fleiss_kappa` (statsmodels), `krippendorff_alpha` (`krippendorff`),
  `pairwise_cohen` (scikit-learn): agreement between labellers.
- `dawid_skene` (crowd-kit's EM): each labeller's confusion matrix and accuracy, each item's posterior.
- `annotator_stats`: per labeller, agreement with the leave-self-out majority, tie rate, length bias
  (against the median labeller's "longer wins" share, see `longer_reference`) and position bias
  (against 0.5), honeypot accuracy with a Wilson interval, and flags, each flag with
  the statistic and threshold that raised it.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

A, B, TIE = 0, 1, 2
CATEGORIES = ("a", "b", "tie")
NUM_CATEGORIES = 3


@dataclass(frozen=True)
class Label:
    """One row's label of one item."""
    row: int                            # position of the row in the input
    item: int                           # index of the item it labels
    annotator: str | None
    value: int                          # A, B or TIE
    longer_wins: bool | None = None     # the longer response won (None: a tie label, or equal lengths)
    first_shown_wins: bool | None = None  # the response shown first won (None: a tie label, or order unknown)
    gold: int | None = None             # the item's known answer (A, B or TIE), for honeypots


@dataclass(frozen=True)
class Thresholds:
    """When a labeller is flagged. Bias flags need both the size (`*_excess`) and the evidence
    (a two-sided binomial test below `p_value`), so a small sample does not flag anyone by chance."""
    noisy_accuracy: float = 0.75     # Dawid-Skene accuracy (else honeypot, else majority agreement) below this
    length_excess: float = 0.15      # |longer-wins share - the median labeller's share| at least this
    position_excess: float = 0.15    # |first-shown-wins share - 0.5| at least this
    p_value: float = 0.01
    min_labels: int = 10             # fewer labels than this: no flag at all (too few to judge)


# ---------------------------------------------------------------- agreement

def item_values(labels: list[Label], num_items: int) -> list[list[int]]:
    """The label codes of each item, in row order."""
    out: list[list[int]] = [[] for _ in range(num_items)]
    for lab in labels:
        out[lab.item].append(lab.value)
    return out


def count_table(values_per_item: list[list[int]], num_categories: int = NUM_CATEGORIES) -> np.ndarray:
    """(items, categories) counts: how many labels of each item fall in each category."""
    table = np.zeros((len(values_per_item), num_categories), dtype=np.int64)
    for i, vals in enumerate(values_per_item):
        for v in vals:
            table[i, v] += 1
    return table


def raw_agreement(table: np.ndarray) -> float | None:
    """Observed agreement: over items with at least 2 labels, the share of agreeing label pairs
    (Fleiss' P_i = sum_k n_ik (n_ik - 1) / (n_i (n_i - 1))), averaged. Written here because it is one
    line and no library exposes it for unequal label counts. None when no item has 2 labels."""
    n = table.sum(1)
    keep = n >= 2
    if not keep.any():
        return None
    t, n = table[keep].astype(float), n[keep].astype(float)
    return float(((t * (t - 1)).sum(1) / (n * (n - 1))).mean())


def fleiss_kappa(table: np.ndarray) -> dict:
    """Fleiss' kappa (statsmodels) on the items with the most common number of labels (>= 2): the
    statistic assumes every item has the same number of raters, so items with another count are left
    out and counted (`num_items_left_out`). Krippendorff's alpha uses them all."""
    from statsmodels.stats.inter_rater import fleiss_kappa as _fleiss

    n = table.sum(1)
    counts = Counter(int(x) for x in n if x >= 2)
    if not counts:
        return {"value": None, "num_items": 0, "num_raters": None, "num_items_left_out": len(n)}
    num_raters = max(counts, key=lambda k: (counts[k], k))
    rows = table[n == num_raters]
    value = float(_fleiss(rows, method="fleiss")) if rows.sum(0).max() < rows.sum() else None
    return {"value": _finite(value), "num_items": len(rows), "num_raters": num_raters,
            "num_items_left_out": int(len(n) - len(rows))}


def krippendorff_alpha(table: np.ndarray) -> float | None:
    """Krippendorff's alpha, nominal, from the (items, categories) counts (the `krippendorff` package;
    items with fewer than 2 labels carry no pairable values and drop out of it). None when there is
    nothing to compare or every label is the same category (alpha is 0/0 then)."""
    import krippendorff

    t = table[table.sum(1) >= 2]
    if len(t) == 0 or (t.sum(0) > 0).sum() < 2:
        return None
    return _finite(float(krippendorff.alpha(value_counts=t, level_of_measurement="nominal")))


def _finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _by_annotator(labels: list[Label]) -> dict[str, dict[int, int]]:
    """annotator -> item -> the annotator's first label of the item."""
    out: dict[str, dict[int, int]] = {}
    for lab in labels:
        if lab.annotator is not None:
            out.setdefault(lab.annotator, {}).setdefault(lab.item, lab.value)
    return out


def pairwise_cohen(labels: list[Label], min_shared: int = 2) -> list[dict]:
    """Cohen's kappa (scikit-learn) of every annotator pair with at least `min_shared` shared items:
    {a, b, num_shared, raw_agreement, kappa}; kappa is None when it is 0/0 (both labellers gave one
    and the same category throughout)."""
    from sklearn.metrics import cohen_kappa_score

    per = _by_annotator(labels)
    out = []
    for a, b in combinations(sorted(per), 2):
        shared = sorted(set(per[a]) & set(per[b]))
        if len(shared) < min_shared:
            continue
        ya, yb = [per[a][i] for i in shared], [per[b][i] for i in shared]
        raw = float(np.mean(np.array(ya) == np.array(yb)))
        kappa = None
        if len(set(ya) | set(yb)) > 1:
            kappa = _finite(float(cohen_kappa_score(ya, yb, labels=list(range(NUM_CATEGORIES)))))
        out.append({"a": a, "b": b, "num_shared": len(shared), "raw_agreement": raw, "kappa": kappa})
    return out


# ---------------------------------------------------------------- Dawid-Skene

@dataclass
class DawidSkene:
    """crowd-kit's Dawid-Skene fit. `posterior[item]` = P(true category) (items with a label);
    `confusion[annotator][true][given]` = P(annotator gives `given` | true category) (rows of categories
    never seen are uniform); `accuracy[annotator]` = the model's expected share of the annotator's labels
    that equal the true category (mean over their labels of the posterior of the category they gave)."""
    posterior: dict[int, list[float]]
    confusion: dict[str, list[list[float]]]
    accuracy: dict[str, float]
    priors: list[float]
    num_iterations: int = 0


def dawid_skene(labels: list[Label], n_iter: int = 100, tol: float = 1e-6) -> DawidSkene:
    """Fit Dawid-Skene (EM, Dawid & Skene 1979) with crowd-kit on the labels that name an annotator."""
    import pandas as pd
    from crowdkit.aggregation import DawidSkene as _DS

    labs = [lab for lab in labels if lab.annotator is not None]
    if not labs:
        return DawidSkene({}, {}, {}, [1.0 / NUM_CATEGORIES] * NUM_CATEGORIES)
    df = pd.DataFrame({"task": [lab.item for lab in labs], "worker": [lab.annotator for lab in labs],
                       "label": [lab.value for lab in labs]})
    with warnings.catch_warnings():  # crowd-kit 1.4 uses pandas keywords pandas 3 deprecates
        warnings.simplefilter("ignore", category=Warning)
        ds = _DS(n_iter=n_iter, tol=tol).fit(df)
    cats = list(range(NUM_CATEGORIES))
    probas = ds.probas_.reindex(columns=cats, fill_value=0.0)
    posterior = {int(t): [float(x) for x in row] for t, row in zip(probas.index, probas.to_numpy())}
    errors = ds.errors_  # index (worker, observed label), columns true label: P(observed | true)
    confusion: dict[str, list[list[float]]] = {}
    for w in sorted({lab.annotator for lab in labs}):
        e = errors.loc[w].reindex(index=cats, columns=cats).fillna(0.0).to_numpy()  # (observed, true)
        m = e.T  # (true, given)
        sums = m.sum(1, keepdims=True)
        m = np.where(sums > 0, m / np.where(sums > 0, sums, 1), 1.0 / NUM_CATEGORIES)
        confusion[w] = [[float(x) for x in r] for r in m]
    acc: dict[str, list[float]] = {}
    for lab in labs:
        acc.setdefault(lab.annotator, []).append(posterior[lab.item][lab.value])  # type: ignore[arg-type]
    priors = ds.priors_.reindex(cats, fill_value=0.0).to_numpy()
    return DawidSkene(posterior, confusion, {w: float(np.mean(v)) for w, v in sorted(acc.items())},
                      [float(x) for x in priors], len(getattr(ds, "loss_history_", [])))


# ---------------------------------------------------------------- per annotator

def majority(values: list[int]) -> int | None:
    """The most common code, or None when the top count is shared (no majority)."""
    if not values:
        return None
    top = Counter(values).most_common()
    return top[0][0] if len(top) == 1 or top[0][1] > top[1][1] else None


def wilson_interval(num_correct: int, num: int) -> list[float]:
    """Wilson score 95% interval of a proportion (statsmodels)."""
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(num_correct, num, alpha=0.05, method="wilson")
    return [float(lo), float(hi)]


def _binom_p(k: int, n: int, p: float) -> float:
    from scipy.stats import binomtest

    return float(binomtest(k, n, min(max(p, 1e-12), 1 - 1e-12)).pvalue)


def longer_reference(labels: list[Label], min_labels: int = 1) -> dict:
    """The shares "longer wins" is judged against: `overall` (all labels where it is defined) and
    `median_labeller` (the median of each labeller's own share, labellers with >= `min_labels` such
    labels). A labeller's `length_bias` is measured against the median labeller: the overall share is
    pulled towards the biased labellers themselves (a third of the labels from an always-longer labeller
    moves it by a sixth and would flag the fair ones), the median is not while they are a minority."""
    vals = [lab.longer_wins for lab in labels if lab.longer_wins is not None]
    per: dict[str, list[bool]] = {}
    for lab in labels:
        if lab.longer_wins is not None and lab.annotator is not None:
            per.setdefault(lab.annotator, []).append(lab.longer_wins)
    shares = [float(np.mean(v)) for v in per.values() if len(v) >= min_labels]
    return {"overall": float(np.mean(vals)) if vals else None,
            "median_labeller": float(np.median(shares)) if shares else None}


@dataclass
class _Acc:
    num_labels: int = 0
    num_ties: int = 0
    maj: list[bool] = field(default_factory=list)
    longer: list[bool] = field(default_factory=list)
    first: list[bool] = field(default_factory=list)
    honeypot: list[bool] = field(default_factory=list)


def _share(x: list[bool]) -> float | None:
    return float(np.mean(x)) if x else None


def annotator_stats(labels: list[Label], num_items: int, ds: DawidSkene | None = None,
                    thresholds: Thresholds = Thresholds()) -> list[dict]:
    """One dict per annotator (sorted by name), with the keys of the audit report's `annotators`."""
    per_item = item_values(labels, num_items)
    ref = longer_reference(labels, thresholds.min_labels)["median_labeller"]
    accs: dict[str, _Acc] = {}
    for lab in labels:
        if lab.annotator is None:
            continue
        a = accs.setdefault(lab.annotator, _Acc())
        a.num_labels += 1
        a.num_ties += lab.value == TIE
        others = list(per_item[lab.item])
        others.remove(lab.value)  # leave this label out
        m = majority(others)
        if m is not None:
            a.maj.append(lab.value == m)
        if lab.longer_wins is not None:
            a.longer.append(lab.longer_wins)
        if lab.first_shown_wins is not None:
            a.first.append(lab.first_shown_wins)
        if lab.gold is not None:
            a.honeypot.append(lab.value == lab.gold)
    out = []
    for name in sorted(accs):
        a = accs[name]
        row: dict[str, Any] = {
            "annotator": name, "num_labels": a.num_labels, "tie_rate": a.num_ties / a.num_labels,
            "agreement_with_majority": _share(a.maj), "num_compared_with_majority": len(a.maj),
            "longer_wins_share": _share(a.longer), "num_length_labels": len(a.longer),
            "length_bias": None, "first_shown_wins_share": _share(a.first), "num_position_labels": len(a.first),
            "position_bias": None, "honeypot_accuracy": _share(a.honeypot), "num_honeypots": len(a.honeypot),
            "honeypot_interval": wilson_interval(sum(a.honeypot), len(a.honeypot)) if a.honeypot else None,
            "dawid_skene_accuracy": ds.accuracy.get(name) if ds else None,
            "dawid_skene_confusion": ds.confusion.get(name) if ds else None,
        }
        if a.longer and ref is not None:
            row["length_bias"] = row["longer_wins_share"] - ref
        if a.first:
            row["position_bias"] = row["first_shown_wins_share"] - 0.5
        row["flags"] = _flags(row, a, ref, thresholds)
        out.append(row)
    return out


def _flags(row: dict, a: _Acc, longer_ref: float | None, th: Thresholds) -> list[dict]:
    """Each flag: {flag, statistic, value, threshold, ...}. Noisy uses the best evidence at hand:
    the Dawid-Skene accuracy, else the honeypot accuracy's Wilson upper bound, else majority agreement."""
    flags: list[dict] = []
    if a.num_labels < th.min_labels:
        return flags
    if row["dawid_skene_accuracy"] is not None:
        stat, value = "dawid_skene_accuracy", row["dawid_skene_accuracy"]
    elif row["honeypot_interval"] is not None:
        stat, value = "honeypot_accuracy_upper_95", row["honeypot_interval"][1]
    else:
        stat, value = "agreement_with_majority", row["agreement_with_majority"]
    if value is not None and value < th.noisy_accuracy:
        flags.append({"flag": "noisy", "statistic": stat, "value": value, "threshold": th.noisy_accuracy,
                      "rule": f"{stat} < {th.noisy_accuracy}"})
    if row["length_bias"] is not None and longer_ref is not None and abs(row["length_bias"]) >= th.length_excess:
        p = _binom_p(sum(a.longer), len(a.longer), longer_ref)
        if p < th.p_value:
            flags.append({"flag": "length_biased", "statistic": "longer_wins_share - median labeller's share",
                          "value": row["length_bias"], "threshold": th.length_excess, "p_value": p,
                          "rule": f"|excess| >= {th.length_excess} and binomial p < {th.p_value}"})
    if row["position_bias"] is not None and abs(row["position_bias"]) >= th.position_excess:
        p = _binom_p(sum(a.first), len(a.first), 0.5)
        if p < th.p_value:
            flags.append({"flag": "position_biased", "statistic": "first_shown_wins_share - 0.5",
                          "value": row["position_bias"], "threshold": th.position_excess, "p_value": p,
                          "rule": f"|excess| >= {th.position_excess} and binomial p < {th.p_value}"})
    return flags
