"""What every stage shares: the same number of optimiser steps for the same data, batch size,
accumulation and processes (issue 10 fixed the RM's own formula: n=10, bs=1, ga=4 gave 2 steps there
and 3 in SFT/DPO); the same resume rule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from helpers import run_stage, train_rows, write_jsonl

from preftune.train.dpo import DPOConfig, train_dpo
from preftune.train.plan import num_steps_for, plan_micro_batches
from preftune.train.rm import RMConfig, train_rm
from preftune.train.sft import SFTConfig, train_sft


@pytest.mark.parametrize("n,bs,ga,procs,epochs,want", [
    (10, 1, 4, 1, 1.0, 3),   # ceil(10 / 4)
    (10, 1, 4, 2, 1.0, 2),   # ceil(10 / 8)
    (10, 2, 1, 1, 1.5, 7),   # int(1.5 * 5)
    (7, 8, 2, 1, 3.0, 3),    # one short global batch per epoch
])
def test_the_one_step_formula(n, bs, ga, procs, epochs, want):
    cfg = SimpleNamespace(max_steps=-1, batch_size=bs, grad_accum=ga, epochs=epochs)
    assert num_steps_for(cfg, n, procs) == want
    plan = plan_micro_batches(list(range(1, n + 1)), bs, ga, procs, want, seed=0)
    assert len(plan) == want * ga * procs and plan[-1].step == want - 1
    # the first epoch's micro-batches hold every row once (a short last global batch may cycle rows)
    per_epoch = -(-n // (bs * ga * procs))
    first = {i for mb in plan if mb.step < per_epoch for i in mb.rows}
    assert first == set(range(n))


def test_rm_sft_and_dpo_agree_on_the_number_of_optimiser_steps(tmp_path):
    rows = [{"prompt": f"Question {i}?", "chosen": f"A good answer {i}.", "rejected": "No."} for i in range(10)]
    data = str(write_jsonl(tmp_path / "pairs.jsonl", rows))
    args = ("batch_size=1", "grad_accum=4", "max_steps=-1", "save_every=-1")
    steps = {}
    for name, cls, fn in (("rm", RMConfig, train_rm), ("sft", SFTConfig, train_sft), ("dpo", DPOConfig, train_dpo)):
        metrics, info = run_stage(cls, fn, tmp_path / name, data, *args)
        steps[name] = (len(train_rows(metrics)), info["num_steps"])
    assert steps == {"rm": (3, 3), "sft": (3, 3), "dpo": (3, 3)}


def test_resume_without_a_checkpoint_is_an_error_in_every_stage(tmp_path):
    rows = [{"prompt": f"Q{i}", "chosen": "yes", "rejected": "no"} for i in range(4)]
    data = str(write_jsonl(tmp_path / "pairs.jsonl", rows))
    for name, cls, fn in (("rm", RMConfig, train_rm), ("sft", SFTConfig, train_sft), ("dpo", DPOConfig, train_dpo)):
        out = tmp_path / name
        run_stage(cls, fn, out, data, "max_steps=1")  # save_every=-1 (helpers.FAST): no checkpoint
        assert not (out / "checkpoints").exists()
        with pytest.raises(ValueError, match="holds no checkpoint"):
            run_stage(cls, fn, out, data, "max_steps=1", "resume=true")
