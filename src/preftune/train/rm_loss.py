"""Reward-model loss of one micro-batch (Bradley-Terry on the overall head, masked attribute heads,
bootstrap-weighted ensemble heads) and the running tallies of what is logged, summed over processes."""

from __future__ import annotations

import math

import torch

from preftune.losses.pairwise import bradley_terry_loss, multi_head_loss
from preftune.train.configs import RMConfig
from preftune.train.plan import MetricSums
from preftune.train.rm_data import MISSING, RMBatch


def rm_loss(chosen, rejected, rb: RMBatch, cfg: RMConfig, num_attrs: int, n_overall: int, n_attr: int) -> dict:
    """Loss of one micro-batch, normalised by the window's counts (sums, so accumulation is exact).

    chosen, rejected: (B, C) scores with C = E * (1 + A). Returns {"loss": (), "correct": (B,) bool,
    "margins": (B,), "head_correct": (A,) counts, "head_decided": (A,) counts, "chosen"/"rejected": (B,)}.
    """
    per = 1 + num_attrs
    E = chosen.shape[1] // per
    conf = rb.confidence if cfg.confidence == "soft" else None
    base_w = rb.confidence if cfg.confidence == "weight" else torch.ones_like(rb.confidence)
    margin = rb.margin * cfg.margin_scale if cfg.margin_scale else None
    total = chosen.new_zeros(())
    head_correct = torch.zeros(num_attrs)
    head_decided = torch.zeros(num_attrs)
    for e in range(E):
        c, r = chosen[:, e * per], rejected[:, e * per]
        out = bradley_terry_loss(c, r, margin=margin, confidence=conf, label_smoothing=cfg.label_smoothing,
                                 tie_mask=rb.is_tie, tie_mode=cfg.ties, rao_kupper_log_theta=cfg.rao_kupper_log_theta,
                                 weights=base_w * rb.weights[:, e])
        loss = out.losses.sum() / max(n_overall, 1)
        if cfg.center_coef:
            sq = torch.where(out.counted, (c + r) ** 2, torch.zeros_like(c))
            loss = loss + cfg.center_coef * sq.sum() / max(n_overall, 1)
        if num_attrs:
            sl = slice(e * per + 1, (e + 1) * per)
            mh = multi_head_loss(chosen[:, sl], rejected[:, sl], rb.verdicts,
                                 tie_mode="half" if cfg.ties == "half" else "skip")
            w = rb.weights[:, e:e + 1]
            loss = loss + cfg.attribute_loss_weight * (mh.losses * w).sum() / max(n_attr, 1)
        total = total + loss / E
    # reported: the ensemble-mean reward of the overall head
    c_mean = chosen[:, 0::per].mean(1).detach()
    r_mean = rejected[:, 0::per].mean(1).detach()
    margins = c_mean - r_mean
    if num_attrs:
        d = (chosen[:, 1:per] - rejected[:, 1:per]).detach()
        for e in range(1, E):
            d = d + (chosen[:, e * per + 1:(e + 1) * per] - rejected[:, e * per + 1:(e + 1) * per]).detach()
        decided = (rb.verdicts != MISSING) & (rb.verdicts != 0)
        right = decided & (torch.sign(d) == rb.verdicts.to(d.dtype))
        head_correct, head_decided = right.sum(0).float(), decided.sum(0).float()
    return {"loss": total, "correct": (margins > 0) & ~rb.is_tie, "decided": ~rb.is_tie, "margins": margins,
            "chosen": c_mean, "rejected": r_mean, "head_correct": head_correct, "head_decided": head_decided}


class Tally:
    """A window's (or an evaluation's) statistics as loop.MetricSums (sum, count) pairs: the RM logs
    through the same process reduction as the other stages."""

    def __init__(self, heads: list[str], num_processes: int = 1):
        self.heads, self.sums = heads, MetricSums()
        # the logged loss is the SUM of every piece's loss on every process (each is already normalised
        # by the window's counts): each process counts 1/P, so the reduced mean is that sum
        self.sums.add("loss", 0.0, 1.0 / num_processes)

    def add(self, out: dict, loss_value: float) -> None:
        s, n = self.sums, out["chosen"].numel()
        s.add("loss", loss_value, 0)
        s.add("accuracy", out["correct"].sum(), out["decided"].sum())
        s.add("margin", out["margins"].sum(), n)
        s.add("rewards/chosen", out["chosen"].sum(), n)
        s.add("rewards/rejected", out["rejected"].sum(), n)
        for j, h in enumerate(self.heads):
            s.add(f"heads/{h}/accuracy", out["head_correct"][j], out["head_decided"][j])

    def metrics(self, prefix: str, accelerator=None) -> dict:
        """Means over this process (accelerator None: evaluation, where each process sees all the data)
        or over every process; accuracy is NaN when every pair was a skipped tie."""
        m = self.sums.reduce(accelerator, prefix)
        m.setdefault(f"{prefix}/accuracy", math.nan)
        return m
