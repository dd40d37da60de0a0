"""Online RL math as pure tensor functions: group advantages (GRPO, RLOO), clipped policy losses
(GRPO, Dr. GRPO, DAPO, PPO), GAE and the clipped value loss, KL to the reference (in the reward or
in the loss, fixed or adaptive coefficient) and the handling of truncated completions.

N = completions, P prompts x G samples with a prompt's samples contiguous (rows p*G .. p*G+G-1, the
order of models.rollout.Rollout); T = completion tokens, right-padded; `mask` (N, T) bool marks the
real completion tokens. Per-token log-probs of the sampled tokens: `logps` under the policy being
trained, `old_logps` under the policy that sampled them (detached), `ref_logps` under the reference.
Rewards may hold NaN for a completion no reward scored ("skip"): it is left out of every group
statistic and gets advantage 0. Papers, equations and the TRL equivalences: docs/paper_index.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from preftune.ops.stats import kl_k1, kl_k2, kl_k3, masked_mean, masked_whiten


class _Named(Enum):
    @classmethod
    def from_name(cls, name):
        if isinstance(name, cls):
            return name
        try:
            return cls(str(name).strip().lower().replace("-", "_"))
        except ValueError:
            raise ValueError(f"unknown {cls.__name__} {name!r}; valid: {', '.join(m.value for m in cls)}") from None


class ScaleRewards(_Named):
    GROUP = "group"  # divide by the group's std (GRPO)
    BATCH = "batch"  # divide by the std of the whole batch (group mean still subtracted)
    NONE = "none"    # no division (Dr. GRPO)


class PolicyLossType(_Named):
    GRPO = "grpo"        # mean over each completion's tokens, then over completions
    DR_GRPO = "dr_grpo"  # token sum over a constant N * max_completion_length
    DAPO = "dapo"        # token sum over the batch's token count (token-level mean); PPO's reduction too


class KLEstimator(_Named):
    K1 = "k1"
    K2 = "k2"
    K3 = "k3"


class TruncationMode(_Named):
    NONE = "none"        # truncated completions train like any other
    MASK = "mask"        # no loss on them (DAPO's overlong filtering); their reward still enters group stats
    PENALTY = "penalty"  # their reward is lowered by a fixed penalty (a missing-EOS penalty)


# ---------------------------------------------------------------- group advantages

@dataclass(frozen=True)
class GroupAdvantages:
    """advantages (N,) one per completion (0 for a NaN reward); tied (P,) bool, True for a group that
    carries no signal (all its scored rewards equal, or fewer than 2 scored), so its advantages are 0."""

    advantages: Tensor
    tied: Tensor

    @property
    def num_tied(self) -> int:
        return int(self.tied.sum())


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be (N,), got {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    return rewards.view(-1, group_size)  # (P, G)


def _group_moments(grouped: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """valid (P, G), count (P,), mean (P,), unbiased variance (P,) (0 when count < 2), NaN = missing."""
    valid = ~torch.isnan(grouped)
    x = torch.where(valid, grouped, torch.zeros_like(grouped))
    count = valid.sum(1)
    mean = x.sum(1) / count.clamp(min=1)
    sq = ((x - mean[:, None]) ** 2 * valid).sum(1)
    var = torch.where(count > 1, sq / (count - 1).clamp(min=1), torch.zeros_like(sq))
    return valid, count, mean, var


def tied_groups(rewards: Tensor, group_size: int, *, atol: float = 0.0) -> Tensor:
    """(N,) -> (P,) bool: the groups whose scored rewards span at most `atol` (or that have < 2 scored).
    GRPO and RLOO give every completion of such a group advantage 0: no gradient, only the KL term."""
    g = _grouped(rewards, group_size)
    valid, count, _, _ = _group_moments(g)
    hi = torch.where(valid, g, torch.full_like(g, -torch.inf)).amax(1)
    lo = torch.where(valid, g, torch.full_like(g, torch.inf)).amin(1)
    return (count < 2) | (hi - lo <= atol)


def grpo_advantages(rewards: Tensor, group_size: int, *, scale_rewards: str | ScaleRewards = "group",
                    eps: float = 1e-4, atol: float = 0.0) -> GroupAdvantages:
    """GRPO outcome-supervision advantages (Shao et al. 2024, DeepSeekMath, §4.1.2):

        A_i = (r_i - mean(r_group)) / (std + eps)

    std: the group's (`group`, the paper), the whole batch's (`batch`), or none (`none`: Dr. GRPO,
    Liu et al. 2025, §3.2). std is the unbiased (n - 1) estimate over scored rewards; eps = 1e-4 is
    added to the std (both as TRL). Shapes: rewards (N,) -> advantages (N,), tied (P,).
    """
    scale = ScaleRewards.from_name(scale_rewards)
    g = _grouped(rewards, group_size)
    valid, _, mean, var = _group_moments(g)
    adv = g - mean[:, None]
    if scale is not ScaleRewards.NONE:
        batch_var = _group_moments(g.reshape(1, -1))[3]
        std = var.sqrt()[:, None] if scale is ScaleRewards.GROUP else batch_var.sqrt()
        # a tied group has deviations exactly 0: keep them 0 (not 0/0) when eps = 0
        adv = adv / torch.where(std + eps > 0, std + eps, torch.ones_like(std))
    adv = torch.where(valid, adv, torch.zeros_like(adv))
    return GroupAdvantages(adv.reshape(-1), tied_groups(rewards, group_size, atol=atol))


def rloo_advantages(rewards: Tensor, group_size: int, *, atol: float = 0.0) -> GroupAdvantages:
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024, Eq. 5): each completion's
    baseline is the mean reward of the *other* k - 1 samples of its prompt,

        A_i = r_i - (Σ_j r_j - r_i) / (k - 1)   ( = k/(k-1) · (r_i - mean) )

    k = scored samples of the group (NaN rewards left out); a group with k < 2 gets 0.
    Shapes: rewards (N,) -> advantages (N,), tied (P,). Needs group_size >= 2.
    """
    if group_size < 2:
        raise ValueError(f"RLOO needs at least 2 samples per prompt, got group_size={group_size}")
    g = _grouped(rewards, group_size)
    valid, count, mean, _ = _group_moments(g)
    total = (mean * count)[:, None]
    x = torch.where(valid, g, torch.zeros_like(g))
    adv = x - (total - x) / (count[:, None] - 1).clamp(min=1)
    adv = torch.where(valid & (count[:, None] >= 2), adv, torch.zeros_like(adv))
    return GroupAdvantages(adv.reshape(-1), tied_groups(rewards, group_size, atol=atol))


