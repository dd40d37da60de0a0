"""Pure evaluation metrics on numpy arrays: win rates and their intervals, length control,
length bias, calibration, KL estimators from per-sequence log-probs, over-optimisation detection.

Outcomes are judge verdicts from the model's side: 1 = model wins, 0.5 = tie, 0 = baseline wins.
N = number of prompts (or responses). No torch here: these run on saved arrays in reports too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


def _as_1d(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


@dataclass
class WinCounts:
    wins: int
    ties: int
    losses: int

    @property
    def total(self) -> int:
        return self.wins + self.ties + self.losses

    def to_dict(self) -> dict:
        return asdict(self)


def win_tie_loss(outcomes: ArrayLike) -> WinCounts:
    """Count verdicts (N,) in {1, 0.5, 0}; any other value is an error (scores are not verdicts)."""
    o = _as_1d(outcomes, "outcomes")
    bad = ~np.isin(o, (0.0, 0.5, 1.0))
    if bad.any():
        raise ValueError(f"outcomes must be 1, 0.5 or 0; got {o[bad][0]!r} at index {int(np.argmax(bad))}")
    return WinCounts(int((o == 1).sum()), int((o == 0.5).sum()), int((o == 0).sum()))


def win_rate(outcomes: ArrayLike) -> float:
    """Mean verdict (N,) -> float: a tie counts as half a win, as in AlpacaEval / MT-Bench pairwise."""
    o = _as_1d(outcomes, "outcomes")
    if o.size == 0:
        raise ValueError("win_rate of no outcomes")
    return float(o.mean())


def bootstrap_ci(values: ArrayLike, num_resamples: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (N,) (Efron & Tibshirani 1993, ch. 13).

    Seeded, so a report is reproducible. Resamples are drawn as (r, N) index blocks of at most ~4M
    entries, so memory stays bounded for large N.
    """
    v = _as_1d(values, "values")
    if v.size == 0:
        raise ValueError("bootstrap_ci of no values")
    rng = np.random.default_rng(seed)
    block = max(1, 4_000_000 // v.size)
    blocks = [rng.integers(0, v.size, size=(min(block, num_resamples - i), v.size))
              for i in range(0, num_resamples, block)]
    means = np.concatenate([v[idx].mean(axis=1) for idx in blocks])  # (R,)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _fit_logistic(features: np.ndarray, targets: np.ndarray, ridge: np.ndarray,
                  max_iter: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Logistic regression by Newton / IRLS: features (N, D), targets (N,) in [0, 1] -> weights (D,).

    Fractional targets (ties = 0.5) are fine for the Bernoulli log-likelihood. `ridge` (D,) is an L2
    penalty per weight; a small one on the slope keeps the fit finite when length separates the wins
    perfectly (the MLE would run to infinity there). We write the 2-parameter fit by hand rather than
    depend on scikit-learn/statsmodels: Newton converges in a handful of steps.
    """
    w = np.zeros(features.shape[1])
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(features @ w)))  # (N,)
        grad = features.T @ (p - targets) + ridge * w  # (D,)
        hess = (features * (p * (1 - p))[:, None]).T @ features + np.diag(ridge)  # (D, D)
        step = np.linalg.solve(hess + 1e-12 * np.eye(len(w)), grad)
        w = w - step
        if np.max(np.abs(step)) < tol:
            break
    return w


def length_controlled_win_rate(outcomes: ArrayLike, model_lengths: ArrayLike, baseline_lengths: ArrayLike,
                               ridge: float = 1e-3) -> float:
    """Win rate with the length difference regressed out (length-controlled AlpacaEval, Dubois et al.
    2024, arXiv 2404.04475, its length GLM reduced to one model pair).

    Fit P(win) = sigmoid(theta + phi * tanh(d / std(d))), d = model length - baseline length (N,), and
    report sigmoid(theta): the win rate predicted when both responses have the same length.
    Departure: AlpacaEval also fits a per-instruction difficulty term across its many models; with one
    model pair and one verdict per instruction it is not identifiable, so we drop it.
    """
    o = _as_1d(outcomes, "outcomes")
    d = _as_1d(model_lengths, "model_lengths") - _as_1d(baseline_lengths, "baseline_lengths")
    if o.size != d.size:
        raise ValueError(f"outcomes ({o.size}) and lengths ({d.size}) differ in size")
    if o.size == 0:
        raise ValueError("length_controlled_win_rate of no outcomes")
    sd = d.std()
    x = np.tanh(d / sd) if sd > 0 else np.zeros_like(d)
    features = np.stack([np.ones_like(x), x], axis=1)  # (N, 2): intercept, length term
    theta, _ = _fit_logistic(features, o, ridge=np.array([0.0, ridge]))
    # With no length variation at all the fit is the plain win rate (sigmoid of its log-odds).
    return float(1.0 / (1.0 + np.exp(-theta)))


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as Spearman's rho needs."""
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(a.size)
    ranks[order] = np.arange(a.size, dtype=np.float64)
    _, inv, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return sums[inv] / counts[inv]


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson correlation of (N,) and (N,); 0.0 when either is constant (no linear signal to report)."""
    a, b = _as_1d(x, "x"), _as_1d(y, "y")
    if a.size != b.size:
        raise ValueError(f"x ({a.size}) and y ({b.size}) differ in size")
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation (Pearson on average ranks)."""
    return pearson(_ranks(_as_1d(x, "x")), _ranks(_as_1d(y, "y")))


def length_correlation(values: ArrayLike, lengths: ArrayLike) -> dict:
    """How much a reward (or a win) follows length: {"pearson", "spearman", "n"}."""
    return {"pearson": pearson(values, lengths), "spearman": spearman(values, lengths),
            "n": int(np.asarray(values).size)}


def win_rate_by_length_bucket(outcomes: ArrayLike, length_diffs: ArrayLike,
                              num_buckets: int = 4) -> list[dict]:
    """Win rate within quantile buckets of the length difference (model - baseline), shortest first.

    Returns one dict per non-empty bucket: {"lo", "hi", "n", "win_rate"}. If the win rate climbs with
    the bucket, the judge (or the policy) is paying for length.
    """
    o, d = _as_1d(outcomes, "outcomes"), _as_1d(length_diffs, "length_diffs")
    if o.size != d.size:
        raise ValueError(f"outcomes ({o.size}) and length_diffs ({d.size}) differ in size")
    if o.size == 0:
        return []
    edges = np.unique(np.quantile(d, np.linspace(0, 1, num_buckets + 1)))
    if edges.size == 1:
        return [{"lo": float(edges[0]), "hi": float(edges[0]), "n": int(o.size), "win_rate": float(o.mean())}]
    # bucket i holds edges[i] <= d < edges[i+1]; the last bucket also takes its right edge
    which = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, edges.size - 2)
    rows = []
    for i in range(edges.size - 1):
        m = which == i
        if m.any():
            rows.append({"lo": float(edges[i]), "hi": float(edges[i + 1]), "n": int(m.sum()),
                         "win_rate": float(o[m].mean())})
    return rows


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike,
                               num_bins: int = 10) -> tuple[float, list[dict]]:
    """ECE (Guo et al. 2017, arXiv 1706.04599, section 2) of probabilities (N,) against 0/1 labels (N,).

    Equal-width bins on [0, 1]; ECE = sum_b (n_b / N) |accuracy_b - confidence_b|. Returns the ECE and
    the reliability table: one row per non-empty bin {"lo", "hi", "n", "mean_prob", "frac_positive"}.
    """
    p, y = _as_1d(probs, "probs"), _as_1d(labels, "labels")
    if p.size != y.size:
        raise ValueError(f"probs ({p.size}) and labels ({y.size}) differ in size")
    if p.size == 0:
        raise ValueError("expected_calibration_error of no predictions")
    if p.min() < 0 or p.max() > 1:
        raise ValueError("probs must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, num_bins - 1)
    ece, table = 0.0, []
    for b in range(num_bins):
        m = which == b
        if not m.any():
            continue
        conf, acc = float(p[m].mean()), float(y[m].mean())
        ece += m.sum() / p.size * abs(acc - conf)
        table.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(m.sum()),
                      "mean_prob": conf, "frac_positive": acc})
    return float(ece), table


def kl_k1(logp: ArrayLike, logq: ArrayLike) -> float:
    """KL(p || q) ~ mean(log p(x) - log q(x)) for x ~ p (Schulman 2020, "Approximating KL", k1).

    logp, logq: (N,) log-probabilities of the same N samples (summed over tokens for sequences).
    Unbiased but high variance, and can be negative on a finite sample.
    """
    a, b = _as_1d(logp, "logp"), _as_1d(logq, "logq")
    if a.size != b.size or a.size == 0:
        raise ValueError(f"logp ({a.size}) and logq ({b.size}) must be non-empty and of the same size")
    return float((a - b).mean())


def kl_k3(logp: ArrayLike, logq: ArrayLike) -> float:
    """KL(p || q) ~ mean((r - 1) - log r), r = q(x)/p(x), x ~ p (Schulman 2020, k3).

    Unbiased (E_p[r] = 1) and never negative per sample, so lower variance than k1. log r is clipped
    at 50 before exp: a sequence the baseline finds e^50 times likelier than the sampler would
    otherwise overflow; this only caps an estimate that is already huge.
    """
    a, b = _as_1d(logp, "logp"), _as_1d(logq, "logq")
    if a.size != b.size or a.size == 0:
        raise ValueError(f"logp ({a.size}) and logq ({b.size}) must be non-empty and of the same size")
    log_r = np.minimum(b - a, 50.0)
    return float((np.expm1(log_r) - log_r).mean())


