"""Direct preference losses (DPO family): one enum, one dispatch, one pure function per loss.

Every loss takes per-pair sequence log-probs summed over completion tokens (`*_logps`, shape (B,))
and returns per-pair losses (B,); the caller reduces (mean) and logs. Equations, papers and the
conventions that differ from TRL are in docs/paper_index.md.
Notation: h_c = policy_chosen_logps - ref_chosen_logps, h_r likewise, Δ = h_c - h_r, z = βΔ - m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from preftune.losses.spec import _MARGIN_LOSSES, _REFERENCE_FREE, LossMix, LossType
from preftune.losses.unpaired import kto_loss


@dataclass
class PreferenceLossOutput:
    """losses (B,) per pair, weighted; chosen_rewards, rejected_rewards (B,) detached implicit rewards
    (β times the per-response score the loss compares: h, h/length, or the average log-prob)."""

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor

    @property
    def loss(self) -> Tensor:
        return self.losses.mean()


# ---------------------------------------------------------------- the losses, one per method

def logistic_loss(logits: Tensor, target: Tensor | float = 1.0) -> Tensor:
    """-p log σ(z) - (1-p) log σ(-z); (B,) -> (B,). DPO (Rafailov et al. 2023, Eq. 7) at p = 1."""
    return -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits))


def ipo_loss(chosen_logratios: Tensor, rejected_logratios: Tensor, *, beta: float) -> Tensor:
    """IPO (Azar et al. 2023, Eq. 17): (h_c - h_r - 1/(2β))^2, β = τ; (B,) -> (B,)."""
    return (chosen_logratios - rejected_logratios - 1 / (2 * beta)) ** 2


def hinge_loss(logits: Tensor) -> Tensor:
    """SLiC-HF / RSO hinge (Zhao et al. 2023; Liu et al. 2023): max(0, 1 - z); (B,) -> (B,)."""
    return torch.relu(1 - logits)


def robust_loss(logits: Tensor, *, flip_rate: float) -> Tensor:
    """Robust DPO (Chowdhury et al. 2024), unbiased under label flips with rate ε:
    [(1-ε)(-log σ(z)) - ε(-log σ(-z))] / (1 - 2ε); (B,) -> (B,)."""
    return ((1 - flip_rate) * -F.logsigmoid(logits) + flip_rate * F.logsigmoid(-logits)) / (1 - 2 * flip_rate)


def orpo_loss(chosen_avg_logps: Tensor, rejected_avg_logps: Tensor, chosen_nll: Tensor, *, beta: float) -> Tensor:
    """ORPO (Hong et al. 2024, Eq. 6-7): L_SFT + λ(-log σ(log odds_c - log odds_r)), λ = β,
    odds(y) = P/(1-P) with P = exp(average token log-prob); (B,) -> (B,)."""
    # log(1 - e^x) blows up at x = 0 (a certain answer); clamping keeps the gradient finite.
    c, r = chosen_avg_logps.clamp(max=-1e-6), rejected_avg_logps.clamp(max=-1e-6)
    log_odds = (c - _log1mexp(c)) - (r - _log1mexp(r))
    return chosen_nll - beta * F.logsigmoid(log_odds)


def bco_pair_loss(chosen_rewards: Tensor, rejected_rewards: Tensor, *, delta: float | Tensor = 0.0) -> Tensor:
    """BCO on pairs (Jung et al. 2024): -log σ(r_c - δ) - log σ(-(r_r - δ)), r = βh; (B,) -> (B,)."""
    return -F.logsigmoid(chosen_rewards - delta) - F.logsigmoid(-(rejected_rewards - delta))


def apo_zero_loss(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """APO-zero (D'Oosterlinck et al. 2024, Eq. 7): 1 - σ(r_c) + σ(r_r), r = βh; (B,) -> (B,)."""
    return 1 - torch.sigmoid(chosen_rewards) + torch.sigmoid(rejected_rewards)


def apo_down_loss(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """APO-down (D'Oosterlinck et al. 2024, Eq. 8): σ(r_c) + 1 - σ(r_c - r_r), r = βh; (B,) -> (B,)."""
    return torch.sigmoid(chosen_rewards) + 1 - torch.sigmoid(chosen_rewards - rejected_rewards)


def sppo_hard_loss(chosen_logratios: Tensor, rejected_logratios: Tensor, *, beta: float) -> Tensor:
    """SPPO with hard win probabilities (Wu et al. 2024, Eq. 4.7 with P = 1 / 0):
    (h_c - 1/(2β))^2 + (h_r + 1/(2β))^2, η = 1/β; (B,) -> (B,)."""
    return (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2


def nca_pair_loss(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """NCA for pairs (Chen et al. 2024, K = 2):
    -log σ(r_c) - ½ log σ(-r_c) - ½ log σ(-r_r), r = βh; (B,) -> (B,)."""
    return -F.logsigmoid(chosen_rewards) - 0.5 * F.logsigmoid(-chosen_rewards) - 0.5 * F.logsigmoid(-rejected_rewards)


def exo_pair_loss(logits: Tensor, *, epsilon: float) -> Tensor:
    """EXO-pref (Ji et al. 2024, Eq. 16, K = 2): KL(q || p) with q = (σ(z), σ(-z)), p = (1-ε, ε);
    (B,) -> (B,)."""
    q_c, q_r = torch.sigmoid(logits), torch.sigmoid(-logits)
    log_q_c, log_q_r = F.logsigmoid(logits), F.logsigmoid(-logits)
    return q_c * (log_q_c - math.log1p(-epsilon)) + q_r * (log_q_r - math.log(epsilon))


def discopop_loss(logits: Tensor, *, tau: float = 0.05) -> Tensor:
    """DiscoPOP / log-ratio modulated loss (Lu et al. 2024, Eq. 5):
    (1 - σ(z/τ))(-log σ(z)) + σ(z/τ) e^{-z}; (B,) -> (B,)."""
    mix = torch.sigmoid(logits / tau)
    # e^{-z} overflows for very negative z where its weight σ(z/τ) is 0, and 0·inf = NaN; the clamp
    # changes nothing while σ(z/τ) underflows (z < -50 with τ <= 1).
    return (1 - mix) * -F.logsigmoid(logits) + mix * torch.exp(-logits.clamp(min=-50.0))


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - e^x) for x < 0, stable at both ends (Mächler 2012)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


# ---------------------------------------------------------------- the one dispatch

def _check(name: str, t: Tensor | None, b: int) -> None:
    if t is not None and tuple(t.shape) != (b,):
        raise ValueError(f"{name} must have shape ({b},), got {tuple(t.shape)}")


@dataclass(frozen=True)
class PreferenceLossParams:
    """The scalar settings of the DPO family, in one place (DPOConfig.loss_params() builds it).

    beta: β, the strength of the implicit KL (λ for ORPO, τ for IPO). label_smoothing: cDPO smoothing
    for sigmoid (and SimPO, length-normalised DPO), flip rate ε in [0, 0.5) for robust, ε in (0, 1)
    for exo_pair (required there). ipo_normalize_length divides h by the completion length (TRL's and
    the IPO authors' practice). simpo_gamma: SimPO's target margin γ; discopop_tau: DiscoPOP's τ;
    bco_delta: BCO-pair's reward shift δ; desirable/undesirable_weight: KTO's λ_D / λ_U.
    """

    beta: float = 0.1
    label_smoothing: float = 0.0
    ipo_normalize_length: bool = True
    simpo_gamma: float = 0.5
    discopop_tau: float = 0.05
    bco_delta: float = 0.0
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0


@dataclass(frozen=True)
class PairLossInputs:
    """Per-pair tensors a preference loss may read; every tensor (B,).

    *_logps: log-probs summed over completion tokens; lengths: completion token counts; margin (B,) or
    a scalar, in reward units, shifts the logit z = βΔ - m (LossType.accepts_margin losses); confidence
    in [0, 1] is a soft target (accepts_confidence losses); weights multiply any loss; chosen_nll is the
    caller's NLL of the chosen response (orpo, sft); kto_z0 the KTO reference point (kto).
    """

    policy_chosen_logps: Tensor
    policy_rejected_logps: Tensor
    ref_chosen_logps: Tensor | None = None
    ref_rejected_logps: Tensor | None = None
    chosen_lengths: Tensor | None = None
    rejected_lengths: Tensor | None = None
    margin: Tensor | float | None = None
    confidence: Tensor | None = None
    weights: Tensor | None = None
    chosen_nll: Tensor | None = None
    kto_z0: Tensor | float | None = None

    @property
    def has_reference(self) -> bool:
        return self.ref_chosen_logps is not None and self.ref_rejected_logps is not None


def _check_inputs(lt: LossType, x: PairLossInputs, p: PreferenceLossParams) -> None:
    """ValueError for a missing reference/length/NLL, a wrong shape, or an option `lt` does not take."""
    if x.policy_chosen_logps.dim() != 1:
        raise ValueError(f"policy_chosen_logps must be (B,), got {tuple(x.policy_chosen_logps.shape)}")
    b = x.policy_chosen_logps.shape[0]
    for name in ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps",
                 "chosen_lengths", "rejected_lengths", "confidence", "weights", "chosen_nll"):
        _check(name, getattr(x, name), b)
    if isinstance(x.margin, Tensor) and x.margin.dim() > 0:
        _check("margin", x.margin, b)
    if p.beta <= 0:
        raise ValueError(f"beta must be > 0, got {p.beta}")
    if lt.needs_reference and not x.has_reference:
        free = ", ".join(sorted(m.value for m in _REFERENCE_FREE))
        raise ValueError(f"loss {lt.value!r} needs ref_chosen_logps and ref_rejected_logps (reference-free: {free})")
    needs_len = lt.needs_lengths or (lt is LossType.IPO and p.ipo_normalize_length)
    if needs_len and (x.chosen_lengths is None or x.rejected_lengths is None):
        raise ValueError(f"loss {lt.value!r} needs chosen_lengths and rejected_lengths"
                         + (" (or ipo_normalize_length=False)" if lt is LossType.IPO else ""))
    if x.margin is not None and not lt.accepts_margin:
        ok = ", ".join(sorted(m.value for m in _MARGIN_LOSSES))
        raise ValueError(f"loss {lt.value!r} takes no margin; losses with a margin: {ok}")
    if x.confidence is not None and not lt.accepts_confidence:
        raise ValueError(f"loss {lt.value!r} takes no confidence target; pass it as weights instead")
    if lt in (LossType.ORPO, LossType.SFT) and x.chosen_nll is None:
        raise ValueError(f"loss {lt.value!r} needs chosen_nll (the SFT term computed by the caller)")
    _check_smoothing(lt, p.label_smoothing)


def preference_loss(loss_type: LossType | str, inputs: PairLossInputs,
                    params: PreferenceLossParams = PreferenceLossParams()) -> PreferenceLossOutput:
    """Per-pair loss of `loss_type` on `inputs` (tensors (B,)) with the scalar settings `params`.

    Raises ValueError for a missing reference/length/NLL and for options a loss does not take.
    """
    lt = LossType.from_name(loss_type)
    _check_inputs(lt, inputs, params)
    if not inputs.has_reference:  # one side given alone is ignored, as if neither was
        inputs = replace(inputs, ref_chosen_logps=None, ref_rejected_logps=None)
    losses, c_score, r_score = _dispatch(lt, inputs, params)
    if inputs.weights is not None:
        losses = losses * inputs.weights.to(losses.dtype)
    return PreferenceLossOutput(losses, (params.beta * c_score).detach(), (params.beta * r_score).detach())


def _check_smoothing(lt: LossType, eps: float) -> None:
    if lt is LossType.EXO_PAIR and not 0.0 < eps < 1.0:
        raise ValueError(f"exo_pair needs label_smoothing (ε) in (0, 1), got {eps}; the paper uses 1e-3")
    if lt is not LossType.EXO_PAIR and not 0.0 <= eps < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {eps}")
    if eps and not lt.accepts_label_smoothing:
        raise ValueError(f"loss {lt.value!r} takes no label_smoothing")


def _dispatch(lt: LossType, x: PairLossInputs, p: PreferenceLossParams) -> tuple[Tensor, Tensor, Tensor]:
    """Returns (losses, chosen_score, rejected_score), score = the quantity β multiplies."""
    pc, pr, rc, rr = x.policy_chosen_logps, x.policy_rejected_logps, x.ref_chosen_logps, x.ref_rejected_logps
    beta, label_smoothing, margin = p.beta, p.label_smoothing, x.margin
    if lt.needs_reference:
        c, r = pc - rc, pr - rr  # log-ratios h_c, h_r
    else:  # reference-free: scores are average log-probs (SimPO, ORPO) or log-ratios if given (SFT)
        c, r = (pc - rc, pr - rr) if rc is not None and lt is LossType.SFT else (pc, pr)
    if lt in (LossType.SIGMOID_NORM, LossType.SIMPO, LossType.ORPO) or (
            lt is LossType.IPO and p.ipo_normalize_length):
        c, r = c / x.chosen_lengths.clamp(min=1), r / x.rejected_lengths.clamp(min=1)
    z = beta * (c - r)
    if margin is not None:
        z = z - margin
    target = 1.0 if x.confidence is None else x.confidence.to(z.dtype)
    target = target * (1 - label_smoothing) + (1 - target) * label_smoothing

    if lt in (LossType.SIGMOID, LossType.SIGMOID_NORM):
        losses = logistic_loss(z, target)
    elif lt is LossType.SIMPO:  # Meng et al. 2024, Eq. 6: -log σ(β(avg_c - avg_r) - γ)
        losses = logistic_loss(z - p.simpo_gamma, target)
    elif lt is LossType.IPO:
        losses = ipo_loss(c, r, beta=beta)
    elif lt is LossType.HINGE:
        losses = hinge_loss(z)
    elif lt is LossType.ROBUST:
        losses = robust_loss(z, flip_rate=label_smoothing)
    elif lt is LossType.ORPO:
        losses = orpo_loss(c, r, x.chosen_nll, beta=beta)
    elif lt is LossType.BCO_PAIR:
        losses = bco_pair_loss(beta * c, beta * r, delta=p.bco_delta)
    elif lt is LossType.APO_ZERO:
        losses = apo_zero_loss(beta * c, beta * r)
    elif lt is LossType.APO_DOWN:
        losses = apo_down_loss(beta * c, beta * r)
    elif lt is LossType.SPPO_HARD:
        losses = sppo_hard_loss(c, r, beta=beta)
    elif lt is LossType.NCA_PAIR:
        losses = nca_pair_loss(beta * c, beta * r)
    elif lt is LossType.EXO_PAIR:
        losses = exo_pair_loss(z, epsilon=label_smoothing)
    elif lt is LossType.DISCOPOP:
        losses = discopop_loss(z, tau=p.discopop_tau)
    elif lt is LossType.SFT:
        losses = x.chosen_nll
    elif lt is LossType.KTO:
        if x.kto_z0 is None:
            raise ValueError("loss 'kto' needs kto_z0 (see preftune.losses.unpaired.kto_reference_point)")
        losses = _kto_on_pairs(pc, pr, rc, rr, beta, x.kto_z0, p.desirable_weight, p.undesirable_weight)
    else:  # pragma: no cover - every member is handled above
        raise AssertionError(lt)
    return losses, c, r


def _kto_on_pairs(pc, pr, rc, rr, beta, z0, w_d, w_u) -> Tensor:
    """KTO on pairs split into 2B unpaired rows; the per-pair value is the mean of its two rows,
    so the batch mean equals KTO's mean over the 2B rows."""
    out = kto_loss(torch.cat([pc, pr]), torch.cat([rc, rr]),
                   torch.cat([torch.ones_like(pc, dtype=torch.bool), torch.zeros_like(pr, dtype=torch.bool)]),
                   beta=beta, z0=z0, desirable_weight=w_d, undesirable_weight=w_u)
    return out.losses.view(2, -1).mean(0)


def mixed_preference_loss(mix: LossMix, inputs: PairLossInputs,
                          params: PreferenceLossParams = PreferenceLossParams()) -> PreferenceLossOutput:
    """Σ_i w_i preference_loss(t_i, ...).losses + sft_weight · chosen_nll; rewards from the first term.

    margin, confidence and label_smoothing reach only the terms that accept them (a row margin must
    not break an IPO term mixed with DPO). RPO (Pang et al. 2024) is LossMix(((SIGMOID, 1),),
    sft_weight=α) with chosen_nll the per-token mean NLL of chosen.
    """
    if mix.sft_weight and inputs.chosen_nll is None:
        raise ValueError("LossMix with sft_weight > 0 needs chosen_nll")
    total, first = None, None
    for lt, w in mix.terms:
        x = replace(inputs, margin=inputs.margin if lt.accepts_margin else None,
                    confidence=inputs.confidence if lt.accepts_confidence else None)
        p = params if lt.accepts_label_smoothing else replace(params, label_smoothing=0.0)
        out = preference_loss(lt, x, p)
        first = first or out
        total = w * out.losses if total is None else total + w * out.losses
    if mix.sft_weight:
        nll = inputs.chosen_nll if inputs.weights is None else inputs.chosen_nll * inputs.weights
        total = total + mix.sft_weight * nll
    return PreferenceLossOutput(total, first.chosen_rewards, first.rejected_rewards)
