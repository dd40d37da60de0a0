"""Shared harness for the side-by-side benchmarks against TRL (stdlib only at import time).

Imported by the drivers (`rm_vs_trl.py`, `dpo_vs_trl.py`, run with preftune's venv) and by the
workers of both venvs (each worker runs in its own process so that its peak RSS is its own).

A worker reads a JSON spec (path in argv[1]), trains, and prints one line `RESULT {json}` on stdout.
The driver starts it with `run_worker`, which reaps it with `os.wait4` so that `ru_maxrss` is the
peak resident memory of that child alone (RUSAGE_CHILDREN would be the max over all children).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
PREFTUNE_PY = str(ROOT / ".venv" / "bin" / "python")
TRL_PY = str(BENCH / ".trl-venv" / "bin" / "python")
# the workspace's shared data sits beside the checkout: ../shared/data (see its README for licences)
ALPACA = ROOT.parent / "shared" / "data" / "alpaca_eval" / "alpacaeval1_gpt4_pairs.jsonl.gz"
RESULT_PREFIX = "RESULT "


# --------------------------------------------------------------------------- data

def load_pairs(n: int, path: Path = ALPACA) -> list[dict]:
    """The first `n` rows of the AlpacaEval pairs file (a fixed selection: no sampling), as
    {prompt, chosen, rejected} strings."""
    rows = []
    with gzip.open(path, "rt") as f:
        for line in f:
            row = json.loads(line)
            rows.append({"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]})
            if len(rows) == n:
                break
    if len(rows) < n:
        raise ValueError(f"{path} has only {len(rows)} rows, {n} asked")
    return rows


def write_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return p


def as_conversation(row: dict) -> dict:
    """Plain-string pair -> chat messages (what TRL needs to apply a chat template)."""
    return {"prompt": [{"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}]}


# --------------------------------------------------------------------------- pure helpers

def padding_share(real_tokens: int, computed_positions: int) -> float:
    """Share of the positions a model computed on that are padding: 1 - real / computed."""
    if computed_positions <= 0:
        return 0.0
    return 1.0 - real_tokens / computed_positions


def throughput(num_pairs: int, seconds: float) -> float:
    return num_pairs / seconds if seconds > 0 else float("nan")


def steady_step_seconds(step_end_times: Sequence[float], warmup: int) -> float:
    """Mean seconds per optimiser step after `warmup` steps, from the end times of the steps.

    Step i's duration is end[i] - end[i-1]; the first `warmup` steps (whose end times still serve as
    the start of the next step) are excluded. Needs at least warmup + 1 end times."""
    if warmup < 1:
        raise ValueError("warmup must be >= 1: the first step has no previous end time")
    if len(step_end_times) < warmup + 1:
        raise ValueError(f"need > {warmup} steps, got {len(step_end_times)}")
    durations = [b - a for a, b in zip(step_end_times[warmup - 1:-1], step_end_times[warmup:])]
    return sum(durations) / len(durations)


def overall_pairs_per_s(num_pairs: int, train_pairs_per_s: float, ref_pass_s: float) -> float:
    """One epoch over `num_pairs` at `train_pairs_per_s` plus a one-off reference pass, as pairs/s."""
    return num_pairs / (num_pairs / train_pairs_per_s + ref_pass_s)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(x) for x in r) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- machine / versions

def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    except OSError:
        return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def loadavg() -> float:
    return os.getloadavg()[0]


def venv_versions(python: str) -> dict:
    code = ("import importlib.metadata as m, json, platform\n"
            "out={'python': platform.python_version()}\n"
            "for p in ('torch','transformers','trl','peft','accelerate','datasets','preftune'):\n"
            "    try: out[p]=m.version(p)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    res = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    return json.loads(res.stdout) if res.returncode == 0 else {"error": res.stderr[-300:]}


def machine() -> str:
    import platform

    def first(path: str, prefix: str) -> str:
        try:
            return next((x for x in Path(path).read_text().splitlines() if x.startswith(prefix)), "")
        except OSError:
            return ""

    cpu = first("/proc/cpuinfo", "model name").split(":", 1)[-1].strip()
    total = first("/proc/meminfo", "MemTotal").split()
    mem = f"{int(total[1]) / 2**20:.0f} GiB RAM" if len(total) > 1 else ""
    return f"{os.cpu_count()} cores ({cpu}), {mem}, {platform.platform()}"


# --------------------------------------------------------------------------- running workers

def _relative(arg: str) -> str:
    """A command-line word with this checkout's absolute prefix removed (results name repo paths)."""
    return arg[len(str(ROOT)) + 1:] if arg.startswith(str(ROOT) + "/") else arg


def run_worker(python: str, script: str, spec: dict, log_dir: Path, name: str, nice: int = 0,
               env: dict | None = None) -> dict:
    """Run `python benchmarks/script spec.json` in its own process; return its RESULT dict plus
    `peak_rss_mb` (that child's ru_maxrss), `wall_s`, and the load before and after."""
    log_dir.mkdir(parents=True, exist_ok=True)
    spec_path = log_dir / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    out_path, err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    cmd = [python, str(BENCH / script), str(spec_path)]
    full_env = {**os.environ, **(env or {})}
    load_before = uptime()
    t0 = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=full_env, cwd=str(ROOT),
                                preexec_fn=(lambda: os.nice(nice)) if nice else None)  # noqa: PLW1509 (no threads here)
        # wait4 reaps this child and returns its own rusage (ru_maxrss in KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    text = out_path.read_text()
    result: dict = {}
    for line in text.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
    result.update(name=name, returncode=proc.returncode, wall_s=wall, peak_rss_mb=usage.ru_maxrss / 1024,
                  cpu_s=usage.ru_utime + usage.ru_stime,
                  load_before=load_before, load_after=uptime(), command=" ".join(_relative(c) for c in cmd))
    if proc.returncode != 0 or not result.get("ok", False):
        result["ok"] = False
        result["error_tail"] = err_path.read_text()[-3000:]
    return result


