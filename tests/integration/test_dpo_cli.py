"""`preftune train dpo` / `train sft` through the real CLI: a run folder a user can read, each bad input
refused with its own message and exit code 1 before any model is loaded, and 2-process DDP (gloo, CPU)
giving the same losses as one process with the matching gradient accumulation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import launch_ddp, write_jsonl

from preftune.cli import main

FAST = ["max_length=64", "report_to=none", "save_every=-1", "lr=1e-3"]


def _cli(capsys, *argv):
    rc = main(["train", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def no_model(monkeypatch):
    """Fail loudly if a bad-input path gets as far as loading a model."""
    import preftune.models

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(preftune.models, "load_policy", refuse)


def _jsonl(path: Path, rows: list[dict]) -> str:
    return str(write_jsonl(path, rows))


def test_bad_inputs_fail_before_training(tmp_path, capsys, world_files, no_model):
    data = world_files["train"]
    cases = [
        (["loss=ipo", "reference=none"], data, "loss ipo needs a reference model but reference=none"),
        (["loss=dpoo"], data, "unknown loss 'dpoo'; valid: sigmoid, ipo, hinge"),
        ([], _jsonl(tmp_path / "u.jsonl", [{"prompt": "p", "completion": "c", "label": True}]),
         "1 unpaired row(s) (prompt/completion/label; first: row 1), but loss 'sigmoid' needs pairs"),
        (["on_overlong=error", "max_length=16"],
         _jsonl(tmp_path / "long.jsonl", [{"prompt": "why " * 40, "chosen": "a", "rejected": "b"}]),
         "row 0: prompt + response has"),
        (["reference=adapter"], data, "reference=adapter needs lora.enabled=true"),
        (["use_margin=true", "loss=ipo"], data, "use_margin: loss 'ipo' takes no margin"),
    ]
    for i, (overrides, path, message) in enumerate(cases):
        out = tmp_path / f"run{i}"
        rc, _, err = _cli(capsys, "dpo", "--model", "tiny-llama", "--data", path, "--out", str(out), *FAST, *overrides)
        assert rc == 1 and "preftune: error:" in err and message in err, (overrides, err)
        assert not out.exists()  # nothing was started


def test_cli_run_writes_a_readable_run_folder_and_counts_truncation(tmp_path, capsys):
    data = _jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "why " * 80, "chosen": "Because.", "rejected": "No."},
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."}])
    out = tmp_path / "run"
    rc, stdout, _ = _cli(capsys, "dpo", "--model", "tiny-llama", "--data", data, "--out", str(out), *FAST,
                         "batch_size=2", "max_steps=1")
    assert rc == 0 and f"final model: {out / 'final'}" in stdout
    info = json.loads((out / "run.json").read_text())
    assert info["tokenization"]["train"]["num_truncated"] == 1 and info["tokenization"]["train"]["num_rows"] == 2
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    for k in ("train/loss", "train/rewards/chosen", "train/rewards/rejected", "train/rewards/margin",
              "train/rewards/accuracy", "train/logps/chosen", "train/logps/rejected", "train/kl",
              "train/lengths/chosen", "train/lengths/rejected", "train/grad_norm", "train/lr"):
        assert k in row, k
    assert (out / "final" / "config.json").exists() and (out / "final" / "model.safetensors").exists()
    # the run folder is not reused by accident
    rc, _, err = _cli(capsys, "dpo", "--model", "tiny-llama", "--data", data, "--out", str(out), *FAST)
    assert rc == 1 and "exists and is not empty" in err


def test_two_process_ddp_equals_one_process_with_accumulation(tmp_path, world_files):
    from preftune.config import load_config
    from preftune.train.dpo import DPOConfig, train_dpo

    common = ["model=tiny-llama", f"data={world_files['train']}", "max_steps=2", "batch_size=2", *FAST]
    train_dpo(load_config(DPOConfig, overrides=[*common, f"out={tmp_path / 'one'}", "grad_accum=2"]))
    proc = launch_ddp("train", "dpo", *common, f"out={tmp_path / 'ddp'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {}
    for name in ("one", "ddp"):
        rows[name] = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert len(rows["one"]) == len(rows["ddp"]) == 2
    for a, b in zip(rows["one"], rows["ddp"]):
        for k in ("train/loss", "train/grad_norm", "train/rewards/margin", "train/logps/chosen",
                  "train/lengths/chosen"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-5), k
