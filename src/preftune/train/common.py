"""What every training stage shares: the base config, the run folder, metrics logging,
accelerate set-up, optimiser/scheduler, LoRA, checkpoints that resume exactly, the final model.

Only `train/` touches the accelerator. Distribution (DDP, FSDP, DeepSpeed) is accelerate's job:
run any stage under `accelerate launch -m preftune train ...` and nothing here changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preftune.config import opt, save_config, to_dict


@dataclass
class LoraConfig:
    enabled: bool = opt(False, "train LoRA adapters instead of all weights (needs `pip install peft`)")
    r: int = opt(16, "LoRA rank")
    alpha: int = opt(32, "LoRA alpha (scaling = alpha / r)")
    dropout: float = opt(0.0, "dropout on the LoRA path")
    target_modules: list[str] = opt(help="module names to adapt; empty = all linear layers of the backbone",
                                    factory=list)


@dataclass
class TrainConfig:
    """Fields shared by every stage. Stages subclass it and add their own."""
    model: str = opt("", "model alias (smollm2-135m, minilm-l6, tiny-llama, tiny-bert), local folder or hub name")
    data: str = opt("", "training file (jsonl/json/csv/parquet/datasets folder)")
    eval_data: str | None = opt(None, "held-out file evaluated every eval_every steps and at the end")
    out: str = opt("", "run folder to create")
    seed: int = opt(0, "seed for init, data order and dropout")
    epochs: float = opt(1.0, "passes over the data (fractions allowed)")
    max_steps: int = opt(-1, "stop after this many optimiser steps (-1: use epochs)")
    batch_size: int = opt(8, "pairs (or sequences) per device per micro-batch")
    grad_accum: int = opt(1, "micro-batches per optimiser step")
    lr: float = opt(5e-5, "peak learning rate")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    warmup_ratio: float = opt(0.0, "share of steps with linear warm-up")
    scheduler: str = opt("linear", "lr schedule after warm-up: linear | cosine | constant")
    max_grad_norm: float = opt(1.0, "gradient clipping (0 = off)")
    max_length: int = opt(1024, "max tokens of prompt + response")
    max_prompt_length: int | None = opt(None, "max prompt tokens (default: half of max_length when truncating)")
    on_overlong: str = opt("truncate", "rows longer than max_length: truncate (counted) | drop (reported) | error")
    log_every: int = opt(1, "log metrics every N optimiser steps")
    eval_every: int = opt(0, "evaluate on eval_data every N steps (0 = only at the end)")
    save_every: int = opt(0, "save a resumable checkpoint every N steps (0 = only at the end)")
    keep_checkpoints: int = opt(2, "how many step checkpoints to keep")
    resume: bool = opt(False, "resume from the latest checkpoint in `out`")
    overwrite: bool = opt(False, "replace an existing non-empty run folder")
    gradient_checkpointing: bool = opt(False, "recompute activations in backward to save memory")
    dtype: str = opt("float32", "weights dtype: float32 | bfloat16")
    mixed_precision: str = opt("no", "accelerate mixed precision: no | bf16 | fp16")
    num_threads: int = opt(0, "torch CPU threads (0 = auto: torch's default, or 1 when the CPU is already busy)")
    lora: LoraConfig = opt(help="LoRA settings", factory=LoraConfig)
    report_to: str = opt("auto", "also log to: auto (tensorboard when installed) | tensorboard | none")

    def validate(self) -> None:
        for name in ("model", "data", "out"):
            if not getattr(self, name):
                raise ValueError(f"config key {name!r} is required (give --{name.replace('_', '-')} or {name}=...)")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")
        if self.on_overlong not in ("truncate", "drop", "error"):
            raise ValueError(f"on_overlong: must be truncate, drop or error, got {self.on_overlong!r}")
        if self.scheduler not in ("linear", "cosine", "constant"):
            raise ValueError(f"scheduler: must be linear, cosine or constant, got {self.scheduler!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype: must be float32, bfloat16 or float16, got {self.dtype!r}")


# --------------------------------------------------------------------------- run folder

def file_sha256(path: str | Path) -> str:
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("preftune", "torch", "transformers", "accelerate", "peft", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


@dataclass
class Run:
    """A run folder (DESIGN.md section 4) and its metrics log."""
    dir: Path
    is_main: bool = True
    _tb: Any = None
    info: dict = field(default_factory=dict)

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.is_main:
            return
        row = {"step": step, **{k: _scalar(v) for k, v in metrics.items()}}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)

    def update_info(self, **kv: Any) -> None:
        """Merge keys into run.json (main process only)."""
        self.info.update(kv)
        if self.is_main:
            (self.dir / "run.json").write_text(json.dumps(self.info, indent=2, default=str))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _scalar(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return v


def start_run(cfg: TrainConfig, stage: str, is_main: bool = True, data_files: Iterable[str] = ()) -> Run:
    """Create (or reopen for resume) the run folder; write config.yaml and run.json."""
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not (cfg.resume or cfg.overwrite):
        raise ValueError(f"run folder {out} exists and is not empty; pass resume=true to continue it "
                         "or overwrite=true to replace it")
    run = Run(out, is_main=is_main)
    if is_main:
        if cfg.overwrite and not cfg.resume and out.exists():
            import shutil

            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        if not cfg.resume and run.metrics_path.exists():
            run.metrics_path.unlink()
        save_config(cfg, out / "config.yaml")
        data = {}
        for f in [cfg.data, cfg.eval_data, *data_files]:
            if f and Path(f).exists():
                data[f] = {"sha256": file_sha256(f)}
        prev = json.loads((out / "run.json").read_text()) if cfg.resume and (out / "run.json").exists() else {}
        run.info = {**prev, "stage": stage, "model": cfg.model, "seed": cfg.seed, "data": data,
                    "versions": versions(), "git_sha": git_sha(), "argv": sys.argv,
                    "started": prev.get("started", time.strftime("%Y-%m-%dT%H:%M:%S")),
                    "config": to_dict(cfg)}
        run.update_info()
        if cfg.report_to in ("auto", "tensorboard"):
            try:
                from torch.utils.tensorboard import SummaryWriter

                run._tb = SummaryWriter(log_dir=str(out / "tensorboard"))
            except ImportError:
                if cfg.report_to == "tensorboard":
                    raise ValueError("report_to=tensorboard needs: pip install tensorboard") from None
    return run


# --------------------------------------------------------------------------- accelerate, optimiser

_AUTO_THREADS = 0


def auto_threads(num_threads: int = 0) -> int:
    """Set torch's CPU threads: `num_threads` if > 0, else $PREFTUNE_NUM_THREADS if set, else torch's
    default reduced to the cores left free by the 1-minute load average (at least 1). On a busy CPU,
    OpenMP threads spin-wait for siblings that are descheduled: we measured one thread 5-8x faster
    than two at load 6 on 2 cores."""
    import torch

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


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    auto_threads(cfg.num_threads)
    acc = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    return acc


def apply_lora(model, cfg: LoraConfig, task_type: str):
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


def disable_dropout(model) -> int:
    """Set every torch.nn.Dropout's p to 0 (as TRL's RewardTrainer and DPOTrainer do by default); returns
    how many were changed. Attention-probability dropout that models read from their config is covered
    too where it is a Dropout module (BERT); Llama-style models have attention_dropout 0 already."""
    import torch

    changed = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout) and m.p != 0.0:
            m.p = 0.0
            changed += 1
    return changed


def build_optimizer(model, cfg: TrainConfig, num_training_steps: int):
    import torch
    from transformers import get_scheduler

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    params = [g for g in groups if g["params"]]
    try:  # the fused kernel (CPU and CUDA, float weights), as HF Trainer and TRL use: far faster steps
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    warmup = round(cfg.warmup_ratio * num_training_steps)
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[cfg.scheduler]
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=num_training_steps)
    return optimizer, scheduler


def num_optimizer_steps(cfg: TrainConfig, num_batches_per_epoch: int) -> int:
    """Optimiser steps for the run: max_steps if set, else epochs x batches / grad_accum (at least 1)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, int(cfg.epochs * num_batches_per_epoch) // cfg.grad_accum)


