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


# keys that may differ on resume without being named: where the run is, and how it is run or logged
RESUME_FREE_KEYS = ("out", "resume", "overwrite", "num_threads", "report_to", "resume_allow_changes")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k not in ("head_weights",):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[prefix + k] = v
    return out


def check_resumable(cfg, out: Path) -> None:
    """ValueError unless `out` is a run folder whose resolved config and data equal this config's,
    except RESUME_FREE_KEYS and cfg.resume_allow_changes (`data` there allows changed data files)."""
    import yaml

    if not out.is_dir():
        raise ValueError(f"resume=true but the run folder {out} does not exist; drop resume=true to start it")
    try:
        saved = yaml.safe_load((out / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"resume=true but {out}/config.yaml is missing or unreadable ({e}); "
                         "pass overwrite=true to start the run over") from None
    allowed = set(RESUME_FREE_KEYS) | set(cfg.resume_allow_changes)
    now, before = _flat(to_dict(cfg)), _flat(saved)
    # the data files are compared by content below (a moved copy is the same data)
    changed = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k) and k not in ("data", "eval_data")
                     and k not in allowed and k.split(".")[0] not in allowed)
    if changed:
        diffs = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:8])
        raise ValueError(f"resume=true but the config differs from the run's in {', '.join(changed)} ({diffs}); "
                         f"pass resume_allow_changes=[{','.join(changed)}] if that is meant")
    if "data" in allowed:
        return
    try:
        recorded = json.loads((out / "run.json").read_text()).get("data_sha256", {})
    except (OSError, json.JSONDecodeError):
        recorded = {}
    for role, path in (("train", cfg.data), ("eval", cfg.eval_data)):
        if path and role in recorded and Path(path).exists() and file_sha256(path) != recorded[role]:
            raise ValueError(f"resume=true but the {role} data {path} is not the file the run trained on "
                             "(its sha256 differs); pass resume_allow_changes=[data] if that is meant")


def _writable_folder(out: Path) -> None:
    """ValueError (before any model loads) when the run folder cannot be created or written."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"run folder {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".preftune-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"run folder {out}: cannot write there ({e.strerror or e})") from None


def start_run(cfg, stage: str, is_main: bool = True, data_files=()) -> Run:
    """Create (or reopen for resume) the run folder; write config.yaml and run.json."""
    out = Path(cfg.out)
    if cfg.resume:
        check_resumable(cfg, out)
    elif out.exists() and out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise ValueError(f"run folder {out} exists and is not empty; pass resume=true to continue it "
                         "or overwrite=true to replace it")
    run = Run(out, is_main=is_main)
    if is_main:
        if cfg.overwrite and not cfg.resume and out.is_dir():
            import shutil

            shutil.rmtree(out)
        _writable_folder(out)
        if not cfg.resume and run.metrics_path.exists():
            run.metrics_path.unlink()
        save_config(cfg, out / "config.yaml")
        data, roles = {}, {}
        for role, f in [("train", cfg.data), ("eval", cfg.eval_data), *(("extra", f) for f in data_files)]:
            if f and Path(f).exists():
                data[f] = {"sha256": file_sha256(f)}
                roles.setdefault(role, data[f]["sha256"])
        prev = json.loads((out / "run.json").read_text()) if cfg.resume and (out / "run.json").exists() else {}
        run.info = {**prev, "stage": stage, "model": cfg.model, "seed": cfg.seed, "data": data,
                    "data_sha256": roles, "versions": versions(), "git_sha": git_sha(), "argv": sys.argv,
                    "started": prev.get("started", time.strftime("%Y-%m-%dT%H:%M:%S")),
                    "config": to_dict(cfg)}
        run.info.pop("failed", None)
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
    """The rows already in metrics.jsonl (a resumed run continues its warning checks from them).
    A last line cut short (the run was killed mid-write) is left out with a warning; a damaged line
    before it is an error naming the line."""
    if not run.metrics_path.exists():
        return []
    lines = [x for x in run.metrics_path.read_text(errors="replace").splitlines() if x.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{run.metrics_path}:{i + 1}: not a JSON object; the metrics log is damaged") from None
            if run.is_main:
                warn(f"{run.metrics_path}:{i + 1}: an incomplete last line (cut short) is left out")
    return rows


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
