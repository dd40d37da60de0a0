"""Pieces the SFT and DPO loops share: the CLI parser, the micro-batch plan, device moves, metric sums.

The loops themselves stay in sft.py / dpo.py, written out top to bottom; this module only holds the
named helpers they call. Nothing here imports torch at module level (CLI-registered modules import it).

The micro-batch plan is what makes gradient accumulation, DDP and resume exact:
- one optimiser step sees one *global batch* of G = batch_size x grad_accum x num_processes rows,
  drawn by `length_grouped_batches` (seeded per epoch), so 1x4 and 4x1 see the same rows per step;
- the global batch is cut into grad_accum x num_processes micro-batches, laid out so that accelerate's
  batch sharding (process r takes items r, r+N, r+2N, ...) hands micro-batch a*N + r to process r at
  accumulation slot a;
- each micro-batch carries `scale` = (number of micro-batches) / G, so that the sum of its per-row
  losses times `scale`, divided by grad_accum (accelerator.backward) and averaged over processes (DDP),
  is exactly the mean over the global batch, also when the last global batch of an epoch is short.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preftune.batching import length_grouped_batches

# --------------------------------------------------------------------------- CLI

def add_train_parser(sub, name: str, help_text: str, cfg_cls: type, func: Callable) -> argparse.ArgumentParser:
    """`preftune train NAME --model M --data D --out O [--eval-data E] [--config FILE] [key=value ...]`."""
    from preftune.config import describe

    p = sub.add_parser(name, help=help_text, description=help_text,
                       epilog="config keys (key=value):\n" + describe(cfg_cls),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model alias, folder or hub name (config key: model)")
    p.add_argument("--data", help="training file (config key: data)")
    p.add_argument("--eval-data", dest="eval_data", help="held-out file (config key: eval_data)")
    p.add_argument("--out", help="run folder to create (config key: out)")
    p.add_argument("--config", help="YAML config file; flags and key=value overrides win over it")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. beta=0.1 lora.enabled=true")
    p.set_defaults(func=func)
    return p


def config_from_args(cfg_cls: type, args) -> Any:
    from preftune.config import load_config

    base = {"model": args.model, "data": args.data, "eval_data": args.eval_data, "out": args.out}
    return load_config(cfg_cls, args.config, list(args.overrides or []), base=base)


def warn(message: str) -> None:
    print(f"preftune: warning: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the micro-batch plan

@dataclass
class MicroBatch:
    rows: list[int]   # positions in the tokenised list
    scale: float      # loss multiplier: sum(row losses) * scale is this micro-batch's share of the mean
    step: int         # the optimiser step (0-based) it belongs to


def plan_micro_batches(lengths: Sequence[int], batch_size: int, grad_accum: int, num_processes: int,
                       num_steps: int, seed: int) -> list[MicroBatch]:
    """num_steps x grad_accum x num_processes micro-batches in the order accelerate shards them.

    Epoch e draws its global batches with seed + e; a short last global batch is cut as evenly as
    possible, and if it has fewer rows than micro-batches its rows are cycled (each repeat counted in
    `scale`) so that every process has work at every slot (DDP needs every rank in every backward).
    """
    if not lengths:
        raise ValueError("no training rows left after tokenisation")
    parts = grad_accum * num_processes
    global_size = batch_size * parts
    out: list[MicroBatch] = []
    epoch = 0
    while len(out) < num_steps * parts:
        for g in length_grouped_batches(lengths, global_size, seed + epoch, shuffle=True):
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


def num_steps_for(cfg, num_rows: int, num_processes: int) -> int:
    """Optimiser steps: max_steps when set, else epochs x global batches per epoch (at least 1)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_epoch = math.ceil(num_rows / (cfg.batch_size * cfg.grad_accum * num_processes))
    return max(1, int(cfg.epochs * per_epoch))


def make_loader(plan: list[MicroBatch], collate: Callable[[MicroBatch], Any]):
    """A DataLoader over the plan, one micro-batch per item, so that `accelerator.prepare` shards it."""
    from torch.utils.data import DataLoader

    return DataLoader(plan, batch_size=1, shuffle=False, collate_fn=lambda xs: collate(xs[0]))


def eval_batches(lengths: Sequence[int], batch_size: int, rank: int, world: int) -> list[list[int]]:
    """Sorted (no shuffle) batches; process `rank` of `world` takes every world-th one."""
    return length_grouped_batches(lengths, batch_size, seed=0, shuffle=False)[rank::world]


def to_device(batch: Any, device) -> Any:
    """Move every tensor field of a batch dataclass (on CPU this returns the batch unchanged)."""
    import torch

    if str(device) == "cpu" or not dataclasses.is_dataclass(batch):
        return batch
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name).to(device)
                                        for f in dataclasses.fields(batch)
                                        if isinstance(getattr(batch, f.name), torch.Tensor)})


# --------------------------------------------------------------------------- metrics

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


# preference metrics: per-batch sums, reduced to means over the step's global batch

def _kl(sums, pol_tokens, pol_mask, ref_out) -> None:
    """k3 KL(policy || reference) per chosen token (Schulman 2020), summed for a token mean."""
    import torch

    from preftune.ops.stats import kl_k3

    if ref_out is None:
        return
    ref_tok, ref_mask = ref_out[2], ref_out[3]
    # widths may differ (a (B, L) matrix is as wide as its longest side); row-major selection lines up
    assert torch.equal(ref_mask.sum(1), pol_mask.sum(1)), "reference and policy saw different chosen tokens"
    sums.add("kl", kl_k3(pol_tokens.detach()[pol_mask], ref_tok[ref_mask]).sum(), pol_mask.sum())


