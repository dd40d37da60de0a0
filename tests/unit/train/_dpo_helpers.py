"""Fixtures for the SFT/DPO training tests (imported by them; not a conftest, so other stages' tests
in this folder are unaffected; each test module wraps them in its own fixtures): small world data files and a helper that runs a stage
in-process and returns what it wrote (metrics rows, run.json)."""

from __future__ import annotations

import json
from pathlib import Path


def make_world_files(tmp_path_factory) -> dict:
    """24 training pairs and 16 held-out pairs of the synthetic world (seed 0)."""
    from preftune.data.io import write_rows
    from preftune.data.world import generate_world

    d = tmp_path_factory.mktemp("world")
    w = generate_world(24, seed=0, num_test_pairs=16)
    write_rows(w.train, d / "train.jsonl")
    write_rows(w.test, d / "test.jsonl")
    return {"train": str(d / "train.jsonl"), "test": str(d / "test.jsonl"), "dir": d}


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


def single_thread():
    """Generator for an autouse fixture: one torch thread: on a shared 2-core machine, two OpenMP threads spin-wait on each other and a
    tiny-llama step gets ~5x slower. Restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
