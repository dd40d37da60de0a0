"""Reward-model trainer pieces: window-normalised loss (accumulation exactness), multi-head masking,
ensemble scoring, evaluation numbers on a constructed scorer, and 1x4 == 4x1 on a tiny Llama."""

import json
import math

import numpy as np
import pytest
import torch

from preftune.data.records import record_from_dict
from preftune.eval.rm import evaluate_rm
from preftune.train.rm import MISSING, RMBatch, RMConfig, counted_per_batch, rm_loss


def _cfg(**kw):
    return RMConfig(**{"model": "m", "data": "d", "out": "o", **kw})


def _rb(B, A=0, E=1, tie=None, verdicts=None, margin=None, conf=None):
    return RMBatch(None, torch.zeros(B) if margin is None else margin, torch.ones(B) if conf is None else conf,
                   torch.zeros(B, dtype=torch.bool) if tie is None else tie,
                   torch.full((B, A), MISSING, dtype=torch.long) if verdicts is None else verdicts, torch.ones(B, E))


def test_loss_is_window_normalised_sum():
    # 4 pairs in one micro-batch == the same 4 split in 2 micro-batches of a window of 4 counted pairs
    c, r = torch.tensor([[1.0], [0.0], [2.0], [-1.0]]), torch.tensor([[0.0], [1.0], [0.5], [0.0]])
    cfg = _cfg()
    whole = rm_loss(c, r, _rb(4), cfg, 0, 4, 0)["loss"]
    parts = sum(rm_loss(c[s], r[s], _rb(2), cfg, 0, 4, 0)["loss"] for s in (slice(0, 2), slice(2, 4)))
    expect = -torch.nn.functional.logsigmoid(c[:, 0] - r[:, 0]).mean()
    assert torch.allclose(whole, expect) and torch.allclose(parts, expect)


def test_ties_skipped_margin_and_centering():
    c, r = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [-2.0]])
    tie = torch.tensor([False, True])
    cfg = _cfg(margin_scale=2.0, center_coef=0.5)
    out = rm_loss(c, r, _rb(2, tie=tie, margin=torch.tensor([0.25, 9.0])), cfg, 0, 1, 0)
    # only pair 0 counts: -log σ(1 - 0 - 2*0.25) + 0.5 * (1 + 0)^2
    assert out["loss"].item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.5))) + 0.5, abs=1e-6)
    assert out["correct"].tolist() == [True, False]  # a tie is never a win
    n = counted_per_batch(type("D", (), {"is_tie": tie, "verdicts": torch.zeros(2, 0, dtype=torch.long)})(),
                          [[0, 1]], "skip")
    assert n == [(1, 0)]


def test_missing_attribute_gives_its_head_zero_gradient():
    # columns: overall, helpfulness, harmlessness; nobody states harmlessness, row 1 lacks helpfulness
    c = torch.randn(3, 3, requires_grad=True)
    r = torch.randn(3, 3, requires_grad=True)
    v = torch.tensor([[1, MISSING], [MISSING, MISSING], [-1, MISSING]])
    out = rm_loss(c, r, _rb(3, A=2, verdicts=v), _cfg(), 2, 3, 2)
    out["loss"].backward()
    assert torch.all(c.grad[:, 2] == 0) and torch.all(r.grad[:, 2] == 0)
    assert c.grad[1, 1] == 0 and c.grad[0, 1] != 0 and c.grad[2, 1] != 0
    # per-head accuracy counts only stated verdicts
    assert float(out["head_decided"][0]) == 2 and float(out["head_decided"][1]) == 0


def test_ensemble_heads_are_bootstrap_weighted_and_averaged():
    c = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    r = torch.zeros(2, 2)
    rb = _rb(2, E=2)
    rb.weights = torch.tensor([[1.0, 0.0], [2.0, 1.0]])  # head 0 sees pair 1 twice, head 1 misses pair 0
    out = rm_loss(c, r, rb, _cfg(), 0, 2, 0)
    ls = lambda x: -math.log(1 / (1 + math.exp(-x)))
    expect = 0.5 * ((ls(1.0) + 2 * ls(0.0)) / 2 + (ls(2.0)) / 2)
    assert out["loss"].item() == pytest.approx(expect, abs=1e-6)
    assert out["margins"].tolist() == pytest.approx([0.5, 1.0])  # ensemble-mean overall reward


