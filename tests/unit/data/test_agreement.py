"""Agreement statistics against hand-computed values and published worked examples; Dawid-Skene on
synthetic labels with a known confusion matrix; the per-annotator statistics and their flags."""

from __future__ import annotations

import random

import numpy as np
import pytest

from preftune.data.agreement import (
    TIE,
    A,
    B,
    Label,
    Thresholds,
    annotator_stats,
    count_table,
    dawid_skene,
    fleiss_kappa,
    item_values,
    krippendorff_alpha,
    longer_reference,
    majority,
    pairwise_cohen,
    raw_agreement,
    wilson_interval,
)


def _labels(table: dict[str, list[int | None]]) -> list[Label]:
    """annotator -> one code per item (None = did not label it)."""
    out, row = [], 0
    for who, codes in table.items():
        for item, v in enumerate(codes):
            if v is not None:
                out.append(Label(row=row, item=item, annotator=who, value=v))
                row += 1
    return out


# ---------------------------------------------------------------- published examples

# Wikipedia's "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories.
FLEISS_WIKI = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])


def test_fleiss_published_example():
    res = fleiss_kappa(FLEISS_WIKI)
    assert res["value"] == pytest.approx(0.210, abs=5e-4)
    assert res["num_items"] == 10 and res["num_raters"] == 14 and res["num_items_left_out"] == 0
    assert raw_agreement(FLEISS_WIKI) == pytest.approx(0.378, abs=5e-4)  # the example's P-bar


# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", the 4-observer, 12-unit nominal
# example with missing values: alpha_nominal = 0.743.
_N = None
KRIPP = [[1, 2, 3, 3, 2, 1, 4, 1, 2, _N, _N, _N],
         [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, _N, 3],
         [_N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, _N],
         [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, _N]]


def test_krippendorff_published_example():
    values = [[row[j] - 1 for row in KRIPP if row[j] is not None] for j in range(12)]
    assert krippendorff_alpha(count_table(values, 5)) == pytest.approx(0.743, abs=5e-4)


# ---------------------------------------------------------------- hand-computed

def test_small_table_by_hand():
    # two raters, three items: [A, A], [A, B], [B, B]
    labels = _labels({"x": [A, A, B], "y": [A, B, B]})
    table = count_table(item_values(labels, 3))
    assert table.tolist() == [[2, 0, 0], [1, 1, 0], [0, 2, 0]]
    assert raw_agreement(table) == pytest.approx(2 / 3)
    # P-bar = 2/3, P_e = 0.5^2 + 0.5^2 = 1/2 -> kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert fleiss_kappa(table)["value"] == pytest.approx(1 / 3)
    # coincidences o_AA = 2, o_AB = o_BA = 1, o_BB = 2; n = 6: D_o = 2/6, D_e = 2*3*3/(6*5) = 0.6
    assert krippendorff_alpha(table) == pytest.approx(1 - (2 / 6) / 0.6)
    # Cohen: p_o = 2/3, p_e = (2/3)(1/3) + (1/3)(2/3) = 4/9 -> (2/9)/(5/9) = 0.4
    (pair,) = pairwise_cohen(labels)
    assert pair == {"a": "x", "b": "y", "num_shared": 3, "raw_agreement": pytest.approx(2 / 3),
                    "kappa": pytest.approx(0.4)}


