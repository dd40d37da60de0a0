"""Every metric against hand-computed values, limit cases and known distributions."""

import math

import numpy as np
import pytest

from preftune.eval import metrics as M


def test_win_tie_loss_and_win_rate_by_hand():
    o = [1, 1, 0.5, 0, 1]
    c = M.win_tie_loss(o)
    assert (c.wins, c.ties, c.losses, c.total) == (3, 1, 1, 5)
    assert M.win_rate(o) == pytest.approx(3.5 / 5)  # tie = half a win


def test_win_tie_loss_rejects_scores():
    with pytest.raises(ValueError, match="1, 0.5 or 0"):
        M.win_tie_loss([1, 0.7])


def test_bootstrap_constant_and_deterministic():
    assert M.bootstrap_ci([0.5] * 10) == (0.5, 0.5)
    v = np.random.default_rng(1).random(50)
    assert M.bootstrap_ci(v, seed=3) == M.bootstrap_ci(v, seed=3)
    lo, hi = M.bootstrap_ci(v)
    assert lo < v.mean() < hi


def test_bootstrap_coverage_on_bernoulli():
    # 200 seeded experiments of n=200 draws with p=0.6: a 95% interval should cover p ~95% of the time
    rng = np.random.default_rng(0)
    covered = 0
    for rep in range(200):
        x = (rng.random(200) < 0.6).astype(float)
        lo, hi = M.bootstrap_ci(x, num_resamples=500, seed=rep)
        covered += lo <= 0.6 <= hi
    assert 0.90 <= covered / 200 <= 0.99


def test_kl_k1_k3_match_exact_kl_on_discrete_distributions():
    p = np.array([0.5, 0.3, 0.2])
    q = np.array([0.2, 0.3, 0.5])
    exact = float((p * np.log(p / q)).sum())
    x = np.random.default_rng(0).choice(3, size=200_000, p=p)
    logp, logq = np.log(p[x]), np.log(q[x])
    assert M.kl_k1(logp, logq) == pytest.approx(exact, abs=0.01)
    assert M.kl_k3(logp, logq) == pytest.approx(exact, abs=0.01)
    assert exact == pytest.approx(0.3 * math.log(2.5), abs=1e-12)  # 0.5 ln2.5 + 0.2 ln0.4


def test_kl_hand_values_and_identity():
    # one sample, logp - logq = ln 2 -> k1 = ln 2; r = 1/2 -> k3 = -1/2 + ln 2
    assert M.kl_k1([math.log(0.5)], [math.log(0.25)]) == pytest.approx(math.log(2))
    assert M.kl_k3([math.log(0.5)], [math.log(0.25)]) == pytest.approx(-0.5 + math.log(2))
    assert M.kl_k3([-3.0, -1.0], [-3.0, -1.0]) == 0.0


def test_best_of_n_kl_bound():
    assert M.best_of_n_kl_bound(1) == 0.0
    assert M.best_of_n_kl_bound(4) == pytest.approx(math.log(4) - 0.75)
    with pytest.raises(ValueError):
        M.best_of_n_kl_bound(0)


def test_length_controlled_win_rate_removes_pure_length_effect():
    # the model is longer on average and the judge only rewards length: raw wins far from 0.5, LC ~0.5
    rng = np.random.default_rng(0)
    n = 4000
    d = rng.normal(1.0, 1.0, n) * 100
    p_win = 1 / (1 + np.exp(-3 * np.tanh(d / d.std())))
    o = (rng.random(n) < p_win).astype(float)
    base = np.full(n, 500.0)
    assert M.win_rate(o) > 0.75
    assert M.length_controlled_win_rate(o, base + d, base) == pytest.approx(0.5, abs=0.05)


def test_length_controlled_equals_raw_when_lengths_equal():
    o = [1, 1, 1, 0, 0.5]
    L = [10, 10, 10, 10, 10]
    assert M.length_controlled_win_rate(o, L, L) == pytest.approx(0.7, abs=1e-6)