# ---------------------------------------------------------------- clipped policy losses

@dataclass(frozen=True)
class PolicyLossOutput:
    """loss () to backpropagate; all others () detached, masked token means: clip_low = share of tokens
    where the lower clip binds (ratio < 1 - eps_low, A < 0), clip_high (ratio > 1 + eps_high, A > 0),
    clip_region = either; kl = mean per-token KL passed in (0 if none)."""

    loss: Tensor
    clip_low: Tensor
    clip_high: Tensor
    clip_region: Tensor
    kl: Tensor


def policy_loss(logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor, *,
                loss_type: str | PolicyLossType = "grpo", eps_low: float = 0.2, eps_high: float | None = None,
                per_token_kl: Tensor | None = None, kl_coef: float = 0.0,
                max_completion_length: int | None = None, normalizer: float | Tensor | None = None,
                ) -> PolicyLossOutput:
    """The clipped surrogate with ratio ρ_t = exp(logps_t - old_logps_t) (PPO, Schulman et al. 2017,
    Eq. 7), per token

        l_t = -min(ρ_t A, clip(ρ_t, 1 - eps_low, 1 + eps_high) A) + kl_coef · KL_t

    reduced by `loss_type` (a sum divided by a normaliser; `normalizer` overrides the default so that
    the caller can pass the global value under gradient accumulation or data parallelism):
      grpo     Σ_i (Σ_t l_it / |o_i|) / N            GRPO, Shao et al. 2024, Eq. 3 (default N)
      dr_grpo  Σ_it l_it / (N · max_completion_length)  Dr. GRPO, Liu et al. 2025, §3.2
      dapo     Σ_it l_it / Σ_i |o_i|                 DAPO, Yu et al. 2025, §3.3 (token-level mean)
    eps_high defaults to eps_low (DAPO's clip-higher: eps_high > eps_low, 0.28 vs 0.2 in the paper).
    Shapes: logps, old_logps, mask (N, T); advantages (N,) or (N, T); per_token_kl (N, T) or None.
    """
    kind = PolicyLossType.from_name(loss_type)
    eps_high = eps_low if eps_high is None else eps_high
    if logps.dim() != 2 or logps.shape != old_logps.shape or logps.shape != mask.shape:
        raise ValueError(f"logps, old_logps and mask must all be (N, T), got {tuple(logps.shape)}, "
                         f"{tuple(old_logps.shape)}, {tuple(mask.shape)}")
    if eps_low < 0 or eps_high < 0:
        raise ValueError(f"clip ranges must be >= 0, got eps_low={eps_low}, eps_high={eps_high}")
    if advantages.shape not in (logps.shape[:1], logps.shape):
        raise ValueError(f"advantages must be (N,) or (N, T) = {tuple(logps.shape)}, got {tuple(advantages.shape)}")
    adv = advantages[:, None] if advantages.dim() == 1 else advantages  # (N, 1) or (N, T)
    m = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps.detach())  # (N, T)
    per_token = -torch.min(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    if per_token_kl is not None and kl_coef:
        per_token = per_token + kl_coef * per_token_kl
    if kind is PolicyLossType.GRPO:
        per_seq = (per_token * m).sum(1) / m.sum(1).clamp(min=1)
        loss = per_seq.sum() / (normalizer if normalizer is not None else logps.shape[0])
    else:
        if normalizer is None and kind is PolicyLossType.DR_GRPO:
            if max_completion_length is None:
                raise ValueError("dr_grpo needs max_completion_length (its constant normaliser N * L)")
            normalizer = logps.shape[0] * max_completion_length
        elif normalizer is None:
            normalizer = m.sum().clamp(min=1)
        loss = (per_token * m).sum() / normalizer
    with torch.no_grad():
        low = (ratio < 1 - eps_low) & (adv < 0)
        high = (ratio > 1 + eps_high) & (adv > 0)
        kl = masked_mean(per_token_kl, mask) if per_token_kl is not None else logps.new_zeros(())
        return PolicyLossOutput(loss, masked_mean(low.to(m.dtype), mask), masked_mean(high.to(m.dtype), mask),
                                masked_mean((low | high).to(m.dtype), mask), kl)


def ppo_policy_loss(logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor, *,
                    clip_range: float = 0.2, normalizer: float | Tensor | None = None) -> PolicyLossOutput:
    """PPO's clipped policy loss on per-token advantages (Schulman et al. 2017, Eq. 7; Ziegler et al.
    2019 for LMs): the symmetric clip, masked mean over tokens. advantages (N, T) from `gae`."""
    return policy_loss(logps, old_logps, advantages, mask, loss_type=PolicyLossType.DAPO,
                       eps_low=clip_range, eps_high=clip_range, normalizer=normalizer)


# ---------------------------------------------------------------- PPO: GAE and the value loss

@dataclass(frozen=True)
class GAEOutput:
    """advantages (N, T), whitened over the mask when asked; returns (N, T) = raw advantages + values
    (the value targets, never whitened). Both 0 outside the mask; both detached."""

    advantages: Tensor
    returns: Tensor


def gae(token_rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float = 1.0, lam: float = 0.95,
        whiten: bool = True) -> GAEOutput:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv 1506.02438, Eq. 16):

        δ_t = r_t + γ V_{t+1} - V_t,   A_t = Σ_l (γλ)^l δ_{t+l}

    over the real tokens of each row; the step after a row's last real token is terminal (V = 0).
    Masked positions (padding, or tokens the policy did not write, e.g. tool output) are skipped:
    their reward and value are ignored and the next real token follows directly.
    Shapes: token_rewards, values, mask (N, T) -> GAEOutput of (N, T).
    """
    if token_rewards.shape != values.shape or token_rewards.shape != mask.shape or token_rewards.dim() != 2:
        raise ValueError(f"token_rewards, values and mask must all be (N, T), got {tuple(token_rewards.shape)}, "
                         f"{tuple(values.shape)}, {tuple(mask.shape)}")
    r, v, keep = token_rewards.detach(), values.detach(), mask.bool()
    adv = torch.zeros_like(r)
    next_value = torch.zeros_like(r[:, 0])  # (N,) V of the next real token, 0 past the end
    next_adv = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):
        a = r[:, t] + gamma * next_value - v[:, t] + gamma * lam * next_adv
        adv[:, t] = torch.where(keep[:, t], a, torch.zeros_like(a))
        next_value = torch.where(keep[:, t], v[:, t], next_value)
        next_adv = torch.where(keep[:, t], a, next_adv)
    m = keep.to(r.dtype)
    returns = (adv + v) * m
    if whiten:
        adv = masked_whiten(adv, keep) * m
    return GAEOutput(adv, returns)


@dataclass(frozen=True)
class ValueLossOutput:
    """loss () to backpropagate; clip_fraction () detached share of tokens where the clipped error won."""

    loss: Tensor
    clip_fraction: Tensor


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, *,
                       clip_range: float = 0.2) -> ValueLossOutput:
    """PPO's clipped value loss (as in OpenAI baselines' ppo2; discussed by Engstrom et al. 2020,
    arXiv 2005.12729, §3), a masked token mean of

        ½ max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)

    Shapes: values (grad), old_values, returns, mask (N, T)."""
    if values.shape != old_values.shape or values.shape != returns.shape or values.shape != mask.shape:
        raise ValueError("values, old_values, returns and mask must have the same (N, T) shape")
    old, target = old_values.detach(), returns.detach()
    unclipped = (values - target) ** 2
    clipped = (old + (values - old).clamp(-clip_range, clip_range) - target) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        frac = masked_mean((clipped > unclipped).to(values.dtype), mask)
    return ValueLossOutput(loss, frac)


# ---------------------------------------------------------------- KL to the reference

def kl_penalty(logps: Tensor, ref_logps: Tensor, estimator: str | KLEstimator = "k3") -> Tensor:
    """Per-token estimate of KL(π || π_ref) at tokens sampled from π (Schulman 2020, "Approximating
    KL Divergence"): k1 = log π - log π_ref (unbiased, can be < 0), k2 = k1²/2 (biased, >= 0),
    k3 = (ρ - 1) - log ρ with ρ = π_ref/π (unbiased, >= 0; GRPO's Eq. 4). Elementwise, any shape.
    As a loss term k1's expected gradient is 0 on-policy (E_π[∇ log π] = 0): use it in the reward."""
    kind = KLEstimator.from_name(estimator)
    fn = {KLEstimator.K1: kl_k1, KLEstimator.K2: kl_k2, KLEstimator.K3: kl_k3}[kind]
    return fn(logps, ref_logps)


def token_rewards_with_kl(scores: Tensor, per_token_kl: Tensor, mask: Tensor, *, kl_coef: float) -> Tensor:
    """Per-token rewards for PPO (Ziegler et al. 2019, Eq. 2 spread over tokens): -kl_coef · KL_t on each
    real token, plus the sequence score on the last real token. (N,), (N, T), (N, T) -> (N, T).
    A row with no real token receives nothing (it carries no loss either)."""
    m = mask.bool()
    rewards = torch.where(m, -kl_coef * per_token_kl.detach(), torch.zeros_like(per_token_kl))
    positions = torch.arange(m.shape[1], device=m.device)
    last = torch.where(m, positions, -1).amax(1)  # (N,) index of the last real token, -1 if none
    has = last >= 0
    rows = torch.arange(m.shape[0], device=m.device)[has]
    return rewards.index_put((rows, last[has]), scores[has].to(rewards.dtype), accumulate=True)


def sequence_rewards_with_kl(scores: Tensor, per_token_kl: Tensor, mask: Tensor, *, kl_coef: float) -> Tensor:
    """Sequence rewards with the KL penalty summed over the completion (RLOO, Ahmadian et al. 2024):
    r - kl_coef · Σ_t KL_t. (N,), (N, T), (N, T) -> (N,); equals token_rewards_with_kl(...).sum(1)."""
    return scores - kl_coef * (per_token_kl.detach() * mask.to(per_token_kl.dtype)).sum(1)


class KLController:
    """The KL coefficient β: fixed (target=None) or adaptive (Ziegler et al. 2019, §2.2):

        e = clip(KL / target - 1, -0.2, 0.2),   β ← β (1 + e · n / horizon)

    with n = samples in the batch the KL was measured on (the paper's K_β = n / horizon; 0.1 there).
    `state_dict()` holds plain floats (JSON-serialisable) so a resumed run continues the same β."""

    def __init__(self, coef: float, target: float | None = None, horizon: float = 10000.0):
        if coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {coef}")
        if target is not None and target <= 0:
            raise ValueError(f"kl_target must be > 0, got {target}")
        if horizon <= 0:
            raise ValueError(f"kl_horizon must be > 0, got {horizon}")
        self.coef, self.target, self.horizon = float(coef), target, float(horizon)

    def update(self, kl: float, num_samples: int) -> float:
        """Feed the mean sequence KL of the last batch; returns the new β (unchanged when fixed)."""
        if self.target is not None:
            error = min(max(float(kl) / self.target - 1.0, -0.2), 0.2)
            self.coef *= 1.0 + error * num_samples / self.horizon
        return self.coef

    def state_dict(self) -> dict:
        return {"coef": self.coef, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        if state.get("target") != self.target or float(state.get("horizon", -1)) != self.horizon:
            raise ValueError(f"the saved KL controller (target={state.get('target')}, horizon={state.get('horizon')}) "
                             f"does not match this run's (target={self.target}, horizon={self.horizon})")
        self.coef = float(state["coef"])


# ---------------------------------------------------------------- truncated completions

def apply_truncation(mode: str | TruncationMode, rewards: Tensor, mask: Tensor, truncated: Tensor, *,
                     penalty: float = 0.0) -> tuple[Tensor, Tensor]:
    """Completions that hit max_new_tokens without a stop token: `mask` drops them from the loss
    (DAPO, Yu et al. 2025, §3.4 overlong filtering), `penalty` subtracts `penalty` from their reward,
    `none` leaves both alone. (N,), (N, T), (N,) bool -> (rewards (N,), mask (N, T))."""
    kind = TruncationMode.from_name(mode)
    if truncated.shape != rewards.shape or mask.shape[:1] != rewards.shape:
        raise ValueError(f"rewards (N,), mask (N, T) and truncated (N,) disagree: {tuple(rewards.shape)}, "
                         f"{tuple(mask.shape)}, {tuple(truncated.shape)}")
    truncated = truncated.bool()
    if kind is TruncationMode.MASK:
        return rewards, mask.bool() & ~truncated[:, None]
    if kind is TruncationMode.PENALTY:
        return rewards - penalty * truncated.to(rewards.dtype), mask
    return rewards, mask
