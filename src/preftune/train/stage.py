"""The skeleton every stage's loop is written with (SFT, RM, DPO, RL): the same start, the same
resume rule, the same per-step bookkeeping and the same end. Each stage's loop stays visible in its
own module; only what would otherwise be copied lives here.

    accelerator, run = start(cfg, "dpo")                     # threads, seed, run folder
    ... load data and models ...
    module, optimizer, scheduler, loader, num_steps = prepare(cfg, accelerator, module, lengths, collate)
    step, loader = resume(cfg, accelerator, run, loader, scheduler)
    for ... in loader: ... optimizer_step(...); log_step(...); maybe_checkpoint(...)
    final = finish(cfg, accelerator, run, step, scheduler, model, tokenizer)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from preftune.train.checkpoint import load_checkpoint, save_checkpoint
from preftune.train.optim import build_optimizer, make_accelerator
from preftune.train.plan import MicroBatch, make_loader, num_steps_for, plan_micro_batches
from preftune.train.run import Run, open_run, save_final, truncate_metrics, warn


def fit_max_length(cfg):
    """The config with max_length cut to the model's position table (said once on stderr): a BERT-like
    encoder has 512 positions, and a longer row would index past them."""
    from dataclasses import replace

    from preftune.models.limits import clamp_max_length

    length, note = clamp_max_length(cfg.max_length, cfg.model)
    if note is None:
        return cfg
    warn(note)
    prompt = cfg.max_prompt_length
    return replace(cfg, max_length=length, max_prompt_length=None if prompt is None or prompt >= length else prompt)


def start(cfg, stage: str) -> tuple[Any, Run]:
    """The accelerator (threads, seed) and the run folder (created by the main process first)."""
    accelerator = make_accelerator(cfg)
    return accelerator, open_run(cfg, stage, accelerator)


def prepare(cfg, accelerator, module, lengths: Sequence[int], collate: Callable[[MicroBatch], Any],
            updates_per_step: int = 1):
    """The micro-batch plan over rows of these lengths, its loader, the optimiser and schedule, all
    through accelerator.prepare. Returns (module, optimizer, scheduler, loader, num_steps, plan).

    The scheduler is stepped by hand once per optimiser step (accelerate's wrapper would step it
    num_processes times) and checkpointed as JSON by train.checkpoint. updates_per_step: optimiser
    updates made on each step's data (online RL's num_iterations), for the schedule's length."""
    num_steps = num_steps_for(cfg, len(lengths), accelerator.num_processes)
    plan = plan_micro_batches(lengths, cfg.batch_size, cfg.grad_accum, accelerator.num_processes, num_steps, cfg.seed)
    optimizer, scheduler = build_optimizer(module, cfg, num_steps * updates_per_step)
    module, optimizer, loader = accelerator.prepare(module, optimizer, make_loader(plan, collate))
    return module, optimizer, scheduler, loader, num_steps, plan


def resume(cfg, accelerator, run: Run, loader, scheduler) -> tuple[int, Any, dict]:
    """(first step, loader, trainer state): 0, the loader and {} for a new run; for resume=true the newest
    intact checkpoint's step, the loader past the micro-batches already trained (the plan is seeded) and
    what the stage saved with the checkpoint (`extra`)."""
    if not cfg.resume:
        return 0, loader, {}
    state = load_checkpoint(accelerator, cfg.out, scheduler)
    step = int(state["step"])
    truncate_metrics(run, step)
    return step, accelerator.skip_first_batches(loader, step * cfg.grad_accum), state


def maybe_checkpoint(cfg, accelerator, run: Run, step: int, num_steps: int, scheduler,
                     extra: dict | None = None) -> None:
    """A checkpoint every save_every steps (the end has its own, in finish); `extra` (JSON) is saved with it."""
    if cfg.save_every > 0 and step % cfg.save_every == 0 and step < num_steps:
        save_checkpoint(accelerator, run, step, cfg.keep_checkpoints, scheduler, extra)


def should_log(cfg, step: int, num_steps: int) -> bool:
    return step % cfg.log_every == 0 or step == num_steps


def should_eval(cfg, step: int, num_steps: int) -> bool:
    """Evaluation during training (the end always evaluates, in the stage)."""
    return bool(cfg.eval_data) and cfg.eval_every > 0 and step % cfg.eval_every == 0 and step < num_steps


def finish(cfg, accelerator, run: Run, step: int, scheduler, model, tokenizer, *, merge_lora: bool = False,
           also_merged: bool = False, extra: dict | None = None, **info: Any) -> Path:
    """The end of every stage: a checkpoint (unless save_every < 0), RUN/final, run.json's end."""
    if cfg.save_every >= 0:
        save_checkpoint(accelerator, run, step, cfg.keep_checkpoints, scheduler, extra)
    final = save_final(accelerator, model, tokenizer, run, merge_lora=merge_lora, also_merged=also_merged)
    run.update_info(ended=time.strftime("%Y-%m-%dT%H:%M:%S"), num_steps=step, **info)
    run.close()
    return final