def pair_metrics(sums, out, pol, ref_out) -> None:
    """Add one batch's per-pair sums: loss, implicit rewards, log-probs, lengths, KL."""
    B = pol.chosen_logps.shape[0]
    margin = out.chosen_rewards - out.rejected_rewards
    for name, v in (("loss", out.losses.detach()), ("rewards/chosen", out.chosen_rewards),
                    ("rewards/rejected", out.rejected_rewards), ("rewards/margin", margin),
                    ("rewards/accuracy", (margin > 0).float()), ("logps/chosen", pol.chosen_logps.detach()),
                    ("logps/rejected", pol.rejected_logps.detach()), ("lengths/chosen", pol.num_chosen_tokens.float()),
                    ("lengths/rejected", pol.num_rejected_tokens.float())):
        sums.add(name, v.sum(), B)
    tok, mask = pol.token_matrix("chosen")
    _kl(sums, tok, mask, ref_out)


def kto_metrics(sums, losses, rewards, pol, ref_out, labels, z0) -> None:
    import torch

    from preftune.ops.logprobs import pad_by_segment

    d, u = labels, ~labels
    sums.add("loss", losses.detach().sum(), labels.numel())
    for side, m in (("chosen", d), ("rejected", u)):
        sums.add(f"rewards/{side}", rewards[m].sum(), m.sum())
        sums.add(f"logps/{side}", pol.logps.detach()[m].sum(), m.sum())
        sums.add(f"lengths/{side}", pol.num_tokens[m].float().sum(), m.sum())
    sums.add("kto/z0", torch.as_tensor(z0).float(), 1)
    tok, mask = pad_by_segment(pol.token_logps, pol.token_segment, labels.numel())
    _kl(sums, tok[d], mask[d], (None, None, ref_out[2][d], ref_out[3][d]))


def finish_metrics(m: dict, prefix: str) -> dict:
    """KTO's margin is the difference of the two sides' means (no row has both)."""
    c, r = m.get(f"{prefix}/rewards/chosen"), m.get(f"{prefix}/rewards/rejected")
    if c is not None and r is not None and f"{prefix}/rewards/margin" not in m:
        m[f"{prefix}/rewards/margin"] = c - r
    return m


def chosen_falls_while_margin_grows(rows: list[dict], window: int = 5) -> bool:
    """The classic DPO failure sign: over the logged steps, the chosen log-prob went down while the
    margin went up (both sides pushed down, rejected faster). Compares the first and last `window` rows."""
    rows = [r for r in rows if "train/logps/chosen" in r and "train/rewards/margin" in r]
    if len(rows) < 2 * window:
        return False

    def mean(key, part):
        return sum(r[key] for r in part) / len(part)

    first, last = rows[:window], rows[-window:]
    return (mean("train/logps/chosen", last) < mean("train/logps/chosen", first)
            and mean("train/rewards/margin", last) > mean("train/rewards/margin", first))


def optimizer_step(accelerator, model, optimizer, scheduler, max_grad_norm: float) -> float:
    """Clip (when asked), step, zero; returns the global gradient norm before clipping."""
    from preftune.train.common import grad_norm

    params = [p for p in model.parameters() if p.requires_grad]
    if max_grad_norm > 0:
        norm = float(accelerator.clip_grad_norm_(params, max_grad_norm))
    else:
        norm = grad_norm(params)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def logps_module(model, chunk_size: int):
    """An nn.Module whose forward(batch) returns the policy's completion log-probs (PairLogps for pair
    batches, SequenceLogps for sequence batches). Wrapping it with accelerator.prepare puts the whole
    log-prob computation behind DDP's forward, which DDP needs to synchronise gradients correctly."""
    import torch

    from preftune.batching import SequenceBatch
    from preftune.models.forward import pair_logps, sequence_logps

    class LogpsModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, batch):
            if isinstance(batch, SequenceBatch):
                return sequence_logps(self.model, batch, chunk_size=chunk_size, return_tokens=True)
            return pair_logps(self.model, batch, chunk_size=chunk_size, return_tokens=True)

    return LogpsModule()


def prepare_policy(model, cfg, task_type: str = "CAUSAL_LM"):
    """Gradient checkpointing and LoRA, in the order peft needs (checkpointing on the base first)."""
    from preftune.train.common import apply_lora

    if cfg.gradient_checkpointing:
        kwargs = {"use_reentrant": False}  # non-reentrant: works with frozen inputs (LoRA) and under DDP
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 renamed it
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora, task_type)
    return model


def save_final_model(accelerator, model, tokenizer, run, merge_lora: bool):
    """RUN/final: a normal Hugging Face folder (the adapter folder for LoRA) and, with merge_lora,
    RUN/final/merged: the base with the adapter folded in, loadable without peft."""
    from preftune.train.common import save_final

    out = save_final(accelerator, model, tokenizer, run, merge_lora=False)
    if merge_lora and hasattr(model, "merge_and_unload"):
        if accelerator.is_main_process:
            merged = model.merge_and_unload()
            merged.save_pretrained(out / "merged", safe_serialization=True)
            tokenizer.save_pretrained(out / "merged")
        accelerator.wait_for_everyone()
    return out


def open_run(cfg, stage: str, accelerator):
    """start_run on the main process first (it creates the folder), then a log-less view elsewhere."""
    from preftune.train.common import Run, start_run

    run = start_run(cfg, stage, is_main=True) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    return run if run is not None else Run(Path(cfg.out), is_main=False)


def read_metrics(run) -> list[dict]:
    """The rows already in metrics.jsonl (a resumed run continues its warning checks from them)."""
    import json

    if not run.metrics_path.exists():
        return []
    return [json.loads(x) for x in run.metrics_path.read_text().splitlines() if x.strip()]