def test_ties_are_a_third_category_and_unequal_counts():
    # item 0: [A, A, TIE], item 1: [B, B], item 2: [TIE] (one label: no pair, left out everywhere)
    labels = _labels({"x": [A, B, TIE], "y": [A, B, None], "z": [TIE, None, None]})
    table = count_table(item_values(labels, 3))
    assert table.tolist() == [[2, 0, 1], [0, 2, 0], [0, 0, 1]]
    # P_0 = 2*1/(3*2) = 1/3, P_1 = 1
    assert raw_agreement(table) == pytest.approx((1 / 3 + 1) / 2)
    f = fleiss_kappa(table)  # equal counts needed: two items have 2 or 3 labels, one each -> the larger count wins
    assert f["num_raters"] == 3 and f["num_items"] == 1 and f["num_items_left_out"] == 2
    # Krippendorff on units 0 and 1: o_AA = 2*1/2 = 1, o_AT = o_TA = 2*1/2 = 1, o_BB = 2; n = 5
    # D_o = 2/5; n_A = 2, n_B = 2, n_T = 1: D_e = (2*2*2 + 2*2*1 + 2*2*1)/(5*4) = 16/20
    assert krippendorff_alpha(table) == pytest.approx(1 - 0.4 / 0.8)
    pairs = {(p["a"], p["b"]): p for p in pairwise_cohen(labels, min_shared=1)}
    assert pairs[("x", "y")]["num_shared"] == 2 and pairs[("x", "y")]["kappa"] == pytest.approx(1.0)
    assert pairs[("x", "z")]["num_shared"] == 1


def test_degenerate_cases_give_none_not_nan():
    one_each = count_table([[A], [B]])
    assert raw_agreement(one_each) is None and krippendorff_alpha(one_each) is None
    assert fleiss_kappa(one_each)["value"] is None
    all_same = count_table([[A, A], [A, A]])
    assert krippendorff_alpha(all_same) is None and fleiss_kappa(all_same)["value"] is None
    (pair,) = pairwise_cohen(_labels({"x": [A, A], "y": [A, A]}))
    assert pair["kappa"] is None and pair["raw_agreement"] == 1.0


def test_majority_and_wilson():
    assert majority([A, A, B]) == A and majority([A, B]) is None and majority([]) is None
    # Wilson 95%, 8 of 10: centre (0.8 + z^2/20)/(1 + z^2/10), half-width z sqrt(0.016 + z^2/400)/(1 + z^2/10)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)


# ---------------------------------------------------------------- Dawid-Skene

def _synthetic(seed: int = 0, num_items: int = 600):
    """Binary truth (prior 0.6 / 0.4); six workers with known confusion matrices, 3 per item."""
    rng = random.Random(seed)
    conf = {"w-good": [[0.95, 0.05], [0.05, 0.95]], "w-ok": [[0.9, 0.1], [0.1, 0.9]],
            "w-skewed": [[0.7, 0.3], [0.05, 0.95]], "w-noisy": [[0.65, 0.35], [0.35, 0.65]],
            "w-good2": [[0.92, 0.08], [0.1, 0.9]], "w-ok2": [[0.85, 0.15], [0.15, 0.85]]}
    names = sorted(conf)
    truth, labels = [], []
    for item in range(num_items):
        t = A if rng.random() < 0.6 else B
        truth.append(t)
        for w in rng.sample(names, 3):
            v = t if rng.random() < conf[w][t][t] else 1 - t
            labels.append(Label(row=len(labels), item=item, annotator=w, value=v))
    return conf, truth, labels


def test_dawid_skene_recovers_known_confusion():
    conf, truth, labels = _synthetic()
    ds = dawid_skene(labels)
    for w, m in conf.items():
        mine = [lab for lab in labels if lab.annotator == w]
        realised = np.mean([lab.value == truth[lab.item] for lab in mine])
        assert ds.accuracy[w] == pytest.approx(realised, abs=0.05), w
        for t in (A, B):  # each diagonal entry within 0.06 of the realised one (and 0.1 of the generator's)
            given_t = [lab.value == t for lab in mine if truth[lab.item] == t]
            assert ds.confusion[w][t][t] == pytest.approx(np.mean(given_t), abs=0.06), (w, t)
            assert ds.confusion[w][t][t] == pytest.approx(m[t][t], abs=0.1), (w, t)
        assert ds.confusion[w][TIE] == pytest.approx([1 / 3] * 3)  # never seen: uniform
    # the posterior's argmax beats majority vote against the truth
    ds_right = np.mean([int(np.argmax(ds.posterior[i])) == t for i, t in enumerate(truth)])
    values = item_values(labels, len(truth))
    mv_right = np.mean([majority(v) == t for v, t in zip(values, truth)])
    assert ds_right >= mv_right and ds_right > 0.9
    assert sum(ds.priors) == pytest.approx(1.0) and ds.priors[A] == pytest.approx(0.6, abs=0.06)


