"""Reward-model loss of one micro-batch (Bradley-Terry on the overall head, masked attribute heads,
bootstrap-weighted ensemble heads) and the running tallies of what is logged, summed over processes."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from preftune.train.rm_data import MISSING, RMBatch

if TYPE_CHECKING:
    from preftune.train.rm import RMConfig


class RewardForward:
    """nn.Module factory (torch imported lazily): forward(RMBatch) -> (chosen, rejected) scores (B, C),
    so that DDP sees one forward call per micro-batch."""

    @staticmethod
    def build(model, pad_tolerance: float = 0.05):
        import torch

        from preftune.models.forward import pair_rewards

        class _Wrapper(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, rb: RMBatch):
                r = pair_rewards(self.model, rb.batch, pad_tolerance=pad_tolerance)
                return r.chosen.float(), r.rejected.float()

        return _Wrapper(model)


def rm_loss(chosen, rejected, rb: RMBatch, cfg: RMConfig, num_attrs: int, n_overall: int, n_attr: int) -> dict:
    """Loss of one micro-batch, normalised by the window's counts (sums, so accumulation is exact).

    chosen, rejected: (B, C) scores with C = E * (1 + A). Returns {"loss": (), "correct": (B,) bool,
    "margins": (B,), "head_correct": (A,) counts, "head_decided": (A,) counts, "chosen"/"rejected": (B,)}.
    """
    import torch

    from preftune.losses.pairwise import bradley_terry_loss, multi_head_loss

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
            mh = multi_head_loss(chosen[:, sl], rejected[:, sl], rb.verdicts, tie_mode="half" if cfg.ties == "half" else "skip")
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
    """Sums of a window's (or an evaluation's) statistics -> metrics dict (`reduce` sums them over processes)."""

    def __init__(self, heads: list[str]):
        self.heads, self.loss, self.n = heads, 0.0, 0
        self.correct = self.decided = self.margin = self.chosen = self.rejected = 0.0
        self.head_correct = [0.0] * len(heads)
        self.head_decided = [0.0] * len(heads)

    def add(self, out: dict, loss_value: float) -> None:
        self.loss += loss_value
        self.n += int(out["chosen"].numel())
        self.correct += float(out["correct"].sum())
        self.decided += float(out["decided"].sum())
        self.margin += float(out["margins"].sum())
        self.chosen += float(out["chosen"].sum())
        self.rejected += float(out["rejected"].sum())
        for j in range(len(self.heads)):
            self.head_correct[j] += float(out["head_correct"][j])
            self.head_decided[j] += float(out["head_decided"][j])

    def reduce(self, accelerator) -> Tally:
        """Sum every statistic over the processes (in place), so each logs the global window's numbers."""
        if accelerator is None or accelerator.num_processes == 1:
            return self
        import torch

        A = len(self.heads)
        t = torch.tensor([self.loss, self.n, self.correct, self.decided, self.margin, self.chosen, self.rejected,
                          *self.head_correct, *self.head_decided], dtype=torch.float64, device=accelerator.device)
        v = accelerator.reduce(t, reduction="sum").tolist()
        self.loss, self.n, self.correct, self.decided, self.margin, self.chosen, self.rejected = v[:7]
        self.head_correct, self.head_decided = v[7:7 + A], v[7 + A:7 + 2 * A]
        return self

    def metrics(self, prefix: str) -> dict:
        n = max(self.n, 1)
        m = {f"{prefix}/loss": self.loss, f"{prefix}/accuracy": self.correct / self.decided if self.decided else math.nan,
             f"{prefix}/margin": self.margin / n, f"{prefix}/rewards/chosen": self.chosen / n,
             f"{prefix}/rewards/rejected": self.rejected / n}
        for j, h in enumerate(self.heads):
            if self.head_decided[j]:
                m[f"{prefix}/heads/{h}/accuracy"] = self.head_correct[j] / self.head_decided[j]
        return m
