"""The micro-batch plan every stage trains on, its loader, evaluation batches, and metric sums.

The plan is what makes gradient accumulation, DDP and resume exact:
- one optimiser step sees one *global batch* of G = batch_size x grad_accum x num_processes rows,
  drawn by `length_grouped_batches` (seeded per epoch), so 1x4 and 4x1 see the same rows per step;
- the global batch is cut into grad_accum x num_processes micro-batches, laid out so that accelerate's
  batch sharding (process r takes items r, r+N, r+2N, ...) hands micro-batch a*N + r to process r at
  accumulation slot a;
- each micro-batch carries `scale` = (number of micro-batches) / G, so that the sum of its per-row
  losses times `scale`, divided by grad_accum (accelerator.backward) and averaged over processes (DDP),
  is exactly the mean over the global batch, also when the last global batch of an epoch is short;
- a resumed run skips the first step x grad_accum items of the same plan (no sampler state to save).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from preftune.batching import length_grouped_batches


@dataclass(frozen=True)
class MicroBatch:
    rows: list[int]   # positions in the tokenised list
    scale: float      # loss multiplier: sum(row losses) * scale is this micro-batch's share of the mean
    step: int         # the optimiser step (0-based) it belongs to


def epoch_seed(seed: int, epoch: int) -> int:
    """The data-order seed of an epoch: runs with seeds k and k + 1 never share an epoch's order."""
    return seed * 1000 + epoch


def num_steps_for(cfg, num_rows: int, num_processes: int) -> int:
    """Optimiser steps, for every stage: max_steps when set, else epochs x global batches per epoch
    (at least 1); a global batch is batch_size x grad_accum x num_processes rows."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = math.ceil(num_rows / (cfg.batch_size * cfg.grad_accum * num_processes))
    return max(1, int(cfg.epochs * per_epoch))


def plan_micro_batches(lengths: Sequence[int], batch_size: int, grad_accum: int, num_processes: int,
                       num_steps: int, seed: int) -> list[MicroBatch]:
    """num_steps x grad_accum x num_processes micro-batches in the order accelerate shards them.

    Epoch e draws its global batches with epoch_seed(seed, e); a short last global batch is cut as
    evenly as possible, and if it has fewer rows than micro-batches its rows are cycled (each repeat
    counted in `scale`) so that every process has work at every slot (DDP needs every rank in every
    backward).
    """
    if not lengths:
        raise ValueError("no training rows left after tokenisation")
    parts = grad_accum * num_processes
    global_size = batch_size * parts
    out: list[MicroBatch] = []
    epoch = 0
    while len(out) < num_steps * parts:
        for g in length_grouped_batches(lengths, global_size, epoch_seed(seed, epoch), shuffle=True):
            if len(out) >= num_steps * parts:
                break
            if len(g) < parts:
                g = [g[i % len(g)] for i in range(parts)]
            step = len(out) // parts
            # g is sorted longest first: contiguous cuts keep each micro-batch length-homogeneous
            bounds = [round(k * len(g) / parts) for k in range(parts + 1)]
            out += [MicroBatch(g[bounds[k]:bounds[k + 1]], parts / len(g), step) for k in range(parts)]
        epoch += 1
    return out


def make_loader(plan: list[MicroBatch], collate: Callable[[MicroBatch], Any]):
    """A DataLoader over the plan, one micro-batch per item, so that `accelerator.prepare` shards it.
    It draws from no global RNG (its own generator), so resumed and unbroken runs see the same dropout."""
    from torch import Generator
    from torch.utils.data import DataLoader

    return DataLoader(plan, batch_size=1, shuffle=False, collate_fn=lambda xs: collate(xs[0]), generator=Generator())


def eval_batches(lengths: Sequence[int], batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """Sorted (no shuffle) batches; process `rank` of `world` takes every world-th one."""
    return length_grouped_batches(lengths, batch_size, seed=0, shuffle=False)[rank::world]


class MetricSums:
    """Running (sum, count) per metric over micro-batches and processes; `reduce` gives the means."""

    def __init__(self) -> None:
        self.sums: dict[str, list[float]] = {}

    def add(self, name: str, total, count) -> None:
        s = self.sums.setdefault(name, [0.0, 0.0])
        s[0] += float(total)
        s[1] += float(count)

    def reduce(self, accelerator, prefix: str) -> dict[str, float]:
        """Means of every metric, summed over processes first (accelerator None: this process only)."""
        import torch

        names = sorted(self.sums)
        t = torch.tensor([self.sums[n] for n in names] or [[0.0, 0.0]], dtype=torch.float64,
                         device=accelerator.device if accelerator is not None else "cpu")
        if accelerator is not None and accelerator.num_processes > 1:
            t = accelerator.reduce(t, reduction="sum")
        self.sums = {}
        return {f"{prefix}/{n}": float(t[i, 0] / t[i, 1]) for i, n in enumerate(names) if t[i, 1] > 0}
