"""The DPO trainer on tiny-llama (float32): the limit case log 2, layouts that agree, gradient
accumulation that agrees, exact resume, the reference cache end to end, KTO, SimPO, LoRA."""

import json
import math
import shutil

import pytest
import torch
from helpers import read_run, run_stage, train_rows

from preftune.config import load_config
from preftune.train.dpo import DPOConfig, train_dpo

LOG2 = math.log(2.0)
KEYS = ("train/loss", "train/grad_norm", "train/rewards/margin", "train/logps/chosen", "train/kl")


def _dpo(tmp_path, name, data, *overrides):
    return run_stage(DPOConfig, train_dpo, tmp_path / name, data, *overrides)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, world_files):
    """The reference run: shared layout, batch 4, 2 steps, a checkpoint after each step."""
    tmp = tmp_path_factory.mktemp("dpo")
    rows, info = _dpo(tmp, "base", world_files["train"], "batch_size=4", "max_steps=2", "save_every=1",
                      "keep_checkpoints=3", "reference=model")
    return tmp / "base", train_rows(rows), info


def _close(a, b, keys=KEYS, tol=1e-5):
    for ra, rb in zip(a, b, strict=True):
        for k in keys:
            assert ra[k] == pytest.approx(rb[k], rel=tol, abs=tol), (k, ra["step"])


def test_first_step_is_log2_when_policy_equals_reference(base_run):
    _, rows, info = base_run
    first = rows[0]
    assert first["train/loss"] == pytest.approx(LOG2, abs=1e-6)
    assert first["train/rewards/margin"] == 0.0 and first["train/kl"] == pytest.approx(0.0, abs=1e-7)
    assert rows[1]["train/loss"] != pytest.approx(LOG2, abs=1e-6)  # it trained
    assert info["tokenization"]["train"] == {"num_rows": 24, "num_truncated": info["tokenization"]["train"][
        "num_truncated"], "num_dropped": 0, "dropped": []}
    assert "ended" in info and info["num_steps"] == 2


def test_padded_layout_matches_shared_and_grad_accumulation_matches(tmp_path, world_files, base_run):
    _, rows, _ = base_run
    padded, _ = _dpo(tmp_path, "padded", world_files["train"], "batch_size=4", "max_steps=2", "layout=padded")
    _close(rows, train_rows(padded))  # same loss and gradient norm at step 1, same update -> same step 2
    accum, _ = _dpo(tmp_path, "accum", world_files["train"], "batch_size=1", "grad_accum=4", "max_steps=2")
    _close(rows, train_rows(accum))  # 1 x 4 == 4 x 1
    packed, _ = _dpo(tmp_path, "packed", world_files["train"], "batch_size=4", "max_steps=1", "layout=packed")
    _close(rows[:1], train_rows(packed))
    ckpt, _ = _dpo(tmp_path, "ckpt", world_files["train"], "batch_size=4", "max_steps=2", "gradient_checkpointing=true")
    _close(rows, train_rows(ckpt))


