"""Helpers shared by the training tests (importable as `helpers`: pyproject puts tests/ on the path):
small world data files, a stage run in-process that returns what it wrote (metrics rows, run.json),
and a 2-process DDP launch of the real CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_world_files(tmp_path_factory) -> dict:
    """24 training pairs and 16 held-out pairs of the synthetic world (seed 0)."""
    from preftune.data.io import write_rows
    from preftune.world.generate import generate_world

    d = tmp_path_factory.mktemp("world")
    w = generate_world(24, seed=0, num_test_pairs=16)
    write_rows(w.train, d / "train.jsonl")
    write_rows(w.test, d / "test.jsonl")
    return {"train": str(d / "train.jsonl"), "test": str(d / "test.jsonl"), "dir": d}


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows (dicts, or strings written as they are) as a JSON-lines file; returns the path."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_run(out: str | Path) -> tuple[list[dict], dict]:
    out = Path(out)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return rows, json.loads((out / "run.json").read_text())


def train_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "train/loss" in r]


# Small and fast: 64 tokens at most, no tensorboard, no end checkpoint unless asked.
FAST = ["model=tiny-llama", "max_length=64", "report_to=none", "save_every=-1", "lr=1e-3"]


def run_stage(cls, train_fn, out: Path, data: str, *overrides: str):
    from preftune.config import load_config

    cfg = load_config(cls, overrides=[*FAST, f"data={data}", f"out={out}", *overrides])
    train_fn(cfg)
    return read_run(out)


def launch_ddp(*cli_args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`preftune <cli_args>` in 2 gloo processes on CPU, one torch thread each.

    accelerate 1.15's `launch --cpu --num_processes 2` starts ONE process unless MPI is set up (its
    simple launcher); the torch.distributed launcher (--multi_gpu) with ACCELERATE_USE_CPU=true starts
    two, and Accelerator then picks MULTI_CPU with gloo. The training command itself is unchanged.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO / 'tests'}",
           "ACCELERATE_USE_CPU": "true"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), "-m", "preftune", *cli_args, "num_threads=1"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


# Rewards for online-RL tests (`reward=py:helpers:NAME`; launch_ddp puts tests/ on the path too).
def length_reward(prompts, completions, **columns):
    """Characters of the completion / 10: a reward every sample of a tiny random model differs in."""
    return [len(c) / 10 for c in completions]


def constant_reward(prompts, completions, **columns):
    return [1.0 for _ in completions]


def vowel_reward(prompts, completions, **columns):
    """Share of the completion's characters that are vowels (None for an empty completion: skipped)."""
    return [sum(ch in "aeiou" for ch in c) / len(c) if c else None for c in completions]


# ------------------------------------------------------------------ a stub OpenAI-compatible judge

def judged_responses(text: str) -> tuple[str, str]:
    """(Response A, Response B) of a judge prompt (eval.judges.JUDGE_PROMPT's layout)."""
    import re

    first = re.search(r"\[Response A\]\n(.*?)\n\n\[Response B\]", text, re.DOTALL).group(1)
    second = re.search(r"\[Response B\]\n(.*?)\n\nAnswer", text, re.DOTALL).group(1)
    return first, second


def answer_chat(handler, content: str) -> None:
    """Answer a BaseHTTPRequestHandler's request as an OpenAI chat completion whose message is `content`."""
    data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