def best_of_n_kl_bound(n: int) -> float:
    """KL(best-of-n || base) <= log n - (n - 1)/n (Stiennon et al. 2020, appendix; Beirami et al. 2024)."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    return float(np.log(n) - (n - 1) / n)


def detect_overoptimisation(xs: ArrayLike, proxy: ArrayLike, judge: ArrayLike, min_steps: int = 1,
                            min_drop: float = 0.0, tol: float = 0.0) -> dict:
    """Find the first point after which the proxy keeps rising while the judge keeps falling.

    xs (K,) are checkpoint steps, best-of-N's N or KL values; proxy/judge (K,) the mean scores there.
    Point i is flagged when, over every later step up to the end (at least `min_steps` of them), the
    proxy never drops by more than `tol` and ends higher, and the judge never rises by more than `tol`
    and ends at least `min_drop` lower (Gao et al. 2023's over-optimisation: proxy up, gold down).
    Returns {"flagged", "index", "x", "proxy_gain", "judge_drop"} (index/x None when not flagged).
    """
    x, pr, ju = _as_1d(xs, "xs"), _as_1d(proxy, "proxy"), _as_1d(judge, "judge")
    if not (x.size == pr.size == ju.size):
        raise ValueError(f"xs ({x.size}), proxy ({pr.size}) and judge ({ju.size}) differ in size")
    order = np.argsort(x, kind="mergesort")
    x, pr, ju = x[order], pr[order], ju[order]
    k = x.size
    for i in range(k - min_steps):
        dp, dj = np.diff(pr[i:]), np.diff(ju[i:])
        if (dp >= -tol).all() and (dj <= tol).all() and pr[-1] > pr[i] and ju[i] - ju[-1] > min_drop:
            return {"flagged": True, "index": int(order[i]), "x": float(x[i]),
                    "proxy_gain": float(pr[-1] - pr[i]), "judge_drop": float(ju[i] - ju[-1])}
    return {"flagged": False, "index": None, "x": None, "proxy_gain": None, "judge_drop": None}
