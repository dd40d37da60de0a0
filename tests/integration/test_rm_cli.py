"""`preftune train rm`, `preftune score` and `preftune eval rm` end to end on tiny models: resume
reproduces an unbroken run, scores equal the trainer's own forward, learning on the world is shown,
and each bad input gives one clear error before training."""

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import write_jsonl as _jsonl

from preftune.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from preftune.data.io import write_rows
    from preftune.world.generate import generate_world

    d = tmp_path_factory.mktemp("world")
    w = generate_world(320, seed=3, num_test_pairs=200)
    write_rows(w.train, d / "train.jsonl")
    write_rows(w.test, d / "test.jsonl")
    _jsonl(d / "small.jsonl", [r.to_dict() for r in w.train[:24]])
    return d


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_resume_reproduces_unbroken_run(world, tmp_path):
    # dropout kept on (tiny-bert has it): equal losses also prove the RNG state is restored
    run = tmp_path / "rm"
    args = ["train", "rm", "--model", "tiny-bert", "--data", str(world / "small.jsonl"), "--out", str(run),
            "max_steps=4", "batch_size=4", "save_every=2", "max_length=64", "report_to=none", "heads=auto",
            "disable_dropout=false"]
    assert main(args) == 0
    full = _metrics(run)
    assert [r["step"] for r in full] == [1, 2, 3, 4]
    for key in ("train/loss", "train/accuracy", "train/margin", "train/rewards/chosen", "train/rewards/rejected",
                "train/grad_norm", "train/lr"):
        assert all(np.isfinite(r[key]) for r in full), key
    info = json.loads((run / "run.json").read_text())
    assert info["tokenization"]["train"]["num_rows"] == 24 and "ended" in info
    rm_info = json.loads((run / "final" / "preftune_rm.json").read_text())
    assert rm_info["heads"][0] == "overall" and rm_info["encoder"] is True and rm_info["max_length"] == 64
    # break the run after step 2: keep only that checkpoint, then resume
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    shutil.rmtree(broken / "checkpoints" / "step_4")
    shutil.rmtree(broken / "final")
    assert main(args[:7] + [str(broken)] + args[8:] + ["resume=true"]) == 0
    assert _metrics(broken) == full


