"""Losses on unpaired rows (a prompt, one completion, a desirable/undesirable label): KTO and BCO.

N = rows. `*_logps` are summed over completion tokens, shape (N,); `labels` (N,) bool, True =
desirable. Papers and equations in docs/paper_index.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class UnpairedLossOutput:
    """losses (N,) per row, weighted; rewards (N,) detached β·(policy - ref) log-ratio;
    labels (N,) bool; reference_point () the z0 (KTO) or δ (BCO) that was used."""

    losses: Tensor
    rewards: Tensor
    labels: Tensor
    reference_point: Tensor

    @property
    def loss(self) -> Tensor:
        return self.losses.mean()


@dataclass
class UnpairedBatch:
    """Pairs split into rows: chosen rows first (label True), then rejected rows (label False).
    policy_logps, ref_logps (2B,) (ref None if not given); labels (2B,) bool."""

    policy_logps: Tensor
    ref_logps: Tensor | None
    labels: Tensor


def _check_rows(policy_logps: Tensor, ref_logps: Tensor, labels: Tensor) -> None:
    if policy_logps.dim() != 1 or policy_logps.shape != ref_logps.shape or policy_logps.shape != labels.shape:
        raise ValueError(
            f"policy_logps, ref_logps and labels must all be (N,), got {tuple(policy_logps.shape)}, "
            f"{tuple(ref_logps.shape)}, {tuple(labels.shape)}"
        )


def kto_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    labels: Tensor,
    *,
    beta: float,
    z0: float | Tensor,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> UnpairedLossOutput:
    """KTO (Ethayarajh et al. 2024, Eq. 7), written as λ_y - v(x, y):

        r = log π(y|x) - log π_ref(y|x)
        desirable:   λ_D (1 - σ(β(r - z0)))
        undesirable: λ_U (1 - σ(β(z0 - r)))

    Shapes: policy_logps, ref_logps, labels (N,); z0 scalar, the reference point from
    `kto_reference_point` (detached and clamped at 0 there). The paper suggests choosing λ_D, λ_U so
    that λ_D·n_D / (λ_U·n_U) lies in [1, 4/3].
    """
    _check_rows(policy_logps, ref_logps, labels)
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    labels = labels.bool()
    z0 = torch.as_tensor(z0, dtype=policy_logps.dtype, device=policy_logps.device).detach()
    r = policy_logps - ref_logps  # (N,)
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (r - z0)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r)))
    losses = torch.where(labels, desirable, undesirable)
    return UnpairedLossOutput(losses, (beta * r).detach(), labels, z0)


def kto_reference_point(policy_mismatched_logps: Tensor, ref_mismatched_logps: Tensor, *, clamp: bool = True) -> Tensor:
    """KTO's z0 (Ethayarajh et al. 2024): the batch estimate of KL(π || π_ref),
    mean(log π(y'|x) - log π_ref(y'|x)) over completions y' paired with a *different* prompt x
    (see `mismatched_index`), clamped at 0 and detached (no gradient flows through z0).

    Shapes: (M,), (M,) -> (). Under data parallelism call it with clamp=False, average the result
    across processes, then clamp at 0 (TRL does the same): the estimate is over the global batch.
    """
    if policy_mismatched_logps.shape != ref_mismatched_logps.shape:
        raise ValueError("policy and reference mismatched log-probs must have the same shape")
    kl = (policy_mismatched_logps - ref_mismatched_logps).mean().detach()
    return kl.clamp(min=0) if clamp else kl


def mismatched_index(num_rows: int) -> Tensor:
    """Completion index to pair with each prompt for the z0 estimate: row i gets the completion of
    row i-1 (a cyclic shift, so no row keeps its own completion when N >= 2). (N,) long."""
    if num_rows < 2:
        raise ValueError(f"the KL reference point needs at least 2 rows, got {num_rows}")
    return torch.roll(torch.arange(num_rows), 1)


def split_pairs(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None = None,
    ref_rejected_logps: Tensor | None = None,
) -> UnpairedBatch:
    """Pairs -> unpaired rows: chosen desirable, rejected undesirable. (B,) each -> (2B,)."""
    if policy_chosen_logps.shape != policy_rejected_logps.shape:
        raise ValueError("chosen and rejected log-probs must have the same shape (B,)")
    labels = torch.cat([torch.ones_like(policy_chosen_logps, dtype=torch.bool),
                        torch.zeros_like(policy_rejected_logps, dtype=torch.bool)])
    ref = None
    if ref_chosen_logps is not None and ref_rejected_logps is not None:
        ref = torch.cat([ref_chosen_logps, ref_rejected_logps])
    return UnpairedBatch(torch.cat([policy_chosen_logps, policy_rejected_logps]), ref, labels)


def bco_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    labels: Tensor,
    *,
    beta: float,
    delta: float | Tensor,
) -> UnpairedLossOutput:
    """BCO (Jung et al. 2024): a binary classifier on the implicit reward r = β(log π - log π_ref)
    with a reward shift δ (the running mean of rewards, see `update_running_mean`):

        desirable: -log σ(r - δ);   undesirable: -log σ(-(r - δ))

    Shapes: (N,) each; delta scalar (detached). The paper's underlying-distribution-matching
    weights (a prompt classifier) are not included: pass per-row weights by multiplying `losses`.
    """
    _check_rows(policy_logps, ref_logps, labels)
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    labels = labels.bool()
    delta = torch.as_tensor(delta, dtype=policy_logps.dtype, device=policy_logps.device).detach()
    rewards = beta * (policy_logps - ref_logps)
    losses = torch.where(labels, -F.logsigmoid(rewards - delta), -F.logsigmoid(-(rewards - delta)))
    return UnpairedLossOutput(losses, rewards.detach(), labels, delta)


def update_running_mean(mean: float, count: int, values: Tensor) -> tuple[float, int]:
    """Exact running mean over every reward seen so far: (mean, count) + (N,) -> (mean', count + N).
    BCO's δ; the caller keeps the pair in its training state so a resumed run continues it."""
    n = values.numel()
    if n == 0:
        return mean, count
    total = count + n
    return mean + (float(values.detach().sum()) - n * mean) / total, total
