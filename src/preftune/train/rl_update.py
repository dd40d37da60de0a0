"""Online RL between the rollouts and the optimiser: reference and old log-probs, the KL placement,
advantages (GRPO / RLOO groups, PPO's GAE), online DPO's pairs, and each micro-batch's loss.

The math is in preftune.losses.rl and losses.preference; this module feeds it. Normalisers are GLOBAL
(every micro-batch of the step, on every process), so 1 process x 2 accumulation slots and 2 processes x
1 slot compute the same update.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch

from preftune.losses.preference import PairLossInputs, PreferenceLossParams, mixed_preference_loss
from preftune.losses.rl import (
    KLController,
    clipped_value_loss,
    gae,
    grpo_advantages,
    kl_penalty,
    policy_loss,
    ppo_policy_loss,
    rloo_advantages,
    sequence_rewards_with_kl,
    token_rewards_with_kl,
)
from preftune.losses.spec import LossMix
from preftune.models.forward import token_logps_and_values
from preftune.train.configs import RLConfig
from preftune.train.plan import MetricSums
from preftune.train.rl_rollout import RolloutBatch


class RLModule(torch.nn.Module):
    """forward(batch) -> (token log-probs (num tokens,), values or None): the policy (and PPO's value
    head) behind one module, so that DDP sees every trained parameter in one forward."""

    def __init__(self, policy, value_head: torch.nn.Module | None, chunk_size: int, temperature: float):
        super().__init__()
        self.policy, self.value_head = policy, value_head
        self.chunk_size, self.temperature = chunk_size, temperature

    def forward(self, batch):
        return token_logps_and_values(self.policy, batch, self.chunk_size, self.temperature, self.value_head)


@dataclass
class Reference:
    mode: str          # none | adapter (LoRA off) | model (a frozen copy)
    model: Any = None


@dataclass
class RLStep:
    """What the update needs besides the rollouts: settings, modules, the KL coefficient, the pad id."""
    cfg: RLConfig
    module: Any            # the prepared RLModule
    ref: Reference
    kl: KLController
    pad_id: int
    accelerator: Any

    @property
    def inner(self) -> RLModule:
        return self.accelerator.unwrap_model(self.module)


def _logps(step: RLStep, rb: RolloutBatch, model=None, values: bool = False):
    """(N, L) token log-probs (and values) of the rollouts under `model` (default: the policy), no grad."""
    inner = step.inner
    batch = rb.batch(step.pad_id)
    with torch.no_grad():
        tok, val = token_logps_and_values(model if model is not None else inner.policy, batch, inner.chunk_size,
                                          inner.temperature, inner.value_head if values else None)
    seg = batch.gather_segment
    return rb.padded(tok, seg), (rb.padded(val, seg) if val is not None else None)


def reference_logps(step: RLStep, rb: RolloutBatch) -> torch.Tensor | None:
    if step.ref.mode == "none":
        return None
    if step.ref.mode == "model":
        return _logps(step, rb, step.ref.model)[0]
    with step.inner.policy.disable_adapter():
        return _logps(step, rb)[0]


def prepare_update(step: RLStep, batches: list[RolloutBatch]) -> dict:
    """Reference and old log-probs, KL-in-reward, advantages; returns the step's global counts."""
    cfg, acc = step.cfg, step.accelerator
    kl_in_reward = cfg.kl_placement() == "reward" and step.kl.coef > 0
    for rb in batches:
        rb.ref_logps = reference_logps(step, rb)
        if cfg.num_iterations > 1 or cfg.algo == "ppo" or kl_in_reward:
            rb.old_logps, rb.old_values = _logps(step, rb, values=cfg.algo == "ppo")
        skipped = torch.isnan(rb.rewards)
        rb.mask = rb.mask & ~skipped[:, None]
        scores = torch.nan_to_num(rb.rewards, nan=0.0) if cfg.algo in ("ppo",) else rb.rewards
        if kl_in_reward and rb.ref_logps is not None:
            tok_kl = kl_penalty(rb.old_logps, rb.ref_logps, cfg.kl_estimator) * rb.completion_mask()
            if cfg.algo == "ppo":
                rb.extra["token_rewards"] = token_rewards_with_kl(scores, tok_kl, rb.completion_mask(),
                                                                  kl_coef=step.kl.coef)
            else:
                scores = sequence_rewards_with_kl(scores, tok_kl, rb.completion_mask(), kl_coef=step.kl.coef)
        elif cfg.algo == "ppo":
            zero = torch.zeros_like(rb.old_logps)
            rb.extra["token_rewards"] = token_rewards_with_kl(scores, zero, rb.completion_mask(), kl_coef=0.0)
        rb.extra["scores"] = scores
    if cfg.algo in ("grpo", "rloo"):
        _group_advantages(cfg, batches)
    elif cfg.algo == "ppo":
        for rb in batches:
            out = gae(rb.extra["token_rewards"], rb.old_values, rb.mask, gamma=cfg.gamma, lam=cfg.lam, whiten=True)
            rb.advantages, rb.returns = out.advantages, out.returns
    else:
        for rb in batches:
            _pick_pairs(rb)
    counts = torch.tensor([sum(int(rb.mask.any(1).sum()) for rb in batches), sum(int(rb.mask.sum()) for rb in batches),
                           sum(rb.num_completions for rb in batches),
                           sum(len(rb.extra.get("pairs", [])) for rb in batches)],
                          dtype=torch.float64, device=acc.device)
    if acc.num_processes > 1:
        counts = acc.reduce(counts, reduction="sum")
    return {"sequences": max(float(counts[0]), 1.0), "tokens": max(float(counts[1]), 1.0),
            "completions": max(float(counts[2]), 1.0), "pairs": max(float(counts[3]), 1.0)}


