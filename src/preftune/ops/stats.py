"""Masked statistics and per-token KL estimators, as pure tensor functions.

KL estimators follow J. Schulman, "Approximating KL Divergence" (2020): with tokens sampled from
the policy and log_ratio = logp - ref_logp,
  k1 = log_ratio                        unbiased, high variance, can be negative
  k2 = log_ratio^2 / 2                  biased, low variance, >= 0
  k3 = exp(-log_ratio) - 1 + log_ratio  unbiased, low variance, >= 0
Each estimates KL(policy || reference) when averaged over policy samples.
"""

from __future__ import annotations

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of values where mask is true (mask broadcastable to values)."""
    v = values * mask.to(values.dtype)
    return v.sum() if dim is None else v.sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of values where mask is true; 0 where nothing is selected (never NaN)."""
    m = mask.to(values.dtype).expand_as(values)
    count = m.sum() if dim is None else m.sum(dim)
    return masked_sum(values, m, dim) / count.clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the selected values (over all dims); unbiased divides by n - 1 (0 when n < 2)."""
    m = mask.to(values.dtype).expand_as(values)
    n = m.sum()
    mean = masked_sum(values, m) / n.clamp(min=1)
    sq = masked_sum((values - mean) ** 2, m)
    denom = (n - 1) if unbiased else n
    return torch.where(denom > 0, sq / denom.clamp(min=1), torch.zeros_like(sq))


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
                  eps: float = 1e-8) -> torch.Tensor:
    """(values - mean) / std over the selected values (mean kept when shift_mean is False)."""
    mean = masked_mean(values, mask)
    out = (values - mean) * torch.rsqrt(masked_var(values, mask) + eps)
    return out if shift_mean else out + mean


def kl_k1(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k1 = logp - ref_logp (any shape, elementwise)."""
    return logps - ref_logps


def kl_k2(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k2 = (logp - ref_logp)^2 / 2."""
    return 0.5 * (logps - ref_logps) ** 2


def kl_k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 = exp(ref_logp - logp) - 1 - (ref_logp - logp); computed with expm1 for accuracy."""
    d = ref_logps - logps
    return torch.expm1(d) - d
