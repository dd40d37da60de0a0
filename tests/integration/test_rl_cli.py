"""`preftune train rl` through the real CLI on a tiny random model: each algorithm's first step shows the
exact values a correct implementation must give (KL 0 and ratio 1 before any update, zero DPO margins
against an identical reference), a reward every sample shares trains nothing, every bad input is refused
before a model loads, resume continues the same run, and 2-process DDP equals one process with the
matching gradient accumulation."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from helpers import launch_ddp, write_jsonl

from preftune.cli import main

FAST = ["--model", "tiny-llama", "max_length=64", "max_new_tokens=8", "report_to=none", "save_every=-1",
        "lr=1e-3", "batch_size=2", "num_generations=4"]


def _rl(prompts: str, out: Path, *overrides: str) -> list[str]:
    return ["train", "rl", "--prompts", prompts, "--out", str(out), *FAST, *overrides]


def _metrics(out: Path, drop_perf: bool = True) -> list[dict]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if not (drop_perf and k.startswith("perf/"))} for r in rows]


@pytest.fixture
def no_model(monkeypatch):
    import preftune.models
    import preftune.train.rl

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    for mod in (preftune.models, preftune.train.rl):
        monkeypatch.setattr(mod, "load_policy", refuse)


def test_bad_inputs_are_refused_before_any_model_loads(tmp_path, capsys, world_files, no_model):
    prompts = world_files["train"]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    no_role = write_jsonl(tmp_path / "norole.jsonl", [{"prompt": "fine"}, {"prompt": [{"content": "hi"}]}])
    cases = [
        (prompts, ["--algo", "reinforce"], "algo"),
        (prompts, ["--reward", "golden"], "unknown component 'golden'"),
        (prompts, ["--reward", "py:no_such_module_xyz:f"], "cannot import it"),
        (prompts, ["--reward", "judge:gold"], "a pairwise judge gives no score per completion; use algo=online_dpo"),
        (prompts, ["num_generations=1"], "num_generations"),
        (prompts, ["--algo", "ppo", "kl_in=loss"], "PPO puts the KL penalty in the per-token reward"),
        (prompts, ["max_new_tokens=64"], "max_new_tokens"),
        (prompts, ["kl_target=0.1", "kl_coef=0"], "kl_target needs kl_coef > 0"),
        (str(empty), [], "no prompts"),
        (str(no_role), [], "norole.jsonl:2"),
        (str(tmp_path / "missing.jsonl"), [], "does not exist"),
    ]
    for i, (path, extra, message) in enumerate(cases):
        out = tmp_path / f"run{i}"
        assert main(_rl(path, out, *extra)) == 1, extra
        err = capsys.readouterr().err
        assert "preftune: error:" in err and message in err and "Traceback" not in err, (extra, err)
        assert not out.exists()


@pytest.mark.parametrize("algo", ["grpo", "rloo", "ppo", "online_dpo"])
def test_each_algorithm_starts_where_the_reference_is(algo, tmp_path, world_files):
    out = tmp_path / algo
    assert main(_rl(world_files["train"], out, "--algo", algo, "--reward", "py:helpers:length_reward",
                    "--eval-prompts", world_files["test"], "max_steps=2", "eval_every=2")) == 0
    rows = _metrics(out)
    train = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train] == [1, 2]
    first = train[0]
    assert all(math.isfinite(v) for r in train for v in r.values())
    # before the first update the policy IS the reference: KL exactly 0; one pass on fresh samples: ratio 1
    assert first["train/kl"] == pytest.approx(0.0, abs=1e-6)
    assert first["train/reward"] == pytest.approx(first["train/rewards/length_reward"], rel=1e-6)
    assert 0 < first["train/completion_length"] <= 8
    if algo == "online_dpo":
        assert first["train/rewards/margin"] == pytest.approx(0.0, abs=1e-5)  # identical policy and reference
    else:
        assert first["train/clip/region"] == 0.0
    if algo == "ppo":
        assert first["train/value_loss"] > 0  # a zero value head against non-zero returns
    assert train[1]["train/kl"] > 0  # the update moved the policy
    evals = [r for r in rows if "eval/reward" in r]
    assert [r["step"] for r in evals][:1] == [0]  # the curve starts at the starting model
    assert {"eval/reward", "eval/proxy"} <= set(evals[-1])
    assert (out / "final" / "config.json").exists()
    info = json.loads((out / "run.json").read_text())
    assert info["algo"] == algo and info["reference"] == "frozen copy"


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_a_reward_every_sample_shares_trains_nothing(algo, tmp_path, world_files):
    """Group baselines: equal rewards give zero advantages, so (without a KL term) a zero loss and gradient."""
    out = tmp_path / algo
    assert main(_rl(world_files["train"], out, "--algo", algo, "--reward", "py:helpers:constant_reward",
                    "kl_coef=0", "max_steps=2")) == 0
    for r in _metrics(out):
        assert r["train/loss"] == 0.0 and r["train/grad_norm"] == 0.0
        assert r["train/reward_std"] == 0.0


def test_lora_reference_is_the_base_with_the_adapter_off_and_judge_rewards_work(tmp_path, world_files):
    out = tmp_path / "lora"
    assert main(_rl(world_files["train"], out, "--algo", "online_dpo", "--reward", "judge:gold",
                    "lora.enabled=true", "lora.r=4", "max_steps=2")) == 0
    first = _metrics(out)[0]
    assert first["train/kl"] == pytest.approx(0.0, abs=1e-6)
    info = json.loads((out / "run.json").read_text())
    assert info["reference"] == "adapter-disabled base"
    assert (out / "final" / "adapter_config.json").exists()


@pytest.mark.parametrize("algo", ["grpo", "rloo", "ppo", "online_dpo"])
def test_resume_continues_the_same_run(algo, tmp_path, world_files):
    args = ["--algo", algo, "--reward", "py:helpers:length_reward", "max_steps=4", "save_every=2",
            "keep_checkpoints=3",
            "kl_target=0.01"]  # the adaptive KL coefficient must come back from the checkpoint too
    unbroken = tmp_path / "unbroken"
    assert main(_rl(world_files["train"], unbroken, *args)) == 0
    broken = tmp_path / "broken"
    shutil.copytree(unbroken, broken)
    shutil.rmtree(broken / "final")
    shutil.rmtree(broken / "checkpoints" / "step_4")
    assert main(_rl(world_files["train"], broken, *args, "resume=true")) == 0
    a, b = _metrics(unbroken), _metrics(broken)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert a == b
    assert len({r["train/kl_coef"] for r in a}) > 1  # the coefficient did move


def test_two_process_ddp_equals_one_process_with_accumulation(tmp_path, world_files):
    common = ["--reward", "py:helpers:length_reward", "max_steps=2", "num_threads=1"]
    assert main(_rl(world_files["train"], tmp_path / "one", *common, "grad_accum=2")) == 0
    proc = launch_ddp(*_rl(world_files["train"], tmp_path / "ddp", *common))
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, ddp = _metrics(tmp_path / "one"), _metrics(tmp_path / "ddp")
    assert len(one) == len(ddp) == 2
    for a, b in zip(one, ddp):
        for k in ("train/reward", "train/loss", "train/kl", "train/grad_norm", "train/completion_length",
                  "train/entropy"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k


def test_a_non_finite_loss_stops_the_run_within_one_step(tmp_path, world_files, capsys):
    out = tmp_path / "nan"
    # an absurd learning rate: after the first update the weights overflow
    assert main(_rl(world_files["train"], out, "--reward", "py:helpers:length_reward", "max_steps=4",
                    "lr=1e38", "max_grad_norm=0", "save_every=1")) == 1
    err = capsys.readouterr().err
    assert "non-finite" in err and "Traceback" not in err
    failed = json.loads((out / "run.json").read_text())["failed"]
    assert failed["kind"] == "non_finite"
    assert all(r["step"] < failed["step"] for r in _metrics(out))
    assert not (out / "final").exists()
