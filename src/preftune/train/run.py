"""The run folder of every stage (docs/architecture.md, "A run folder"): config.yaml, run.json,
metrics.jsonl, checkpoints that resume exactly, and final/.

One set of rules for every stage:
- a new run refuses a non-empty folder unless overwrite=true; resume=true needs the folder, a
  checkpoint in it, and the same resolved config and data (checkpoint.check_resumable);
- a checkpoint is written every save_every steps and at the end unless save_every < 0;
- RUN/final is a normal Hugging Face folder (for LoRA: the adapter, or the merged model).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preftune.config import save_config, to_dict


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


def warn(message: str) -> None:
    print(f"preftune: warning: {message}", file=sys.stderr, flush=True)


@dataclass
class Run:
    """A run folder and its metrics log (only the main process writes)."""
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

    def warn(self, step: int, kind: str, message: str) -> None:
        """A warning on stderr and in run.json's `warnings` (the report lists them)."""
        if self.is_main:
            warn(f"step {step}: {message}")
        self.update_info(warnings=self.info.get("warnings", []) + [{"step": step, "kind": kind, "message": message}])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _scalar(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return v


def start_run(cfg, stage: str, is_main: bool = True, data_files=()) -> Run:
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


def open_run(cfg, stage: str, accelerator) -> Run:
    """start_run on the main process first (it creates the folder), then a log-less view elsewhere."""
    run = start_run(cfg, stage, is_main=True) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    return run if run is not None else Run(Path(cfg.out), is_main=False)


def read_metrics(run: Run) -> list[dict]:
    """The rows already in metrics.jsonl (a resumed run continues its warning checks from them)."""
    if not run.metrics_path.exists():
        return []
    return [json.loads(x) for x in run.metrics_path.read_text().splitlines() if x.strip()]


def truncate_metrics(run: Run, after_step: int) -> None:
    """On resume, drop logged rows past the checkpoint so metrics.jsonl reads like an unbroken run."""
    if not run.is_main or not run.metrics_path.exists():
        return
    kept = [r for r in read_metrics(run) if r.get("step", 0) <= after_step]
    run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def save_final(accelerator, model, tokenizer, run: Run, *, merge_lora: bool = False,
               also_merged: bool = False) -> Path:
    """RUN/final: a normal Hugging Face folder. LoRA: the adapter folder, or with merge_lora the base
    with the adapter folded in; also_merged adds RUN/final/merged (loadable without peft)."""
    out = run.dir / "final"
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        lora = hasattr(unwrapped, "merge_and_unload")
        final_model = unwrapped.merge_and_unload() if merge_lora and lora else unwrapped
        final_model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        if also_merged and lora and not merge_lora:
            merged = unwrapped.merge_and_unload()
            merged.save_pretrained(out / "merged", safe_serialization=True)
            tokenizer.save_pretrained(out / "merged")
    accelerator.wait_for_everyone()
    return out


def progress(total: int, desc: str, disable: bool = False, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=disable or not sys.stderr.isatty() and bool(os.environ.get("CI")),
                initial=initial, dynamic_ncols=True)
