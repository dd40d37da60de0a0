"""Reward-model losses on pairs: Bradley-Terry with margins, centering, soft labels, ties,
several heads and ensembles. Pure tensor functions (torch only); papers in docs/paper_index.md.

Vocabulary: B = pairs, K = reward heads, M = ensemble members. ``chosen_rewards`` and
``rejected_rewards`` are the scalar scores the reward model gives each response of a pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import Tensor

# Per-head verdicts of a multi-objective row (the data's `attributes`): which response won on
# that dimension. MISSING mirrors the usual ignore_index: the row does not train that head.
VERDICT_CHOSEN = 1
VERDICT_REJECTED = -1
VERDICT_TIE = 0
VERDICT_MISSING = -100


class TieMode(Enum):
    """What a pair labelled as a tie does to the loss. A tie is never counted as a win."""

    SKIP = "skip"                # excluded from loss and accuracy; counted in `num_ties`
    HALF = "half"                # Bradley-Terry with target 1/2: -(log σ(Δ) + log σ(-Δ)) / 2
    RAO_KUPPER = "rao_kupper"    # Rao & Kupper (1967): explicit tie probability with θ = exp(a)

    @classmethod
    def from_name(cls, name: str | TieMode) -> TieMode:
        if isinstance(name, cls):
            return name
        try:
            return cls(str(name).lower())
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown tie mode {name!r}; valid: {valid}") from None


@dataclass
class PairwiseLossOutput:
    """Result of a pairwise reward loss.

    loss:     () mean of `losses` over counted pairs (0 when no pair counts).
    losses:   (B,) per-pair loss, already weighted; 0 where `counted` is False.
    margins:  (B,) r_chosen - r_rejected (detached), before any target margin.
    correct:  (B,) bool, margin > 0 on non-tie pairs; False on ties (ties are reported apart).
    is_tie:   (B,) bool, the label says tie.
    counted:  (B,) bool, the pair contributes to `loss`.
    """

    loss: Tensor
    losses: Tensor
    margins: Tensor
    correct: Tensor
    is_tie: Tensor
    counted: Tensor

    @property
    def num_ties(self) -> int:
        return int(self.is_tie.sum())

    @property
    def accuracy(self) -> float:
        """Share of non-tie pairs where chosen scores higher; NaN when every pair is a tie."""
        decided = ~self.is_tie
        n = int(decided.sum())
        return float(self.correct[decided].float().mean()) if n else float("nan")


def _log_tie_prob(delta: Tensor, log_theta: float) -> Tensor:
    """log P(tie) under Rao-Kupper: log(1 - σ(Δ - a) - σ(-Δ - a)) = log(σ(a - Δ) - σ(-a - Δ))."""
    upper = F.logsigmoid(log_theta - delta)
    lower = F.logsigmoid(-log_theta - delta)
    # log(e^u - e^l) = u + log(1 - e^(l - u)); l < u whenever a > 0.
    return upper + torch.log1p(-torch.exp(lower - upper))


def bradley_terry_loss(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    *,
    margin: Tensor | float | None = None,
    confidence: Tensor | None = None,
    label_smoothing: float = 0.0,
    tie_mask: Tensor | None = None,
    tie_mode: TieMode | str = TieMode.SKIP,
    rao_kupper_log_theta: float = 1.0,
    weights: Tensor | None = None,
    center_coef: float = 0.0,
) -> PairwiseLossOutput:
    """Bradley-Terry reward-model loss (Bradley & Terry 1952; Ouyang et al. 2022, Eq. 1).

        Δ = r_chosen - r_rejected - m                       (m: Llama 2's margin, Eq. 2)
        p = c (1 - ε) + (1 - c) ε                           (soft target; c = confidence, ε = smoothing)
        loss_i = w_i [-p log σ(Δ) - (1 - p) log σ(-Δ)]
        loss   = Σ_counted loss_i / #counted + η mean_counted((r_c + r_r)^2)   (Eisenstein et al. 2023)

    Shapes: chosen_rewards, rejected_rewards (B,); margin () or (B,); confidence (B,) in [0, 1]
    (probability that chosen is better); tie_mask (B,) bool; weights (B,) >= 0.
    Ties: SKIP drops them from the loss (`counted` False); HALF uses target p = 1/2 (minimum at Δ = 0);
    RAO_KUPPER uses P(c ≻ r) = σ(Δ - a), P(tie) = 1 - σ(Δ - a) - σ(-Δ - a) with a = log θ > 0, so
    non-tie pairs also see the shifted logit Δ - a. The margin m is not applied to tie pairs.
    The centering term uses the raw rewards of counted pairs.
    """
    if chosen_rewards.shape != rejected_rewards.shape or chosen_rewards.dim() != 1:
        raise ValueError(
            f"chosen_rewards and rejected_rewards must both be (B,), got "
            f"{tuple(chosen_rewards.shape)} and {tuple(rejected_rewards.shape)}"
        )
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    mode = TieMode.from_name(tie_mode)
    if mode is TieMode.RAO_KUPPER and rao_kupper_log_theta <= 0:
        raise ValueError(f"rao_kupper_log_theta must be > 0, got {rao_kupper_log_theta}")
    raw = chosen_rewards - rejected_rewards  # (B,)
    is_tie = torch.zeros_like(raw, dtype=torch.bool) if tie_mask is None else tie_mask.bool()
    if margin is None:
        delta = raw
    else:
        delta = raw - torch.where(is_tie, torch.zeros_like(raw), torch.zeros_like(raw) + margin)

    target = torch.ones_like(raw) if confidence is None else confidence.to(raw.dtype)
    if confidence is not None and bool(((target < 0) | (target > 1)).any()):
        raise ValueError("confidence must lie in [0, 1]")
    target = target * (1 - label_smoothing) + (1 - target) * label_smoothing

    if mode is TieMode.RAO_KUPPER:
        a = rao_kupper_log_theta
        win = -(target * F.logsigmoid(delta - a) + (1 - target) * F.logsigmoid(-delta - a))
        tie = -_log_tie_prob(delta, a)
    else:
        win = -(target * F.logsigmoid(delta) + (1 - target) * F.logsigmoid(-delta))
        tie = -0.5 * (F.logsigmoid(delta) + F.logsigmoid(-delta))
    losses = torch.where(is_tie, tie, win)
    counted = ~is_tie if mode is TieMode.SKIP else torch.ones_like(is_tie)
    if weights is not None:
        losses = losses * weights.to(losses.dtype)
    losses = torch.where(counted, losses, torch.zeros_like(losses))
    n = counted.sum().clamp(min=1)
    loss = losses.sum() / n
    if center_coef:
        sq = (chosen_rewards + rejected_rewards) ** 2
        loss = loss + center_coef * torch.where(counted, sq, torch.zeros_like(sq)).sum() / n
    margins = raw.detach()
    return PairwiseLossOutput(
        loss=loss, losses=losses, margins=margins, correct=(margins > 0) & ~is_tie,
        is_tie=is_tie, counted=counted,
    )


@dataclass
class MultiHeadLossOutput:
    """Result of `multi_head_loss`.

    loss:          () mean over present (row, head) entries (pooled over heads).
    losses:        (B, K) per-entry loss; 0 where the entry does not count.
    head_losses:   (K,) mean loss of each head over its present entries (NaN if none).
    head_accuracy: (K,) accuracy of each head over its decided (non-tie, present) entries (NaN if none).
    counted:       (B, K) bool, the entry trains its head.
    num_ties:      (K,) ties per head (reported apart, never wins).
    """

    loss: Tensor
    losses: Tensor
    head_losses: Tensor
    head_accuracy: Tensor
    counted: Tensor
    num_ties: Tensor


def multi_head_loss(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    verdicts: Tensor,
    *,
    tie_mode: TieMode | str = TieMode.SKIP,
    head_weights: Tensor | None = None,
) -> MultiHeadLossOutput:
    """Bradley-Terry per named head, trained only where the row states that head's verdict.

        Δ_ik = s_ik(chosen) - s_ik(rejected), oriented by the verdict v_ik ∈ {+1, -1, 0, MISSING}:
        loss_ik = -log σ(v_ik Δ_ik) for v = ±1; tie per `tie_mode` for v = 0; nothing for MISSING.
        loss = Σ_present h_k loss_ik / Σ_present h_k

    Shapes: chosen_rewards, rejected_rewards, verdicts (B, K); head_weights (K,) (default ones).
    Pooling over all present entries (rather than per-head means) keeps the loss linear in rows,
    so gradient accumulation over micro-batches matches one large batch. Rao-Kupper ties are
    not offered per head (use SKIP or HALF).
    """
    if chosen_rewards.shape != rejected_rewards.shape or chosen_rewards.shape != verdicts.shape:
        raise ValueError(
            f"chosen_rewards, rejected_rewards and verdicts must share shape (B, K), got "
            f"{tuple(chosen_rewards.shape)}, {tuple(rejected_rewards.shape)}, {tuple(verdicts.shape)}"
        )
    known = {VERDICT_CHOSEN, VERDICT_REJECTED, VERDICT_TIE, VERDICT_MISSING}
    bad = set(torch.unique(verdicts).tolist()) - known
    if bad:
        raise ValueError(f"verdicts must be in {sorted(known)}, found {sorted(bad)}")
    mode = TieMode.from_name(tie_mode)
    if mode is TieMode.RAO_KUPPER:
        raise ValueError("multi_head_loss supports tie modes 'skip' and 'half'")
    present = verdicts != VERDICT_MISSING
    is_tie = verdicts == VERDICT_TIE
    sign = torch.where(verdicts == VERDICT_REJECTED, -1.0, 1.0).to(chosen_rewards.dtype)
    delta = sign * (chosen_rewards - rejected_rewards)  # (B, K), oriented towards the winner
    win = -F.logsigmoid(delta)
    tie = -0.5 * (F.logsigmoid(delta) + F.logsigmoid(-delta))
    counted = present & ~is_tie if mode is TieMode.SKIP else present
    losses = torch.where(counted, torch.where(is_tie, tie, win), torch.zeros_like(win))
    h = torch.ones(verdicts.shape[1], dtype=win.dtype) if head_weights is None else head_weights.to(win.dtype)
    w = counted.to(win.dtype) * h  # (B, K)
    loss = (losses * h).sum() / w.sum().clamp(min=1e-12)
    per_head_n = counted.sum(0)
    head_losses = losses.sum(0) / per_head_n.to(win.dtype)  # 0/0 = NaN for a head with no entries
    decided = present & ~is_tie
    correct = (delta.detach() > 0) & decided
    head_accuracy = correct.sum(0).to(win.dtype) / decided.sum(0).to(win.dtype)
    return MultiHeadLossOutput(
        loss=loss, losses=losses, head_losses=head_losses, head_accuracy=head_accuracy,
        counted=counted, num_ties=(is_tie & present).sum(0),
    )


def scalarize(head_rewards: Tensor, weights: Tensor) -> Tensor:
    """Weighted sum of K head rewards: (..., K) x (K,) -> (...). Weights are the user's trade-off."""
    if head_rewards.shape[-1] != weights.shape[-1]:
        raise ValueError(f"{head_rewards.shape[-1]} heads but {weights.shape[-1]} weights")
    return (head_rewards * weights.to(head_rewards.dtype)).sum(-1)


def ensemble_stats(member_rewards: Tensor, *, unbiased: bool = False) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation over ensemble members: (M, B) -> ((B,), (B,)).

    Population std by default (a single member gives 0, not NaN); `unbiased=True` divides by M - 1.
    The std is the per-response uncertainty used by over-optimisation guards.
    """
    if member_rewards.dim() < 1 or member_rewards.shape[0] < 1:
        raise ValueError("member_rewards must be (M, B) with M >= 1")
    if unbiased and member_rewards.shape[0] < 2:
        raise ValueError("unbiased std needs at least 2 members")
    return member_rewards.mean(0), member_rewards.std(0, correction=1 if unbiased else 0)
