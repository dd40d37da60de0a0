"""The model side of every stage: threads, the accelerator, dropout, gradient checkpointing and LoRA,
the optimiser and schedule, and the one optimiser step (with its non-finite guard).

Only train/ touches the accelerator. Distribution (DDP, FSDP, DeepSpeed) is accelerate's job: run any
stage under `accelerate launch -m preftune train ...` and nothing here changes.
"""

from __future__ import annotations

import math
import os

import torch

_AUTO_THREADS = 0


class NonFiniteError(ValueError):
    """The loss or gradient norm became NaN/inf: the run stops (exit 1) before the weights change."""


def auto_threads(num_threads: int = 0) -> int:
    """Set torch's CPU threads: `num_threads` if > 0, else $PREFTUNE_NUM_THREADS if set, else torch's
    default reduced to the cores left free by the 1-minute load average (at least 1). On a busy CPU,
    OpenMP threads spin-wait for siblings that are descheduled: we measured one thread 5-8x faster
    than two at load 6 on 2 cores."""
    global _AUTO_THREADS
    if num_threads <= 0 and _AUTO_THREADS:  # decided once per process: later calls would see our own load
        num_threads = _AUTO_THREADS
    if num_threads <= 0 and os.environ.get("PREFTUNE_NUM_THREADS", "").isdigit():
        num_threads = int(os.environ["PREFTUNE_NUM_THREADS"])
    if num_threads <= 0:
        cores = os.cpu_count() or 1
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
        num_threads = max(1, min(torch.get_num_threads(), round(cores - load))) if load >= 1.0 else \
            torch.get_num_threads()
        _AUTO_THREADS = num_threads
    torch.set_num_threads(num_threads)
    return num_threads


def make_accelerator(cfg):
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    auto_threads(cfg.num_threads)
    acc = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    return acc


def disable_dropout(model) -> int:
    """Set every torch.nn.Dropout's p to 0 (as TRL's RewardTrainer and DPOTrainer do by default); returns
    how many were changed. Attention-probability dropout that models read from their config is covered
    too where it is a Dropout module (BERT); Llama-style models have attention_dropout 0 already."""
    changed = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout) and m.p != 0.0:
            m.p = 0.0
            changed += 1
    return changed


def apply_lora(model, cfg, task_type: str):
    """Wrap `model` with LoRA adapters (peft). task_type: CAUSAL_LM or SEQ_CLS."""
    try:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model
    except ImportError as e:
        raise ValueError("lora.enabled=true needs peft: pip install peft") from e
    from preftune.models import quiet_peft

    pcfg = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, task_type=task_type,
                          target_modules=cfg.target_modules or "all-linear")
    with quiet_peft():
        return get_peft_model(model, pcfg)


def prepare_model(model, cfg, task_type: str = "CAUSAL_LM"):
    """Gradient checkpointing and LoRA, in the order peft needs (checkpointing on the base first)."""
    if cfg.gradient_checkpointing:
        kwargs = {"use_reentrant": False}  # non-reentrant: works with frozen inputs (LoRA) and under DDP
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 renamed it
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if task_type == "CAUSAL_LM":
        model.config.use_cache = False
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora, task_type)
    return model


def build_optimizer(model, cfg, num_training_steps: int):
    from transformers import get_scheduler

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    params = [g for g in groups if g["params"]]
    try:  # the fused kernel (CPU and CUDA, float weights), as HF Trainer and TRL use
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    warmup = round(cfg.warmup_ratio * num_training_steps)
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[cfg.scheduler]
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=num_training_steps)
    return optimizer, scheduler


def grad_norm(parameters) -> float:
    norms = [p.grad.detach().norm(2) for p in parameters if p.grad is not None]
    return float(torch.norm(torch.stack(norms), 2)) if norms else 0.0


def optimizer_step(accelerator, model, optimizer, scheduler, max_grad_norm: float, step: int,
                   loss: float | None = None, run=None) -> float:
    """Clip (when asked), step, zero; returns the global gradient norm before clipping.

    A non-finite loss or gradient norm raises NonFiniteError naming the optimiser step (1-based)
    BEFORE the weights change (a NaN never reaches the saved model); with `run`, run.json records
    `failed` first, so the report shows the run as failed."""
    params = [p for p in model.parameters() if p.requires_grad]
    if max_grad_norm > 0:
        norm = float(accelerator.clip_grad_norm_(params, max_grad_norm))
    else:
        norm = grad_norm(params)
    bad = [name for name, v in (("loss", loss), ("gradient norm", norm)) if v is not None and not math.isfinite(v)]
    if bad:
        optimizer.zero_grad(set_to_none=True)
        message = (f"step {step}: the {' and the '.join(bad)} became non-finite (loss={loss}, grad_norm={norm}); "
                   "the run stopped before this update")
        if run is not None:
            run.update_info(failed={"step": step, "kind": "non_finite", "message": message})
        raise NonFiniteError(message)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm
