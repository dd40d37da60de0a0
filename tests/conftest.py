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


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread in-process too: on a shared 2-core machine two OpenMP threads spin-wait on each
    other and a tiny-llama step gets ~5x slower. Torch is only touched when a test module imported it."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world_files(tmp_path_factory) -> dict:
    """24 training pairs and 16 held-out pairs of the synthetic world (see helpers.make_world_files)."""
    from helpers import make_world_files

    return make_world_files(tmp_path_factory)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