class _TableScorer:
    """reward = the number after 'r=' in the response; members = reward ± a pair-specific spread."""

    def __init__(self, spread=None):
        self.spread = spread

    def score(self, prompts, responses, batch_size=32):
        rew = np.array([float(x[0]["content"].split("r=")[1].split()[0]) for x in responses])
        out = {"reward": rew, "std": None, "heads": {"overall": rew}, "members": rew[None]}
        if self.spread is not None:
            s = np.concatenate([self.spread, np.zeros(len(self.spread))])
            out["members"] = np.stack([rew - s, rew + s])
            out["std"] = s
        return out


def _pair(c, r, close=False, **kw):
    return record_from_dict({"prompt": "q", "chosen": c, "rejected": r, "close": close, **kw})


def test_evaluate_rm_hand_computed():
    recs = [_pair("r=2", "r=0 longer text", category="a"),       # correct, chosen shorter
            _pair("r=1 long answer", "r=3", category="a"),       # wrong, chosen longer
            _pair("r=5 xx", "r=1", category="b"),                 # correct, chosen longer
            _pair("r=0", "r=9 tie", close=True, category="b")]   # tie: excluded
    res = evaluate_rm(_TableScorer(), recs)
    assert res["num_pairs"] == 4 and res["num_ties"] == 1
    assert res["accuracy"] == pytest.approx(2 / 3)
    assert res["accuracy_including_close"] == pytest.approx(2 / 4)
    assert (res["num_chosen_shorter"], res["accuracy_chosen_shorter"]) == (1, 1.0)
    assert (res["num_chosen_longer"], res["accuracy_chosen_longer"]) == (2, 0.5)
    assert res["length_baseline_accuracy"] == pytest.approx(2 / 3)
    assert res["accuracy_by"]["category"] == {"a": {"accuracy": 0.5, "n": 2}, "b": {"accuracy": 1.0, "n": 1}}
    # ECE over both orientations (p, 1), (1 - p, 0) of p = σ(2), σ(-2), σ(4) (= .881, .119, .982), 10 bins:
    # [0, .1) {.018: 0} -> .018 ; [.1, .2) {.119: 1, .119: 0} -> |.5 - .119| ; [.8, .9) {.881: 1, .881: 0}
    # -> |.5 - .881| ; [.9, 1] {.982: 1} -> .018 ; weighted by 1/6, 2/6, 2/6, 1/6
    sig = lambda x: 1 / (1 + math.exp(-x))
    ece = (2 * (1 - sig(4)) + 4 * (0.5 - sig(-2))) / 6
    assert ece == pytest.approx(0.25986, abs=1e-5)
    assert res["ece"] == pytest.approx(ece, abs=1e-9)
    assert [b["n"] for b in res["reliability"]] == [1, 2, 2, 1]
    assert res["rewards"]["chosen"] == [2.0, 1.0, 5.0, 0.0]
    assert res["rewards"]["chosen_lengths"] == [3.0, 15.0, 6.0, 3.0]


def test_evaluate_rm_certainty_deciles():
    recs = [_pair(f"r={1 if i % 2 else -1}", "r=0") for i in range(20)]
    # wrong pairs (even i) get large spread: least certain decile (2 pairs) all wrong
    spread = np.array([10.0 + i if i % 2 == 0 else 0.1 * i for i in range(20)])
    res = evaluate_rm(_TableScorer(spread), recs)
    assert res["accuracy"] == 0.5
    assert res["accuracy_most_certain_decile"] == 1.0 and res["accuracy_least_certain_decile"] == 0.0


