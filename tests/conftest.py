"""Shared test set-up: a private model cache (built once per machine) and fixture helpers."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"

# Tiny models are materialised into this cache on first use; keep it out of the user's home.
os.environ.setdefault("PREFTUNE_CACHE", str(REPO / ".cache" / "preftune"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# One torch thread per process: results that tests compare exactly never depend on the load, and
# the 2-process DDP tests do not oversubscribe 2 cores.
os.environ.setdefault("PREFTUNE_NUM_THREADS", "1")


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


def write_jsonl(path: Path, rows: list) -> Path:
    import json

    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path