# --------------------------------------------------------------------------- inside a worker

class StepClock:
    """Timestamps of every optimiser step (a global AdamW post-step hook, so the same clock runs
    inside TRL's Trainer and preftune's loop) and of the model's first forward."""

    def __init__(self) -> None:
        self.step_ends: list[float] = []
        self.cpu_ends: list[float] = []  # process CPU seconds (all threads): robust to other users' load
        self.first_forward: float | None = None
        self.first_forward_cpu: float | None = None
        self.t0 = time.perf_counter()

    def install(self) -> StepClock:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        def hook(opt, args, kwargs):
            self.step_ends.append(time.perf_counter())
            self.cpu_ends.append(time.process_time())
        register_optimizer_step_post_hook(hook)
        return self

    def watch_forward(self, model) -> None:
        """Note the first forward of `model` or of its backbone (preftune calls decoders' backbones)."""
        def hook(mod, args, kwargs):
            if self.first_forward is None:
                self.first_forward = time.perf_counter()
                self.first_forward_cpu = time.process_time()
        model.register_forward_pre_hook(hook, with_kwargs=True)
        body = getattr(model, "base_model", None)
        if body is not None and body is not model:
            body.register_forward_pre_hook(hook, with_kwargs=True)

    def summary(self, pairs_per_step: int, warmup: int, num_pairs_epoch: int | None = None) -> dict:
        out: dict = {"num_steps": len(self.step_ends),
                     "step_end_s": [round(t - self.t0, 3) for t in self.step_ends]}
        if len(self.step_ends) > warmup:
            s = steady_step_seconds(self.step_ends, warmup)
            out["steady_step_s"] = s
            out["steady_pairs_per_s"] = pairs_per_step / s
            out["steady_step_cpu_s"] = steady_step_seconds(self.cpu_ends, warmup)
        if self.first_forward is not None and self.step_ends and num_pairs_epoch:
            span = self.step_ends[-1] - self.first_forward
            out["epoch_train_s"] = span
            out["epoch_pairs_per_s"] = num_pairs_epoch / span
            out["epoch_train_cpu_s"] = self.cpu_ends[-1] - self.first_forward_cpu
            out["epoch_pairs_per_cpu_s"] = num_pairs_epoch / out["epoch_train_cpu_s"]
        return out


class TokenCounter:
    """Counts real vs computed positions over a model's forward calls (from input_ids /
    attention_mask kwargs; a 2-D 0/1 mask counts its zeros as padding)."""

    def __init__(self) -> None:
        self.real = 0
        self.computed = 0
        self.calls = 0
        self.first_inputs: dict | None = None

    def watch(self, module, keep_first: bool = False) -> None:
        def hook(mod, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            embeds = kwargs.get("inputs_embeds")
            if ids is None and embeds is None:
                return
            shape = tuple(ids.shape if ids is not None else embeds.shape[:2])
            mask = kwargs.get("attention_mask")
            self.calls += 1
            self.computed += shape[0] * shape[1]
            if mask is not None and mask.dim() == 2 and tuple(mask.shape) == shape:
                self.real += int(mask.sum())
            else:
                self.real += shape[0] * shape[1]
            if keep_first and self.first_inputs is None:
                self.first_inputs = {k: v.tolist() for k, v in kwargs.items()
                                     if hasattr(v, "tolist") and k in ("input_ids", "attention_mask",
                                                                        "token_type_ids", "position_ids")}
                if ids is not None:
                    self.first_inputs["input_ids"] = ids.tolist()
        module.register_forward_pre_hook(hook, with_kwargs=True)

    def summary(self) -> dict:
        return {"forward_calls": self.calls, "real_tokens": self.real, "computed_positions": self.computed,
                "padding_share": padding_share(self.real, self.computed)}


def preftune_overrides(spec: dict, *stage: str) -> list[str]:
    """The key=value settings of a preftune contender: the spec's model, data, batch and optimiser (the
    same AdamW, schedule and clipping as TRL's), then the stage's own keys, then the spec's overrides."""
    out = [f"model={spec['model_path']}", f"data={spec['data_path']}", f"out={spec['out_dir']}",
           f"batch_size={spec['batch_size']}", f"max_length={spec['max_length']}",
           f"max_steps={spec.get('max_steps', -1)}", f"lr={spec['lr']}", f"seed={spec['seed']}", *stage,
           "overwrite=true", "log_every=1", "report_to=none", "warmup_ratio=0.0", "weight_decay=0.0",
           "max_grad_norm=1.0", "scheduler=linear", *spec.get("overrides", [])]
    if spec.get("num_threads"):
        out.append(f"num_threads={spec['num_threads']}")
    return out


def read_preftune_run(spec: dict) -> tuple[list[dict], dict, dict, int]:
    """A finished preftune run: its metrics rows, run.json, train tokenisation report, and input rows."""
    run = Path(spec["out_dir"])
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    info = json.loads((run / "run.json").read_text())
    tok = info.get("tokenization", {}).get("train", {})
    num_in = sum(1 for x in Path(spec["data_path"]).read_text().splitlines() if x.strip())
    return rows, info, tok, num_in


def read_spec() -> dict:
    return json.loads(Path(sys.argv[1]).read_text())


def emit(result: dict) -> None:
    import resource

    result.setdefault("ok", True)
    result["self_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def scratch_dir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix)


def median(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