def test_scorer_ensemble_mean_and_std():
    from preftune.models import load_reward_model, load_tokenizer
    from preftune.models.scoring import RewardScorer

    model = load_reward_model("tiny-bert", num_labels=3).eval()
    tok = load_tokenizer("tiny-bert")
    info = {"heads": ["overall"], "head_weights": [1.0], "encoder": True, "max_length": 64,
            "ensemble": {"size": 3, "mode": "heads", "num_heads": 3}}
    scorer = RewardScorer([model], tok, info)
    out = scorer.score(["hi", "hello there"], ["a b c", "d"])
    with torch.no_grad():
        enc = tok(["hi", "hello there"], ["a b c", "d"], padding=True, return_tensors="pt")
        logits = model(**enc).logits.numpy()  # (2, 3): one column per ensemble head
    assert np.allclose(out["reward"], logits.mean(1), atol=1e-5)
    assert np.allclose(out["std"], logits.std(1), atol=1e-5)
    assert np.allclose(out["members"], logits.T, atol=1e-5)


def _rows(n=4):
    rows = []
    for i in range(n):
        rows.append({"prompt": f"Say something about topic {i}.", "chosen": "A clear and useful answer " * (i + 1),
                     "rejected": "No.", "close": i == 2, "attributes": {"helpfulness": "chosen"} if i != 1 else {}})
    return rows


def test_grad_accum_1x4_equals_4x1(tmp_path):
    from safetensors.torch import load_file

    from preftune.train.rm import train_rm

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(4)))
    finals, losses = [], []
    for bs, ga in ((4, 1), (1, 4)):
        out = tmp_path / f"run{bs}"
        cfg = _cfg(model="tiny-llama", data=str(data), out=str(out), batch_size=bs, grad_accum=ga, max_steps=1,
                   lr=1e-3, max_length=48, heads=["helpfulness"], report_to="none")
        finals.append(load_file(str(train_rm(cfg) / "model.safetensors")))
        row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
        losses.append((row["train/loss"], row["train/grad_norm"]))
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    # Adam's first step is ~lr * sign(g): float noise on near-zero gradients moves weights by ~lr * 5e-3,
    # so lr = 1e-3 keeps that under the 1e-5 tolerance while every weight moves by ~1e-3.
    from preftune.models import resolve_model_path

    init = load_file(f"{resolve_model_path('tiny-llama')}/model.safetensors")
    key = "model.layers.0.mlp.up_proj.weight"
    assert (finals[0][key] - init[key]).abs().max() > 5e-4  # the step did move the weights
    for k in finals[0]:
        assert torch.allclose(finals[0][k], finals[1][k], atol=1e-5), k


def test_layouts_give_the_same_first_step(tmp_path):
    """padded, prefix-shared and packed batches are one computation: same loss, grad norm, rewards."""
    from preftune.train.rm import train_rm

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(4)))
    rows = []
    for layout in ("padded", "shared", "packed"):
        out = tmp_path / layout
        train_rm(_cfg(model="tiny-llama", data=str(data), out=str(out), batch_size=4, max_steps=1, lr=1e-3,
                      max_length=48, layout=layout, report_to="none"))
        rows.append(json.loads((out / "metrics.jsonl").read_text().splitlines()[0]))
    for r in rows[1:]:
        for k in ("train/loss", "train/grad_norm", "train/rewards/chosen", "train/rewards/rejected"):
            assert r[k] == pytest.approx(rows[0][k], abs=1e-5), k


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-bert"])
def test_micro_tokens_split_a_batch_into_the_same_update(tmp_path, model):
    """A token budget runs a batch in pieces with summed gradients: the step equals the unsplit one."""
    from safetensors.torch import load_file

    from preftune.train.rm import train_rm

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(4)))
    rows, finals = [], []
    for budget in (0, 40):  # 40 tokens: about one pair per piece
        out = tmp_path / f"b{budget}"
        final = train_rm(_cfg(model=model, data=str(data), out=str(out), batch_size=4, max_steps=1, lr=1e-3,
                              max_length=48, micro_tokens=budget, heads=["helpfulness"], report_to="none"))
        rows.append(json.loads((out / "metrics.jsonl").read_text().splitlines()[0]))
        finals.append(load_file(str(final / "model.safetensors")))
    for k in ("train/loss", "train/grad_norm", "train/accuracy", "train/rewards/chosen",
              "train/heads/helpfulness/accuracy"):
        assert rows[1][k] == pytest.approx(rows[0][k], abs=1e-5), k
    # Adam's first step is ~lr * sign(g): summation-order noise on near-zero gradients (LayerNorm biases)
    # moves a weight by up to ~lr / 20 = 5e-5, while every weight moves by ~lr = 1e-3. The head's bias is
    # left out: BT only sees r_c - r_r, so its gradient is 0 but for float noise, which Adam turns into +-lr.
    for k in finals[0]:
        if k.endswith("classifier.bias"):
            continue
        assert torch.allclose(finals[0][k], finals[1][k], atol=1e-4), k