def grad_norm(parameters) -> float:
    import torch

    norms = [p.grad.detach().norm(2) for p in parameters if p.grad is not None]
    return float(torch.norm(torch.stack(norms), 2)) if norms else 0.0


# --------------------------------------------------------------------------- checkpoints

def save_checkpoint(accelerator, run: Run, step: int, keep: int, extra: dict | None = None) -> Path:
    """model + optimiser + scheduler + RNG states (accelerate) and the loop position, then prune."""
    path = run.checkpoints_dir / f"step_{step}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        (path / "trainer_state.json").write_text(json.dumps({"step": step, **(extra or {})}))
        ckpts = sorted(run.checkpoints_dir.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
        for old in ckpts[:-keep] if keep > 0 else []:
            import shutil

            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = [p for p in (Path(run_dir) / "checkpoints").glob("step_*") if (p / "trainer_state.json").exists()]
    return max(ckpts, key=lambda p: int(p.name.split("_")[1])) if ckpts else None


def load_checkpoint(accelerator, run_dir: str | Path) -> dict:
    """Restore the latest checkpoint; returns its trainer_state (step, ...). ValueError if none."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise ValueError(f"resume=true but {run_dir}/checkpoints holds no checkpoint")
    accelerator.load_state(str(ckpt))
    return json.loads((ckpt / "trainer_state.json").read_text())


def truncate_metrics(run: Run, after_step: int) -> None:
    """On resume, drop logged rows past the checkpoint so metrics.jsonl reads like an unbroken run."""
    if not run.is_main or not run.metrics_path.exists():
        return
    rows = [json.loads(x) for x in run.metrics_path.read_text().splitlines() if x.strip()]
    kept = [r for r in rows if r.get("step", 0) <= after_step]
    run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def save_final(accelerator, model, tokenizer, run: Run, merge_lora: bool = False) -> Path:
    """RUN/final: a normal Hugging Face model folder (LoRA runs save the adapter, or the merged model)."""
    out = run.dir / "final"
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        if merge_lora and hasattr(unwrapped, "merge_and_unload"):
            unwrapped = unwrapped.merge_and_unload()
        unwrapped.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    accelerator.wait_for_everyone()
    return out


def progress(total: int, desc: str, disable: bool = False, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=disable or not sys.stderr.isatty() and bool(os.environ.get("CI")),
                initial=initial, dynamic_ncols=True)
