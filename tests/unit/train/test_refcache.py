"""Cached reference log-probs: equal to a fresh computation, stored and reloaded exactly, and keyed so
that a change of data, tokenisation or weights gives a new key (and the same inputs the same key)."""

import pytest
import torch

from preftune.batching import collate_pairs_padded, collate_pairs_shared
from preftune.models import load_policy, load_tokenizer
from preftune.models.forward import pair_logps
from preftune.tokenize import tokenize_pairs
from preftune.train import refcache

ROWS = [{"prompt": f"Question {i}: " + "why " * i, "chosen": "Because " * (i + 1), "rejected": "No idea, " * (i + 2)}
        for i in range(5)]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny-llama")


@pytest.fixture(scope="module")
def model():
    return load_policy("tiny-llama").eval()


@pytest.fixture(scope="module")
def items(tok):
    return tokenize_pairs(ROWS, tok, 64)[0]


def test_cached_logps_equal_a_fresh_padded_forward(model, items, tok):
    pad = tok.pad_token_id
    ref = refcache.compute_ref_logps(model, items, lambda xs: collate_pairs_shared(xs, pad), batch_size=2,
                                     chunk_size=7)
    with torch.no_grad():
        plain = pair_logps(model, collate_pairs_padded(items, pad), chunk_size=4096, return_tokens=True)
    torch.testing.assert_close(ref.chosen_logps, plain.chosen_logps, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(ref.rejected_logps, plain.rejected_logps, atol=1e-5, rtol=1e-6)
    # take() returns the rows asked for, in that order, with per-token values and their mask
    order = [3, 0, 4]
    taken = ref.take(order)
    c, toks, mask = taken.chosen_logps, taken.chosen_tokens, taken.chosen_mask
    torch.testing.assert_close(c, plain.chosen_logps[order], atol=1e-5, rtol=1e-6)
    ptok, pmask = plain.token_matrix("chosen")
    assert torch.equal(mask, pmask[order][:, :mask.shape[1]])
    torch.testing.assert_close(toks, ptok[order][:, :toks.shape[1]], atol=1e-5, rtol=0)
    assert int(mask.sum()) == sum(len(items[i].chosen_ids) for i in order)


def test_save_load_round_trip_and_hit(tmp_path, model, items, tok):
    calls = []

    def compute():
        calls.append(1)
        return refcache.compute_ref_logps(model, items, lambda xs: collate_pairs_padded(xs, tok.pad_token_id), 4, 64)

    first, hit1, path = refcache.cached_ref_logps(tmp_path, "k", compute)
    second, hit2, path2 = refcache.cached_ref_logps(tmp_path, "k", compute)
    assert (hit1, hit2, len(calls), path) == (False, True, 1, path2)
    for name in ("chosen_logps", "rejected_logps", "chosen_tokens", "offsets"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pt"]  # no temp file left behind


def test_key_changes_with_data_tokenisation_and_weights(model, items, tok):
    w = refcache.weights_fingerprint(model)
    key = refcache.cache_key(w, items, {"max_length": 64})
    assert key == refcache.cache_key(refcache.weights_fingerprint(model), tokenize_pairs(ROWS, tok, 64)[0],
                                     {"max_length": 64})  # deterministic
    edited = [dict(r) for r in ROWS]
    edited[2]["chosen"] = "Because, really."
    assert refcache.cache_key(w, tokenize_pairs(edited, tok, 64)[0], {"max_length": 64}) != key  # data
    short = tokenize_pairs(ROWS, tok, 24)[0]
    assert short[4].rejected_ids != items[4].rejected_ids  # the shorter max_length truncates
    assert refcache.cache_key(w, short, {"max_length": 64}) != key  # tokens changed
    assert refcache.cache_key(w, items, {"max_length": 65}) != key  # a setting changed
    other = load_policy("tiny-llama")
    with torch.no_grad():
        other.model.norm.weight[0] += 1e-3
    assert refcache.cache_key(refcache.weights_fingerprint(other), items, {"max_length": 64}) != key  # weights
