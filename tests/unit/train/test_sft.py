"""The SFT trainer on tiny-llama: packed == padded, 1x4 == 4x1 (token-weighted), the row formats it
reads (and the ones it refuses, by file and line), and learning: held-out NLL goes down."""

import json
import math

import pytest
from helpers import run_stage, train_rows

from preftune.train.sft import SFTConfig, read_sft_rows, train_sft

KEYS = ("train/loss", "train/grad_norm")


def _sft(tmp_path, name, data, *overrides):
    return run_stage(SFTConfig, train_sft, tmp_path / name, data, *overrides)


def _close(a, b, tol=1e-5):
    for ra, rb in zip(a, b, strict=True):
        for k in KEYS:
            assert ra[k] == pytest.approx(rb[k], rel=tol, abs=tol), (k, ra["step"])


def test_packed_equals_padded_and_accumulation_equals_one_big_batch(tmp_path, world_files):
    packed, info = _sft(tmp_path, "packed", world_files["train"], "batch_size=4", "max_steps=2")
    padded, _ = _sft(tmp_path, "padded", world_files["train"], "batch_size=4", "max_steps=2", "layout=padded")
    accum, _ = _sft(tmp_path, "accum", world_files["train"], "batch_size=1", "grad_accum=4", "max_steps=2")
    packed = train_rows(packed)
    _close(packed, train_rows(padded))
    _close(packed, train_rows(accum))
    # an untrained model's per-token NLL is about log(vocabulary) = log(49152)
    assert packed[0]["train/loss"] == pytest.approx(math.log(49152), abs=0.3)
    assert info["tokenization"]["train"]["num_rows"] == 24 and "ended" in info


def test_sft_on_chosen_lowers_the_held_out_nll(tmp_path, world_files):
    rows, _ = _sft(tmp_path, "learn", world_files["train"], f"eval_data={world_files['test']}", "batch_size=4",
                   "max_steps=12", "lr=1e-2")
    before = _sft(tmp_path, "before", world_files["train"], f"eval_data={world_files['test']}", "batch_size=4",
                  "max_steps=1", "lr=0")[0]
    nll_before = [r for r in before if "eval/loss" in r][-1]["eval/loss"]
    nll_after = [r for r in rows if "eval/loss" in r][-1]["eval/loss"]
    # measured: 10.81 -> 7.72 nats per token (12 steps, lr 1e-2); the threshold leaves a wide margin
    assert nll_before > 10.0 and nll_after < nll_before - 1.5


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_reads_messages_prompt_completion_and_pairs(tmp_path):
    path = _jsonl(tmp_path / "mixed.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello."}]},
        {"prompt": "2+2?", "completion": "4"},
        {"prompt": "2+2?", "completion": "5", "label": False},
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."},
    ])
    rows, counts = read_sft_rows(path)
    assert [(p[-1]["content"], c[0]["content"]) for p, c in rows] == [("Hi", "Hello."), ("2+2?", "4"),
                                                                       ("Name a colour.", "Blue.")]
    assert len(rows[0][0]) == 2 and counts == {"num_undesirable_skipped": 1}


def test_bad_rows_are_named_by_file_and_line(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [
        {"prompt": "ok", "completion": "fine"},
        {"messages": [{"role": "user", "content": "no answer"}]},
        {"prompt": "x", "completion": 3},
    ])
    with pytest.raises(ValueError) as e:
        read_sft_rows(path)
    msg = str(e.value)
    assert "2 problem(s)" in msg and f"{path}:2: messages" in msg and f"{path}:3: completion" in msg