def test_correlations_by_hand():
    assert M.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert M.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert M.pearson([1, 1, 1], [1, 2, 3]) == 0.0
    # monotone but not linear: spearman 1, pearson < 1
    assert M.spearman([1, 2, 3, 4], [1, 4, 9, 100]) == pytest.approx(1.0)
    assert M.pearson([1, 2, 3, 4], [1, 4, 9, 100]) < 0.9
    # ties share average ranks: ranks of [1,1,2] are [0.5,0.5,2]
    assert M.spearman([1, 1, 2], [0, 1, 2]) == pytest.approx(M.pearson([0.5, 0.5, 2], [0, 1, 2]))
    r = M.length_correlation([1, 2, 3], [10, 20, 30])
    assert r["pearson"] == pytest.approx(1.0) and r["n"] == 3


def test_win_rate_by_length_bucket_by_hand():
    o = [0, 0, 1, 1, 0.5, 1, 1, 1]
    d = [-4, -3, -2, -1, 1, 2, 3, 4]
    rows = M.win_rate_by_length_bucket(o, d, num_buckets=2)
    assert [r["n"] for r in rows] == [4, 4]
    assert rows[0]["win_rate"] == pytest.approx(0.5) and rows[1]["win_rate"] == pytest.approx(3.5 / 4)
    assert sum(r["n"] for r in M.win_rate_by_length_bucket(o, d, num_buckets=3)) == 8


def test_ece_by_hand_and_on_synthetic():
    ece, table = M.expected_calibration_error([0.9, 0.9, 0.1, 0.1], [1, 0, 0, 0], num_bins=10)
    # bin 0.9: conf .9 acc .5 -> .4 * 2/4 ; bin 0.1: conf .1 acc 0 -> .1 * 2/4
    assert ece == pytest.approx(0.25)
    assert [r["n"] for r in table] == [2, 2]
    rng = np.random.default_rng(0)
    p = rng.random(50_000)
    y = (rng.random(p.size) < p).astype(float)
    assert M.expected_calibration_error(p, y)[0] < 0.02
    over = np.where(p > 0.5, 0.99, 0.01)  # says 99% sure, is right ~75% of the time
    assert M.expected_calibration_error(over, y)[0] > 0.2


def test_overoptimisation_flag_fires_on_rise_then_fall():
    xs = [1, 2, 4, 8, 16]
    proxy = [0.1, 0.3, 0.5, 0.7, 0.9]
    judge = [0.1, 0.3, 0.5, 0.4, 0.2]
    r = M.detect_overoptimisation(xs, proxy, judge)
    assert r["flagged"] and r["index"] == 2 and r["x"] == 4
    assert r["judge_drop"] == pytest.approx(0.3) and r["proxy_gain"] == pytest.approx(0.4)


def test_overoptimisation_not_flagged_on_monotone_judge():
    xs = [1, 2, 4, 8, 16]
    r = M.detect_overoptimisation(xs, [0.1, 0.3, 0.5, 0.7, 0.9], [0.1, 0.2, 0.3, 0.35, 0.4])
    assert not r["flagged"] and r["index"] is None
    # judge falls but the proxy falls too: not over-optimisation
    assert not M.detect_overoptimisation(xs, [5, 4, 3, 2, 1], [5, 4, 3, 2, 1])["flagged"]
    # unsorted xs are sorted first
    assert M.detect_overoptimisation([16, 1, 8, 2, 4], [0.9, 0.1, 0.7, 0.3, 0.5],
                                     [0.2, 0.1, 0.4, 0.3, 0.5])["x"] == 4


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN"):
        M.win_rate([1, float("nan")])
    with pytest.raises(ValueError, match="differ"):
        M.length_controlled_win_rate([1, 0], [1, 2, 3], [1, 2, 3])
