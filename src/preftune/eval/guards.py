"""Guards: reports that warn when a better proxy score is not a better model.

- over-optimisation (reward hacking): the proxy reward keeps rising while a held-out judge falls,
  along checkpoints, best-of-N's N, or KL (Gao et al. 2023, "Scaling laws for reward model
  over-optimization");
- length bias: rewards or wins that follow response length (Singhal et al. 2023);
- uncertainty: responses on which a reward-model ensemble disagrees (Coste et al. 2024).

Each report is a JSON-ready dict with a `warnings` list of plain sentences, which the HTML report
highlights. Pure numpy: no model is run here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from preftune.eval import metrics

# |correlation| above which length is said to drive the reward / the wins. Singhal et al. find
# reward-length correlations of 0.5-0.7 in RLHF reward models; 0.3 already deserves a look.
LENGTH_CORR_WARN = 0.3
# Below this many responses a rank correlation is mostly noise: report it, but do not warn.
MIN_N_TO_WARN = 20


def overoptimisation_report(xs: Sequence[float], proxy: Sequence[float], judge: Sequence[float],
                            x_name: str = "step", min_steps: int = 1, min_drop: float = 0.0) -> dict:
    """Proxy and judge series along `x_name` (K points each) with the over-optimisation flag."""
    flag = metrics.detect_overoptimisation(xs, proxy, judge, min_steps=min_steps, min_drop=min_drop)
    warnings = []
    if flag["flagged"]:
        warnings.append(
            f"over-optimisation: after {x_name}={flag['x']:g} the proxy reward keeps rising "
            f"(+{flag['proxy_gain']:.4g}) while the judge falls (-{flag['judge_drop']:.4g}); "
            f"stop at or before {x_name}={flag['x']:g} or fix the reward model")
    return {"x_name": x_name,
            "series": [{"x": float(x), "proxy": float(p), "judge": float(j)}
                       for x, p, j in zip(xs, proxy, judge)],
            "flag": flag, "warnings": warnings}


def length_bias_report(lengths: Sequence[float], rewards: Sequence[float] | None = None,
                       outcomes: Sequence[float] | None = None, length_diffs: Sequence[float] | None = None,
                       num_buckets: int = 4, warn_above: float = LENGTH_CORR_WARN) -> dict:
    """Reward-length correlation (rewards (N,) vs lengths (N,)) and, given verdicts (M,) with the
    length differences (M,) model - baseline, the win-length correlation and win rate per length bucket."""
    out: dict = {"warnings": []}
    if rewards is not None:
        rc = metrics.length_correlation(rewards, lengths)
        out["reward_length"] = rc
        if abs(rc["spearman"]) > warn_above and rc["n"] >= MIN_N_TO_WARN:
            direction = "longer" if rc["spearman"] > 0 else "shorter"
            out["warnings"].append(f"length bias: reward-length Spearman correlation {rc['spearman']:.2f} "
                                   f"(|rho| > {warn_above}): {direction} responses score higher")
    if outcomes is not None:
        if length_diffs is None:
            raise ValueError("length_bias_report: outcomes need length_diffs (model - baseline lengths)")
        wc = metrics.length_correlation(outcomes, length_diffs)
        out["win_length"] = wc
        out["win_rate_by_length"] = metrics.win_rate_by_length_bucket(outcomes, length_diffs, num_buckets)
        if abs(wc["spearman"]) > warn_above and wc["n"] >= MIN_N_TO_WARN:
            out["warnings"].append(f"length bias: the judge's verdicts follow the length difference "
                                   f"(Spearman {wc['spearman']:.2f}); read the length-controlled win rate")
    return out


def uncertain_responses(std: Sequence[float], quantile: float = 0.9, ids: Sequence | None = None) -> dict:
    """Responses whose ensemble std (N,) is above its `quantile`: where the reward model is guessing.

    Returns {"threshold", "quantile", "indices", "ids", "std", "warnings"} (indices sorted by std,
    highest first).
    """
    s = np.asarray(std, dtype=np.float64)
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    if s.size == 0:
        return {"threshold": None, "quantile": quantile, "indices": [], "ids": [], "std": [], "warnings": []}
    thr = float(np.quantile(s, quantile))
    idx = [int(i) for i in np.argsort(-s, kind="mergesort") if s[i] > thr]
    warnings = []
    if idx:
        warnings.append(f"{len(idx)} of {s.size} responses have ensemble std above the {quantile:.0%} "
                        "quantile "
                        f"({thr:.4g}); their rewards are unreliable")
    return {"threshold": thr, "quantile": quantile, "indices": idx,
            "ids": [ids[i] for i in idx] if ids is not None else idx,
            "std": [float(s[i]) for i in idx], "warnings": warnings}
