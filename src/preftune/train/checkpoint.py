"""Checkpoints that resume exactly and never run code from a run folder.

RUN/checkpoints/step_N/ holds what accelerate's save_state writes for the model and optimiser (the
model as safetensors; optimizer.bin, which accelerate loads with torch.load(weights_only=True)), and
what preftune writes itself as plain JSON: the scheduler (`scheduler.json`), every RNG of every process
(`rng_state_R.json`) and `trainer_state.json` (the step, and a sha256 manifest of every file), written
last. Nothing is registered with accelerate's register_for_checkpointing, whose custom states are
unpickled with weights_only=False: a pickle planted in a checkpoint is never loaded.

Loading verifies the manifest first: a checkpoint with a missing, truncated or altered file (or an
unreadable trainer_state.json) is named on stderr and the previous intact one is used instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import random
import shutil
from pathlib import Path

from preftune.train.run import Run, warn

STATE_FILE = "trainer_state.json"
SCHEDULER_FILE = "scheduler.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _b64(t) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode()


def rng_state() -> dict:
    """Every RNG this process draws from, as JSON-able values (no pickle)."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, pstate, pgauss = random.getstate()
    out = {"python": [version, list(pstate), pgauss], "torch": _b64(torch.get_rng_state()),
           "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available():
        out["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    def tensor(s: str):
        return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)

    version, pstate, pgauss = state["python"]
    random.setstate((version, tuple(pstate), pgauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensor(s) for s in state["cuda"]])


def save_checkpoint(accelerator, run: Run, step: int, keep: int, scheduler, extra: dict | None = None) -> Path:
    """Model + optimiser (accelerate), scheduler and RNG (JSON), the loop position; then prune."""
    path = run.checkpoints_dir / f"step_{step}"
    accelerator.save_state(str(path))
    (path / f"rng_state_{accelerator.process_index}.json").write_text(json.dumps(rng_state()))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (path / SCHEDULER_FILE).write_text(json.dumps(scheduler.state_dict()))
        files = {p.name: _sha256(p) for p in sorted(path.iterdir()) if p.is_file() and p.name != STATE_FILE}
        (path / STATE_FILE).write_text(json.dumps({"step": step, **(extra or {}), "files": files}))
        ckpts = sorted(run.checkpoints_dir.glob("step_*"), key=_step_of)
        for old in ckpts[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def _step_of(p: Path) -> int:
    try:
        return int(p.name.split("_")[1])
    except (IndexError, ValueError):
        return -1


def checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint folders that finished writing (trainer_state.json present), newest first."""
    found = [p for p in (Path(run_dir) / "checkpoints").glob("step_*")
             if (p / STATE_FILE).exists() and _step_of(p) >= 0]
    return sorted(found, key=_step_of, reverse=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[0] if found else None


def verify_checkpoint(path: Path, num_processes: int) -> dict:
    """trainer_state of an intact checkpoint; ValueError saying what is damaged otherwise."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path / STATE_FILE} is unreadable ({e})") from None
    if (not isinstance(state, dict) or not isinstance(state.get("step"), int)
            or not isinstance(state.get("files"), dict)):
        raise ValueError(f"{path / STATE_FILE} holds no step and file manifest")  # noqa: TRY004 (a damaged file)
    for name, sha in state["files"].items():
        f = path / name
        if not f.is_file():
            raise ValueError(f"{f} is missing")
        if _sha256(f) != sha:
            raise ValueError(f"{f} is damaged (its sha256 differs from the manifest)")
    needed = [SCHEDULER_FILE] + [f"rng_state_{r}.json" for r in range(num_processes)]
    missing = [n for n in needed if n not in state["files"]]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)} (written by another number of processes?)")
    return state


def load_checkpoint(accelerator, run_dir: str | Path, scheduler) -> dict:
    """Restore the newest intact checkpoint (a damaged one is named and skipped); its trainer_state."""
    found = checkpoints(run_dir)
    if not found:
        raise ValueError(f"resume=true but {Path(run_dir) / 'checkpoints'} holds no checkpoint; "
                         "pass overwrite=true (instead of resume=true) to start the run over")
    for path in found:
        try:
            state = verify_checkpoint(path, accelerator.num_processes)
            accelerator.load_state(str(path))
            scheduler.load_state_dict(json.loads((path / SCHEDULER_FILE).read_text()))
            set_rng_state(json.loads((path / f"rng_state_{accelerator.process_index}.json").read_text()))
        except (ValueError, OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as e:
            if accelerator.is_main_process:
                warn(f"checkpoint {path} cannot be used ({e}); trying the previous one")
            continue
        if path != found[0] and accelerator.is_main_process:
            warn(f"resuming from {path.name}, the newest intact checkpoint")
        return state
    raise ValueError(f"resume=true but no checkpoint in {Path(run_dir) / 'checkpoints'} is intact "
                     f"({', '.join(p.name for p in found)} are damaged)")