# ---------------------------------------------------------------- per annotator and flags

def _pool_labels(seed: int = 1, num_items: int = 300) -> list[Label]:
    """Three labellers on every item: 'fair' right 90% with no bias; 'long' always picks the longer
    response; 'first' always picks the one shown first. Truth = A; longer and first are coin flips."""
    rng = random.Random(seed)
    out: list[Label] = []
    for item in range(num_items):
        a_longer = rng.random() < 0.5
        for who in ("fair", "long", "first"):
            a_first = rng.random() < 0.5
            if who == "fair":
                v = A if rng.random() < 0.9 else B
            elif who == "long":
                v = A if a_longer else B
            else:
                v = A if a_first else B
            out.append(Label(row=len(out), item=item, annotator=who, value=v,
                             longer_wins=(v == A) == a_longer, first_shown_wins=(v == A) == a_first,
                             gold=A if item % 10 == 0 else None))
    return out


def test_annotator_stats_and_flags():
    labels = _pool_labels()
    stats = {s["annotator"]: s for s in annotator_stats(labels, 300)}
    long, first, fair = stats["long"], stats["first"], stats["fair"]
    assert long["longer_wins_share"] == 1.0 and first["first_shown_wins_share"] == 1.0
    # against the median labeller's share (fair's or first's, both near 0.5), not the overall one
    # (about 2/3 here, which the always-longer labeller itself pulls up)
    ref = longer_reference(labels)
    assert ref["overall"] == pytest.approx(np.mean([lab.longer_wins for lab in labels]))
    shares = sorted(np.mean([lab.longer_wins for lab in labels if lab.annotator == w])
                    for w in ("fair", "long", "first"))
    assert ref["median_labeller"] == pytest.approx(shares[1]) and abs(shares[1] - 0.5) < 0.1
    assert long["length_bias"] == pytest.approx(1.0 - shares[1])
    assert {f["flag"] for f in long["flags"]} >= {"length_biased"}
    assert {f["flag"] for f in first["flags"]} >= {"position_biased"}
    assert not any(f["flag"] in ("length_biased", "position_biased") for f in fair["flags"])
    flag = next(f for f in first["flags"] if f["flag"] == "position_biased")
    assert flag["threshold"] == Thresholds().position_excess and flag["value"] == pytest.approx(0.5)
    # honeypots: 30 items with gold A; the fair labeller's accuracy there is its share of A labels
    hp = [lab.value == A for lab in labels if lab.annotator == "fair" and lab.gold is not None]
    assert fair["num_honeypots"] == 30 and fair["honeypot_accuracy"] == pytest.approx(np.mean(hp))
    assert fair["honeypot_interval"] == pytest.approx(wilson_interval(sum(hp), 30))
    assert fair["tie_rate"] == 0.0 and fair["num_labels"] == 300


def test_leave_self_out_majority_by_hand():
    # item 0: x=A, y=A, z=B; item 1: x=B, y=B, z=B
    labels = _labels({"x": [A, B], "y": [A, B], "z": [B, B]})
    stats = {s["annotator"]: s for s in annotator_stats(labels, 2, thresholds=Thresholds(min_labels=1))}
    # x on item 0: others [A, B] -> no majority; on item 1: others [B, B] -> agrees
    assert stats["x"]["num_compared_with_majority"] == 1 and stats["x"]["agreement_with_majority"] == 1.0
    # z on item 0: others [A, A] -> disagrees; item 1 agrees
    assert stats["z"]["num_compared_with_majority"] == 2 and stats["z"]["agreement_with_majority"] == 0.5
    assert stats["z"]["flags"][0]["flag"] == "noisy"
    assert stats["z"]["flags"][0]["statistic"] == "agreement_with_majority"
