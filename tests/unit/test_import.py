"""`import preftune` (and the CLI's --help) must not import torch or transformers."""

import subprocess
import sys

CODE = """
import sys
import {mod}
heavy = sorted(m for m in ("torch", "transformers", "accelerate", "peft", "datasets") if m in sys.modules)
print(",".join(heavy))
"""


def _heavy_after_import(mod: str) -> str:
    out = subprocess.run([sys.executable, "-c", CODE.format(mod=mod)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_import_preftune_is_cheap():
    assert _heavy_after_import("preftune") == ""


def test_data_layer_and_cli_are_cheap():
    for mod in ("preftune.data", "preftune.data.io", "preftune.config", "preftune.models", "preftune.cli"):
        assert _heavy_after_import(mod) == "", mod


def test_cli_help_builds_every_parser_without_torch():
    code = ("import sys; from preftune.cli import build_parser; build_parser(); "
            "print(','.join(m for m in ('torch','transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