def _group_advantages(cfg: RLConfig, batches: list[RolloutBatch]) -> None:
    """GRPO / RLOO advantages over each prompt's group (scale_rewards=batch: over this process's step)."""
    G = batches[0].num_samples
    scores = torch.cat([rb.extra["scores"] for rb in batches])
    if cfg.algo == "grpo":
        out = grpo_advantages(scores, G, scale_rewards=cfg.scale_rewards)
    else:
        out = rloo_advantages(scores, G)
    start = 0
    for rb in batches:
        n = rb.num_completions
        rb.advantages = out.advantages[start:start + n]
        rb.extra["num_tied"] = int(out.tied[start // G:(start + n) // G].sum())
        start += n


def _pick_pairs(rb: RolloutBatch) -> None:
    """Online DPO: per prompt, the best and the worst scored sample (ties and unscored groups skipped).
    With a pairwise judge the verdicts were stored as rewards 1 / 0.5 / 0 on samples 0 and 1."""
    G, pairs, ties = rb.num_samples, [], 0
    for p in range(len(rb.prompt_ids)):
        r = rb.rewards[p * G:(p + 1) * G]
        ok = ~torch.isnan(r)
        if ok.sum() < 2:
            ties += 1
            continue
        vals = torch.where(ok, r, torch.full_like(r, -math.inf))
        best = int(vals.argmax())
        worst = int(torch.where(ok, r, torch.full_like(r, math.inf)).argmin())
        if r[best] == r[worst]:
            ties += 1
            continue
        pairs.append((p * G + best, p * G + worst))
    rb.extra["pairs"], rb.extra["num_tied"] = pairs, ties


def micro_batch_loss(step: RLStep, rb: RolloutBatch, counts: dict, sums: MetricSums) -> torch.Tensor:
    """This micro-batch's share of the step's loss (its sum over the global normaliser); logs into sums."""
    cfg = step.cfg
    batch = rb.batch(step.pad_id)
    tok, val = step.module(batch)
    logps = rb.padded(tok, batch.gather_segment)
    values = rb.padded(val, batch.gather_segment) if val is not None else None
    mask = rb.mask
    if rb.ref_logps is not None:
        with torch.no_grad():
            kl_tok = kl_penalty(logps.detach(), rb.ref_logps, "k3")
        sums.add("kl", (kl_tok * mask).sum(), mask.sum())
    if cfg.algo == "online_dpo":
        return _dpo_loss(step, rb, logps, counts, sums)
    old = rb.old_logps if rb.old_logps is not None else logps.detach()
    if cfg.algo == "ppo":
        out = ppo_policy_loss(logps, old, rb.advantages, mask, clip_range=cfg.epsilon, normalizer=counts["tokens"])
        vl = clipped_value_loss(values, rb.old_values, rb.returns, mask, clip_range=cfg.cliprange_value)
        share = float(mask.sum()) / counts["tokens"]
        sums.add("value_loss", vl.loss.detach() * mask.sum(), mask.sum())
        sums.add("clip/value", vl.clip_fraction * mask.sum(), mask.sum())
        loss = out.loss + cfg.vf_coef * vl.loss * share
    else:
        in_loss = cfg.kl_placement() == "loss" and rb.ref_logps is not None and step.kl.coef > 0
        normalizer = {"grpo": counts["sequences"], "dapo": counts["tokens"],
                      "dr_grpo": counts["completions"] * cfg.max_new_tokens}[cfg.loss_type]
        out = policy_loss(logps, old, rb.advantages, mask, loss_type=cfg.loss_type, eps_low=cfg.epsilon,
                          eps_high=cfg.epsilon_high, per_token_kl=kl_penalty(logps, rb.ref_logps, cfg.kl_estimator)
                          if in_loss else None, kl_coef=step.kl.coef if in_loss else 0.0,
                          max_completion_length=cfg.max_new_tokens, normalizer=normalizer)
        loss = out.loss
    for name, v in (("clip/low", out.clip_low), ("clip/high", out.clip_high), ("clip/region", out.clip_region)):
        sums.add(name, v * mask.sum(), mask.sum())
    sums.add("loss", loss.detach(), 0.0)  # the step adds the count once (its loss is the sum of these)
    return loss


def _dpo_loss(step: RLStep, rb: RolloutBatch, logps: torch.Tensor, counts: dict, sums: MetricSums) -> torch.Tensor:
    pairs = rb.extra["pairs"]
    if not pairs:
        return logps.sum() * 0.0  # keeps every parameter in the graph (DDP needs each rank in each backward)
    c, r = [a for a, _ in pairs], [b for _, b in pairs]
    seq = (logps * rb.mask).sum(1)
    lengths = rb.mask.sum(1).float()
    ref = (rb.ref_logps * rb.mask).sum(1)
    inputs = PairLossInputs(seq[c], seq[r], ref[c], ref[r], chosen_lengths=lengths[c], rejected_lengths=lengths[r],
                            chosen_nll=-seq[c] / lengths[c].clamp(min=1))
    out = mixed_preference_loss(LossMix.parse(step.cfg.dpo_loss), inputs, PreferenceLossParams(beta=step.cfg.dpo_beta))
    margin = out.chosen_rewards - out.rejected_rewards
    sums.add("rewards/margin", margin.sum(), len(pairs))
    sums.add("rewards/accuracy", (margin > 0).float().sum(), len(pairs))
    return out.losses.sum() / counts["pairs"]


def no_sync(step: RLStep, last: bool):
    return step.accelerator.no_sync(step.module) if not last else contextlib.nullcontext()