def test_score_equals_trainer_forward_and_eval(world, tmp_path):
    from preftune.batching import collate_pairs_shared
    from preftune.data.pairs import load_pairs
    from preftune.models import load_reward_model, load_tokenizer
    from preftune.models.forward import pair_rewards
    from preftune.tokenize import tokenize_pairs

    run = tmp_path / "llama"
    assert main(["train", "rm", "--model", "tiny-llama", "--data", str(world / "small.jsonl"), "--out", str(run),
                 "max_steps=2", "batch_size=4", "max_length=96", "report_to=none"]) == 0
    out = tmp_path / "scored.jsonl"
    assert main(["score", str(run), "--data", str(world / "small.jsonl"), "-o", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    # the trainer's forward: prefix-shared pairs through the saved model
    model = load_reward_model(run / "final", attn_implementation="sdpa").eval()
    tok = load_tokenizer(run / "final")
    items, _ = tokenize_pairs(load_pairs(str(world / "small.jsonl"))[0], tok, 96)
    with torch.no_grad():
        r = pair_rewards(model, collate_pairs_shared(items, tok.pad_token_id))
    assert np.allclose([x["chosen_reward"] for x in rows], r.chosen[:, 0].numpy(), atol=1e-5)
    assert np.allclose([x["rejected_reward"] for x in rows], r.rejected[:, 0].numpy(), atol=1e-5)
    assert main(["score", str(run), "--data", str(world / "small.jsonl"), "-o", str(out)]) == 1  # no --force
    # single responses
    single = _jsonl(tmp_path / "single.jsonl", [{"prompt": x["prompt"], "completion": x["chosen"]} for x in rows[:3]])
    assert main(["score", str(run), "--data", str(single), "-o", str(tmp_path / "s.jsonl")]) == 0
    got = [json.loads(x)["reward"] for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert np.allclose(got, [x["chosen_reward"] for x in rows[:3]], atol=1e-5)
    # eval: default output RUN/eval/rm.json, accuracy consistent with the scores
    assert main(["eval", "rm", str(run), "--data", str(world / "small.jsonl")]) == 0
    res = json.loads((run / "eval" / "rm.json").read_text())
    decided = [x for x in rows if not x.get("close")]
    assert res["num_pairs"] == 24 and res["num_ties"] == 24 - len(decided)
    assert res["accuracy"] == pytest.approx(np.mean([x["chosen_reward"] > x["rejected_reward"] for x in decided]))
    assert len(res["rewards"]["chosen"]) == 24


def test_ensemble_members_give_std(world, tmp_path):
    run = tmp_path / "ens"
    assert main(["train", "rm", "--model", "tiny-bert", "--data", str(world / "small.jsonl"), "--out", str(run),
                 "max_steps=1", "batch_size=8", "max_length=64", "report_to=none",
                 "ensemble.size=2", "ensemble.mode=members"]) == 0
    from preftune.models.scoring import load_scorer

    scorer = load_scorer(str(run))
    out = scorer.score(["q", "q2"], ["a", "b c"])
    m = out["members"]
    assert m.shape == (2, 2) and not np.allclose(m[0], m[1])  # different seeds, different models
    assert np.allclose(out["std"], m.std(0)) and np.allclose(out["reward"], m.mean(0))


def test_world_rm_learns(world, tmp_path):
    """Learning is shown: tiny-bert from random init, 40 steps on 320 world pairs (measured: 0.84
    held-out accuracy on 200 test pairs; chance is 0.5)."""
    run = tmp_path / "world"
    assert main(["train", "rm", "--model", "tiny-bert", "--data", str(world / "train.jsonl"), "--out", str(run),
                 "epochs=2", "batch_size=16", "lr=3e-3", "warmup_ratio=0.1", "max_length=96", "report_to=none"]) == 0
    assert main(["eval", "rm", str(run), "--data", str(world / "test.jsonl")]) == 0
    res = json.loads((run / "eval" / "rm.json").read_text())
    assert res["accuracy"] >= 0.75


@pytest.mark.parametrize("case", ["missing_column", "no_tokenizer", "unknown_key"])
def test_bad_inputs_fail_before_training(case, world, tmp_path, capsys):
    data = str(world / "small.jsonl")
    model = "tiny-bert"
    extra = ["report_to=none"]
    if case == "missing_column":
        data = str(_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"},
                                                   {"prompt": "p", "chosen": "a"}]))
        want = ["bad.jsonl:2", "rejected"]
    elif case == "no_tokenizer":
        from preftune.models import resolve_model_path

        folder = tmp_path / "model"
        folder.mkdir()
        shutil.copy(f"{resolve_model_path('tiny-bert')}/config.json", folder / "config.json")
        model = str(folder)
        want = ["tokenizer", str(folder)]
    else:
        extra.append("learning_rate=1e-4")
        want = ["unknown config key 'learning_rate'"]
    out = tmp_path / "run"
    assert main(["train", "rm", "--model", model, "--data", data, "--out", str(out), *extra]) == 1
    err = capsys.readouterr().err
    assert err.count("preftune: error:") == 1
    for w in want:
        assert w in err, err
    assert not (out / "metrics.jsonl").exists()


def test_two_process_ddp_equals_one_process_with_accumulation(tmp_path, world):
    """`accelerate launch` with 2 gloo processes runs the unchanged command: same logged metrics (reduced
    over both processes) and same weights as 1 process accumulating the same 2 micro-batches."""
    from helpers import launch_ddp
    from safetensors.torch import load_file

    from preftune.config import load_config
    from preftune.train.rm import RMConfig, train_rm

    common = ["model=tiny-llama", f"data={world / 'small.jsonl'}", "max_steps=2", "batch_size=2", "lr=1e-3",
              "max_length=64", "report_to=none", "heads=auto"]
    one = train_rm(load_config(RMConfig, overrides=[*common, f"out={tmp_path / 'one'}", "grad_accum=2"]))
    proc = launch_ddp("train", "rm", *common, f"out={tmp_path / 'ddp'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {name: _metrics(tmp_path / name) for name in ("one", "ddp")}
    assert len(rows["one"]) == len(rows["ddp"]) == 2
    assert any("/heads/" in k for r in rows["one"] for k in r)  # the attribute heads are compared too
    for a, b in zip(rows["one"], rows["ddp"]):
        assert set(a) == set(b)
        for k in a:
            if k.startswith("train/"):
                assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-5), k
    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(tmp_path / "ddp" / "final" / "model.safetensors"))
    for k in w1:  # Adam's first steps are ~lr * sign(g): summation-order noise stays well under lr / 10
        assert torch.allclose(w1[k], w2[k], atol=1e-4), k