def test_micro_tokens_pieces_cover_every_pair_once():
    from preftune.batching import pair_length
    from preftune.models import load_tokenizer
    from preftune.train.rm import make_collate, prepare_pairs

    tok = load_tokenizer("tiny-llama")
    recs = [record_from_dict(r) for r in _rows(6)]
    data = prepare_pairs(recs, tok, _cfg(max_length=48), [], encoder=False)
    cost = [pair_length(it, "shared") for it in data.items]
    budget = max(cost) + 1
    pieces = make_collate(data, torch.ones(6, 1), "shared", tok.pad_token_id, False, budget)(data.items)
    assert len(pieces) > 1
    assert sorted(i for rb in pieces for i in rb.batch.indices) == list(range(6))
    for rb in pieces:
        assert sum(cost[i] for i in rb.batch.indices) <= budget
    assert len(make_collate(data, torch.ones(6, 1), "shared", tok.pad_token_id, False, 0)(data.items)) == 1


def test_rated_rows_become_pairs_with_margins_and_labels(tmp_path):
    from preftune.models import load_tokenizer
    from preftune.train.rm import load_pairs, prepare_pairs, resolve_heads

    f = tmp_path / "r.jsonl"
    rows = [{"prompt": "q", "completions": ["a", "b", "c"], "scores": [3, 1, 1]},
            {"prompt": "p", "chosen": "x", "rejected": "y", "close": True, "confidence": 0.7,
             "attributes": {"harm": "rejected", "help": "tie"}}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, counts = load_pairs(str(f))
    assert counts == {"num_pair_rows": 1, "num_rated_rows": 1, "num_pairs_from_rated": 2}  # b ~ c: no pair
    heads = resolve_heads(["auto"], pairs)
    assert heads == ["harm", "help"]
    d = prepare_pairs(pairs, load_tokenizer("tiny-bert"), _cfg(max_length=32), heads, encoder=True)
    assert d.margin.tolist() == [2.0, 2.0, 0.0]
    assert d.is_tie.tolist() == [False, False, True] and d.confidence.tolist() == pytest.approx([1, 1, 0.7])
    assert d.verdicts.tolist() == [[MISSING, MISSING], [MISSING, MISSING], [-1, 0]]
    bad = tmp_path / "u.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "completion": "a", "label": True}) + "\n")
    with pytest.raises(ValueError, match="row 1 is an unpaired row"):
        load_pairs(str(bad))


def test_disable_dropout_makes_train_mode_deterministic():
    from preftune.models import load_reward_model
    from preftune.train.optim import disable_dropout

    rm = load_reward_model("tiny-bert").train()
    ids = torch.randint(5, 100, (2, 12))
    torch.manual_seed(0)
    a, b = rm(input_ids=ids).logits, rm(input_ids=ids).logits
    assert not torch.equal(a, b)  # dropout is live in train mode
    assert disable_dropout(rm) > 0
    assert all(m.p == 0.0 for m in rm.modules() if isinstance(m, torch.nn.Dropout))
    torch.testing.assert_close(rm(input_ids=ids).logits, rm(input_ids=ids).logits, rtol=0, atol=0)
    assert disable_dropout(rm) == 0  # idempotent