def test_resume_reproduces_the_unbroken_run_exactly(tmp_path, base_run):
    out, _, _ = base_run
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    shutil.rmtree(broken / "checkpoints" / "step_2")
    shutil.rmtree(broken / "final")
    cfg = load_config(DPOConfig, path=broken / "config.yaml", overrides=["resume=true", f"out={broken}"])
    train_dpo(cfg)
    resumed, _ = read_run(broken)
    assert resumed == [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_reference_cache_equals_model_reference_and_is_reused(tmp_path, world_files, base_run):
    _, rows, _ = base_run
    cache = tmp_path / "refcache"
    first, info1 = _dpo(tmp_path, "c1", world_files["train"], "batch_size=4", "max_steps=2", "reference=cache",
                        f"ref_cache_dir={cache}")
    _close(rows, train_rows(first))
    assert info1["reference_cache"]["train"]["hit"] is False
    _, info2 = _dpo(tmp_path, "c2", world_files["train"], "batch_size=4", "max_steps=1", "reference=cache",
                    f"ref_cache_dir={cache}")
    assert info2["reference_cache"]["train"]["hit"] is True
    assert info2["reference_cache"]["train"]["key"] == info1["reference_cache"]["train"]["key"]
    _, info3 = _dpo(tmp_path, "c3", world_files["train"], "batch_size=4", "max_steps=1", "reference=cache",
                    f"ref_cache_dir={cache}", "max_length=40")  # tokenisation changed: recomputed
    assert info3["reference_cache"]["train"]["hit"] is False
    assert len(list(cache.glob("*.pt"))) == 2


def test_kto_on_unpaired_rows_and_on_split_pairs(tmp_path, world_files):
    from preftune.data.io import write_rows
    from preftune.world.generate import generate_world

    unpaired = tmp_path / "unpaired.jsonl"
    write_rows(generate_world(8, seed=0, num_test_pairs=4, output="unpaired").train, unpaired)
    for name, data in (("kto_u", str(unpaired)), ("kto_p", world_files["train"])):
        rows, _ = _dpo(tmp_path, name, data, "loss=kto", "batch_size=4", "max_steps=1")
        # policy == reference: r = 0 and z0 = 0, so each row's loss is 1 - σ(0) = 0.5
        assert rows[0]["train/loss"] == pytest.approx(0.5, abs=1e-6)
        assert rows[0]["train/kto/z0"] == 0.0


def test_simpo_without_reference_matches_its_formula(tmp_path, world_files):
    rows, info = _dpo(tmp_path, "simpo", world_files["train"], "loss=simpo", "beta=2.0", "simpo_gamma=0.3",
                      "batch_size=1", "max_steps=1")
    r = rows[0]
    avg_c = r["train/logps/chosen"] / r["train/lengths/chosen"]
    avg_r = r["train/logps/rejected"] / r["train/lengths/rejected"]
    z = 2.0 * (avg_c - avg_r) - 0.3
    assert r["train/loss"] == pytest.approx(-torch.nn.functional.logsigmoid(torch.tensor(z)).item(), rel=1e-5)
    assert info["reference"] == "none" and "train/kl" not in r


def test_lora_adapter_reference_and_merged_model(tmp_path, world_files):
    rows, info = _dpo(tmp_path, "lora", world_files["train"], "lora.enabled=true", "lora.r=4", "batch_size=4",
                      "max_steps=1", "merge_lora=true", "loss=sigmoid:1,sft:0.1")
    assert info["reference"] == "adapter"
    # the RPO term adds 0.1 x the chosen per-token NLL to log 2 at the first step
    first = rows[0]
    assert first["train/loss"] > LOG2
    final = tmp_path / "lora" / "final"
    assert (final / "adapter_config.json").exists() and (final / "merged" / "config.json").exists()
    # the merged folder is the base with the trained adapter folded in: same outputs as base + adapter
    from peft import PeftModel

    from preftune.models import load_policy

    ids = torch.tensor([[1, 42, 7, 99, 5]])
    adapted = PeftModel.from_pretrained(load_policy("tiny-llama"), final).eval()
    merged = load_policy(final / "merged").eval()
    with torch.no_grad():
        a, m, base = adapted(ids).logits, merged(ids).logits, load_policy("tiny-llama")(ids).logits
    torch.testing.assert_close(m, a, atol=1e-5, rtol=1e-5)
    assert (a - base).abs().max() > 1e-4  # the adapter was trained (its B matrix is no longer 0)


def test_dpo_learns_the_world_preferences(tmp_path):
    """Held-out implicit-reward accuracy and margin start at 0 (policy == reference) and must rise.
    Measured on seeds 0/1/2 (48 pairs, 12 steps): accuracy 0.81/0.75/0.69, margin 0.34/0.19/0.19."""
    from preftune.data.io import write_rows
    from preftune.world.generate import generate_world

    w = generate_world(48, seed=0, num_test_pairs=32)
    write_rows(w.train, tmp_path / "train.jsonl")
    write_rows(w.test, tmp_path / "test.jsonl")
    rows, _ = _dpo(tmp_path, "learn", str(tmp_path / "train.jsonl"), f"eval_data={tmp_path / 'test.jsonl'}",
                   "batch_size=4", "max_steps=12", "lr=3e-3")
    final = [r for r in rows if "eval/loss" in r][-1]
    assert final["eval/rewards/accuracy"] >= 0.6
    assert final["eval/rewards/margin"] >= 0.1
    assert final["eval/loss"] < LOG2 - 0.04


def test_falling_chosen_logps_with_a_growing_margin_is_flagged():
    from preftune.train.dpo_metrics import chosen_falls_while_margin_grows

    def rows(chosen, margin):
        return [{"train/logps/chosen": c, "train/rewards/margin": m} for c, m in zip(chosen, margin)]

    up = [0.1 * i for i in range(10)]
    assert chosen_falls_while_margin_grows(rows([-10 - x for x in up], up))        # both pushed down
    assert not chosen_falls_while_margin_grows(rows([-10 + x for x in up], up))    # chosen rises: healthy
    assert not chosen_falls_while_margin_grows(rows([-10 - x for x in up], [-x for x in up]))
    assert not chosen_falls_while_margin_grows(rows([-10 - x for x in up[:9]], up[:9]))  # too few rows yet


def test_shared_and_padded_layouts_give_the_same_loss_and_gradients(tmp_path):
    """One trainer batch (batch_loss, the function the loop calls) in both layouts: every parameter's
    gradient agrees to 1e-5, with a reference that differs from the policy (so the loss is not log 2)."""
    from accelerate import Accelerator

    from preftune.data.io import write_rows
    from preftune.models import load_policy, load_tokenizer
    from preftune.models.forward import ForwardModule
    from preftune.train.dpo import DPOStep, batch_loss, load_pair_data, make_collate
    from preftune.train.plan import MetricSums
    from preftune.train.refcache import Reference

    tok = load_tokenizer("tiny-llama")
    path = tmp_path / "pairs.jsonl"
    write_rows([{"prompt": f"Q{i}: " + "why " * i, "chosen": "Because " * (i + 1), "rejected": "No idea " * (3 - i)}
                for i in range(3)], path)
    ref_model = load_policy("tiny-llama").eval()
    with torch.no_grad():
        for p in ref_model.parameters():
            p.mul_(0.9)
    grads, losses = {}, {}
    for layout in ("shared", "padded"):
        cfg = load_config(DPOConfig, overrides=["model=tiny-llama", f"data={path}", "out=unused", f"layout={layout}",
                                                "max_length=64", "chunk_size=16"])
        data = load_pair_data(str(path), tok, cfg)
        collate = make_collate(cfg, tok.pad_token_id, True)
        policy = load_policy("tiny-llama")
        module = ForwardModule(policy, "logps", chunk_size=cfg.chunk_size, return_tokens=True)
        step = DPOStep(cfg, module, policy, Reference("model", model=ref_model), collate, Accelerator(cpu=True))
        out = batch_loss(step, module, collate(data.items), [0, 1, 2], data, "train", MetricSums())
        out.mean().backward()
        losses[layout] = out.detach()
        grads[layout] = {n: p.grad.clone() for n, p in policy.named_parameters()}
    torch.testing.assert_close(losses["shared"], losses["padded"], atol=1e-5, rtol=1e-5)
    assert (losses["shared"] - LOG2).abs().max() > 1e-3
    for name, g in grads["shared"].items():
        torch.testing.assert_close(g, grads["padded"][name], atol=1e-5, rtol=1e-4, msg=name)
