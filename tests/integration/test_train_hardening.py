"""Issue 16 on the training side: no code runs from a run folder, a damaged checkpoint falls back to
the previous intact one, a non-finite loss stops the run within one step (RM, SFT, DPO), resume refuses a
changed config or data, and every bad setting fails before any folder exists or any model loads."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from helpers import write_jsonl

from preftune.cli import main

BASE = ["max_length=64", "report_to=none", "num_threads=1"]


class _Payload:
    """Unpickling this runs code: it creates the marker file named in `path`."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _plant(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(_Payload(marker)))


def _rows(n: int = 12) -> list[dict]:
    return [{"prompt": f"Question {i}: what is {i} plus {i}?", "chosen": f"It is {2 * i}.", "rejected": "No idea."}
            for i in range(n)]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> str:
    return str(write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", _rows()))


def _dpo(pairs: str, out: Path, *extra: str) -> list[str]:
    return ["train", "dpo", "--model", "tiny-llama", "--data", pairs, "--out", str(out), *BASE, "batch_size=4",
            "lr=1e-3", *extra]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def unbroken(pairs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "full"
    assert main(_dpo(pairs, out, "max_steps=3", "save_every=1", "keep_checkpoints=3")) == 0
    return out


def _broken_copy(unbroken: Path, tmp_path: Path) -> Path:
    broken = tmp_path / "broken"
    shutil.copytree(unbroken, broken)
    shutil.rmtree(broken / "final")
    return broken


def test_planted_pickles_never_run_and_a_damaged_checkpoint_falls_back(pairs, unbroken, tmp_path, capsys):
    broken = _broken_copy(unbroken, tmp_path)
    marker = tmp_path / "pwned"
    # step_3 (the newest) gets payloads in every pickle-shaped file: accelerate's custom state (never
    # registered), its RNG file and the optimizer file (both listed in the manifest, so now "damaged")
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"):
        _plant(broken / "checkpoints" / "step_3" / name, marker)
    _plant(broken / "checkpoints" / "step_2" / "custom_checkpoint_0.pkl", marker)  # not in the manifest
    assert main(_dpo(pairs, broken, "max_steps=3", "save_every=1", "keep_checkpoints=3", "resume=true")) == 0
    assert not marker.exists()
    err = capsys.readouterr().err
    # step_3: its files differ from the manifest; step_2: accelerate refuses a custom state nobody registered
    assert "step_3/optimizer.bin is damaged" in err and "step_2 cannot be used" in err
    assert "resuming from step_1" in err
    assert _metrics(broken) == _metrics(unbroken)  # resumed from step 1: the same run


def test_a_forged_manifest_still_runs_no_pickle(pairs, unbroken, tmp_path):
    """Even with a manifest that matches the planted file, the optimizer is loaded with weights_only=True."""
    broken = _broken_copy(unbroken, tmp_path)
    marker = tmp_path / "pwned"
    ckpt = broken / "checkpoints" / "step_3"
    _plant(ckpt / "optimizer.bin", marker)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    from preftune.train.checkpoint import _sha256

    state["files"]["optimizer.bin"] = _sha256(ckpt / "optimizer.bin")
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    assert main(_dpo(pairs, broken, "max_steps=3", "save_every=1", "keep_checkpoints=3", "resume=true")) == 0
    assert not marker.exists()
    assert _metrics(broken) == _metrics(unbroken)


def test_empty_trainer_state_and_partial_metrics_line(pairs, unbroken, tmp_path, capsys):
    broken = _broken_copy(unbroken, tmp_path)
    (broken / "checkpoints" / "step_3" / "trainer_state.json").write_text("")
    with open(broken / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "train/lo')  # killed mid-write
    assert main(_dpo(pairs, broken, "max_steps=3", "save_every=1", "keep_checkpoints=3", "resume=true")) == 0
    err = capsys.readouterr().err
    assert "trainer_state.json is unreadable" in err and "incomplete last line" in err
    assert _metrics(broken) == _metrics(unbroken)


def test_resume_refuses_a_changed_config_or_data_naming_the_keys(pairs, unbroken, tmp_path, capsys):
    broken = _broken_copy(unbroken, tmp_path)
    args = _dpo(pairs, broken, "max_steps=3", "save_every=1", "keep_checkpoints=3", "resume=true")
    before = (broken / "config.yaml").read_text()
    assert main([*args, "beta=0.5", "lr=2e-3"]) == 1
    err = capsys.readouterr().err
    assert "config differs from the run's in beta, lr" in err and "resume_allow_changes=[beta,lr]" in err
    assert (broken / "config.yaml").read_text() == before  # nothing overwritten
    other = str(write_jsonl(tmp_path / "other.jsonl", _rows(13)))
    assert main([a if a != pairs else other for a in args]) == 1
    assert "not the file the run trained on" in capsys.readouterr().err
    # an explicit override is accepted: the run continues under the new lr
    assert main([*args, "lr=2e-3", "resume_allow_changes=[lr]"]) == 0


def test_resume_needs_an_existing_run_folder(pairs, tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(_dpo(pairs, missing, "resume=true")) == 1
    assert "does not exist" in capsys.readouterr().err and not missing.exists()


@pytest.mark.parametrize("stage,model,extra", [
    ("dpo", "tiny-llama", []), ("sft", "tiny-llama", []), ("rm", "tiny-bert", [])])
def test_a_non_finite_loss_stops_the_run_within_one_step(pairs, tmp_path, capsys, stage, model, extra):
    out = tmp_path / stage
    # an absurd learning rate: after the first update the weights overflow and the loss is NaN / inf
    args = ["train", stage, "--model", model, "--data", pairs, "--out", str(out), *BASE, "batch_size=4",
            "max_steps=6", "lr=1e38", "max_grad_norm=0", "save_every=1", *extra]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "became non-finite" in err and "Traceback" not in err
    info = json.loads((out / "run.json").read_text())
    failed = info["failed"]
    assert failed["kind"] == "non_finite" and f"step {failed['step']}:" in err
    logged = [r["step"] for r in _metrics(out)] if (out / "metrics.jsonl").exists() else []
    assert all(s < failed["step"] for s in logged)  # nothing logged at or after the failing step
    assert not (out / "final").exists()


@pytest.mark.parametrize("override,key", [
    ("beta=0", "beta"), ("beta=-1", "beta"), ("label_smoothing=1.5", "label_smoothing"), ("lr=-1", "lr"),
    ("warmup_ratio=1.5", "warmup_ratio"), ("max_grad_norm=-1", "max_grad_norm"),
    ("keep_checkpoints=0", "keep_checkpoints"), ("max_steps=0", "max_steps"), ("lr=.nan", "lr"),
    ("epochs=0", "epochs"), ("loss=exo_pair", "label_smoothing")])
def test_settings_that_cannot_be_meant_fail_before_any_folder(pairs, tmp_path, capsys, override, key):
    out = tmp_path / "run"
    assert main(_dpo(pairs, out, override)) == 1
    assert f"{key}:" in capsys.readouterr().err
    assert not out.exists()


def test_rm_heads_without_data_and_negative_margin_scale(pairs, tmp_path, capsys):
    out = tmp_path / "rm"
    args = ["train", "rm", "--model", "tiny-bert", "--data", pairs, "--out", str(out), *BASE, "max_steps=1"]
    assert main([*args, "heads=[helpfulness]"]) == 1
    assert "no row has a verdict for helpfulness" in capsys.readouterr().err and not out.exists()
    assert main([*args, "margin_scale=-1"]) == 0
    assert "margin_scale=-1.0 < 0" in capsys.readouterr().err


def test_bad_yaml_out_that_is_a_file_and_unwritable_folder(pairs, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("beta: [0.1\n")
    assert main(_dpo(pairs, tmp_path / "a", "--config", str(cfg))) == 1
    err = capsys.readouterr().err
    assert f"{cfg}: not valid YAML (line" in err and "Traceback" not in err
    assert main(_dpo(pairs, tmp_path / "a", "beta=[0.1")) == 1
    assert "override beta=[0.1: not a valid YAML value" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    assert main(_dpo(pairs, a_file, "max_steps=1")) == 1
    assert "is a file, not a folder" in capsys.readouterr().err and a_file.read_text() == "keep me"


def test_encoder_max_length_is_clamped_to_its_positions(tmp_path, capsys):
    long = [{"prompt": "word " * 700, "chosen": "yes " * 30, "rejected": "no"} for _ in range(2)]
    data = str(write_jsonl(tmp_path / "long.jsonl", long))
    out = tmp_path / "rm"
    assert main(["train", "rm", "--model", "tiny-bert", "--data", data, "--out", str(out), "report_to=none",
                 "max_steps=1", "batch_size=2", "num_threads=1"]) == 0
    err = capsys.readouterr().err
    assert "max_length=1024 is longer than the model's 512 positions; using max_length=512" in err
    info = json.loads((out / "final" / "preftune_rm.json").read_text())
    assert info["max_length"] == 512
    assert json.loads((out / "run.json").read_text())["tokenization"]["train"]["num_truncated"] == 2
