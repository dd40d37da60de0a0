"""Forward helpers: every fast layout equals the plain padded path, and the padded path equals HF's
own full-logits forward; reward models read each response's last real token, never a pad."""

import pytest
import torch

from preftune.batching import (
    collate_pairs_packed,
    collate_pairs_padded,
    collate_pairs_shared,
    collate_sequences_packed,
    collate_sequences_padded,
    to_device,
)
from preftune.models import load_policy, load_reward_model, load_tokenizer
from preftune.models.forward import ForwardModule, pair_logps, pair_rewards, sequence_logps, sequence_rewards
from preftune.tokenize import PairTokens, SequenceTokens, tokenize_pairs

TOL = {"atol": 1e-5, "rtol": 0}
# Summed log-probs of ~100 tokens are ~-1000 in float32, whose spacing is 6e-5: sums are compared
# relatively (1e-6), per-token log-probs absolutely (1e-5).
SUM_TOL = {"atol": 1e-5, "rtol": 1e-6}


def _records():
    sys = {"role": "system", "content": "Answer briefly."}
    rows = []
    for i in range(4):
        prompt = [sys] if i % 2 else []
        prompt += [{"role": "user", "content": f"Question {i}: " + "why " * (2 * i)}]
        if i == 3:
            prompt += [{"role": "assistant", "content": "Which part?"}, {"role": "user", "content": "All of it."}]
        rows.append({"prompt": prompt, "chosen": "Because " * (i + 1), "rejected": "No idea, " * (i + 1)})
    return rows


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny-llama")


@pytest.fixture(scope="module")
def items(tok):
    items, _ = tokenize_pairs(_records(), tok, 256)
    # a pair whose chosen response ends with the pad token itself (pad == eos): a reader that looks
    # for "the last non-pad token" would miss it
    p = tok("Say yes.", add_special_tokens=False)["input_ids"]
    items.append(PairTokens(p, tok("yes", add_special_tokens=False)["input_ids"] + [tok.pad_token_id],
                            tok("no no no", add_special_tokens=False)["input_ids"], False, 99))
    return items


@pytest.fixture(scope="module")
def policy():
    return load_policy("tiny-llama").eval()


def _layouts(items, pad):
    return {"right": collate_pairs_padded(items, pad, "right"), "left": collate_pairs_padded(items, pad, "left"),
            "shared": collate_pairs_shared(items, pad), "packed": collate_pairs_packed(items, pad, max_tokens=160)}


def _oracle_tokens(model, prompt, response):
    """log p(response token) for each response token, from HF's own forward on one unpadded sequence."""
    ids = torch.tensor([prompt + response])
    logits = model(input_ids=ids).logits[0].float()
    logps = torch.log_softmax(logits[:-1], -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return logps[len(prompt) - 1:]


def _oracle_logps(model, prompt, response):
    return _oracle_tokens(model, prompt, response).sum()


def test_every_layout_equals_hf_forward(policy, tok, items):
    batches = _layouts(items, tok.pad_token_id)
    assert batches["packed"].input_ids.shape[0] < len(items)  # packing did put several pairs in a row
    with torch.no_grad():
        oracle_c = torch.stack([_oracle_logps(policy, it.prompt_ids, it.chosen_ids) for it in items])
        oracle_r = torch.stack([_oracle_logps(policy, it.prompt_ids, it.rejected_ids) for it in items])
        tokens_c = [_oracle_tokens(policy, it.prompt_ids, it.chosen_ids) for it in items]
        tokens_r = [_oracle_tokens(policy, it.prompt_ids, it.rejected_ids) for it in items]
        for name, batch in batches.items():
            out = pair_logps(policy, batch, chunk_size=48, return_tokens=True)
            for side, oracle in (("chosen", tokens_c), ("rejected", tokens_r)):
                values, mask = out.token_matrix(side)
                for b, ref in enumerate(oracle):
                    torch.testing.assert_close(values[b][mask[b]], ref, **TOL, msg=f"{name} {side} {b}")
            torch.testing.assert_close(out.chosen_logps, oracle_c, **SUM_TOL, msg=name)
            torch.testing.assert_close(out.rejected_logps, oracle_r, **SUM_TOL, msg=name)
            assert out.num_chosen_tokens.tolist() == [len(it.chosen_ids) for it in items]
            assert out.num_rejected_tokens.tolist() == [len(it.rejected_ids) for it in items]


def test_shared_gradients_equal_padded(policy, tok, items):
    grads = {}
    for name in ("right", "shared"):
        policy.zero_grad()
        out = pair_logps(policy, _layouts(items, tok.pad_token_id)[name], chunk_size=16)
        (out.chosen_logps - 0.5 * out.rejected_logps).sum().backward()
        grads[name] = {k: p.grad.clone() for k, p in policy.named_parameters()}
    policy.zero_grad()
    for k in grads["right"]:
        torch.testing.assert_close(grads["shared"][k], grads["right"][k], atol=1e-5, rtol=1e-5, msg=k)


def test_eager_attention_and_token_matrix(tok, items):
    model = load_policy("tiny-llama", attn_implementation="eager").eval()
    with torch.no_grad():
        a = pair_logps(model, collate_pairs_shared(items, tok.pad_token_id), return_tokens=True)
        b = pair_logps(model, collate_pairs_padded(items, tok.pad_token_id), layout="padded")
    torch.testing.assert_close(a.chosen_logps, b.chosen_logps, **SUM_TOL)
    with torch.no_grad():  # the module form (for DDP wrappers) is the same function; batches move devices
        c = ForwardModule(model, "pair_logps", chunk_size=5)(
            to_device(collate_pairs_shared(items, tok.pad_token_id), "cpu"))
    torch.testing.assert_close(c.rejected_logps, a.rejected_logps, **SUM_TOL)
    values, mask = a.token_matrix("chosen")
    torch.testing.assert_close(values.sum(1), a.chosen_logps, **SUM_TOL)
    assert mask.sum(1).tolist() == a.num_chosen_tokens.tolist()
    with pytest.raises(TypeError, match="does not match"):
        pair_logps(model, collate_pairs_padded(items, tok.pad_token_id), layout="shared")


def test_sequence_logps_match_pairs(policy, tok, items):
    seqs = [SequenceTokens(it.prompt_ids, it.chosen_ids, False, it.index) for it in items]
    with torch.no_grad():
        s = sequence_logps(policy, collate_sequences_padded(seqs, tok.pad_token_id, "left"))
        packed = collate_sequences_packed(seqs, tok.pad_token_id, max_tokens=128)
        k = sequence_logps(policy, packed)
        p = pair_logps(policy, collate_pairs_shared(items, tok.pad_token_id))
    assert packed.input_ids.shape[0] < len(seqs)
    torch.testing.assert_close(s.logps, p.chosen_logps, **SUM_TOL)
    torch.testing.assert_close(k.logps, p.chosen_logps, **SUM_TOL)
    assert k.num_tokens.tolist() == [len(it.chosen_ids) for it in items]


def test_decoder_rewards_read_last_real_token(tok, items):
    rm = load_reward_model("tiny-llama", num_labels=2).eval()
    pad = tok.pad_token_id
    with torch.no_grad():
        one_at_a_time = [pair_rewards(rm, collate_pairs_padded([it], pad)) for it in items]
        single_c = torch.cat([r.chosen for r in one_at_a_time])
        single_r = torch.cat([r.rejected for r in one_at_a_time])
        # HF's own classifier on one unpadded sequence that does not end with the pad token
        own = rm(input_ids=torch.tensor([items[0].prompt_ids + items[0].chosen_ids])).logits
        torch.testing.assert_close(single_c[:1], own, **TOL)
        for name, batch in _layouts(items, pad).items():
            out = pair_rewards(rm, batch)
            assert out.chosen.shape == (len(items), 2)
            torch.testing.assert_close(out.chosen, single_c, **TOL, msg=name)
            torch.testing.assert_close(out.rejected, single_r, **TOL, msg=name)
        seqs = [SequenceTokens(it.prompt_ids, it.rejected_ids, False, it.index) for it in items]
        torch.testing.assert_close(sequence_rewards(rm, collate_sequences_padded(seqs, pad, "left")), single_r, **TOL)
        torch.testing.assert_close(sequence_rewards(rm, collate_sequences_packed(seqs, pad, 128)), single_r, **TOL)
    assert single_c[:, 0].std() > 0  # the scores do differ between pairs, so equality means something


def test_encoder_rewards_pooled():
    tok = load_tokenizer("tiny-bert")
    rm = load_reward_model("tiny-bert").eval()
    items, _ = tokenize_pairs(_records(), tok, 128)
    with torch.no_grad():
        ref_c = torch.cat([rm(**tok(r["prompt"][-1]["content"], r["chosen"], return_tensors="pt")).logits
                           for r in _records() if len(r["prompt"]) == 1])
        out = pair_rewards(rm, collate_pairs_padded(items, tok.pad_token_id, "right", encoder=True))
        single = [i for i, r in enumerate(_records()) if len(r["prompt"]) == 1]
        torch.testing.assert_close(out.chosen[single], ref_c, **TOL)
        assert out.chosen.shape == (len(items), 1) and out.chosen.std() > 0
    with pytest.raises(ValueError, match="use padding_side='right'"):
        collate_pairs_padded(items, tok.pad_token_id, "left", encoder=True)
    with pytest.raises(ValueError, match="encoders see the whole row"):
        pair_rewards(rm, collate_pairs_shared(items, tok.pad_token_id))


def test_unpad_chunks_bound_the_padding_share():
    from preftune.models.forward import unpad_chunks

    lengths = [5, 100, 98, 7, 60, 100, 3, 59]
    assert unpad_chunks(lengths, 0.0) == [[1, 5], [2], [4], [7], [3], [0], [6]]  # equal lengths only
    assert unpad_chunks(lengths, 1.0) == [[1, 5, 2, 4, 7, 3, 0, 6]]
    for tol in (0.0, 0.05, 0.2, 0.5):
        chunks = unpad_chunks(lengths, tol)
        assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))  # every row exactly once
        for c in chunks:
            width = max(lengths[i] for i in c)
            assert width * len(c) - sum(lengths[i] for i in c) <= tol * width * len(c) + 1e-9
    with pytest.raises(ValueError, match="pad_tolerance"):
        unpad_chunks(lengths, 1.5)


def test_encoder_unpadded_chunks_equal_one_padded_block():
    """pad_tolerance only changes how rows are grouped: every grouping gives the padded block's scores."""
    tok = load_tokenizer("tiny-bert")
    rm = load_reward_model("tiny-bert", num_labels=3).eval()
    items, _ = tokenize_pairs(_records(), tok, 128)
    batch = collate_pairs_padded(items, tok.pad_token_id, "right", encoder=True)
    widths = batch.attention_mask.sum(1)
    assert widths.min() < widths.max()  # rows of different lengths, so chunking does trim padding
    with torch.no_grad():
        block = pair_rewards(rm, batch, pad_tolerance=1.0)
        for tol in (0.0, 0.05, 0.3):
            out = pair_rewards(rm, batch, pad_tolerance=tol)
            torch.testing.assert_close(out.chosen, block.chosen, **TOL)
            torch.testing.assert_close(out.rejected, block.rejected, **TOL)
    assert block.chosen.std() > 0


def test_peft_wrapped_models(tok, items):
    peft = pytest.importorskip("peft")
    model = load_policy("tiny-llama").eval()
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:  # B starts at zero: make the adapter change the outputs
                p.copy_(torch.randn_like(p) * 0.5)
        out = pair_logps(lora, collate_pairs_shared(items, tok.pad_token_id))
        oracle = torch.stack([_oracle_logps(lora, it.prompt_ids, it.chosen_ids) for it in items])
        torch.testing.assert_close(out.chosen_logps, oracle, **SUM_TOL)
        with lora.disable_adapter():
            base = pair_logps(lora, collate_pairs_shared(items, tok.pad_token_id))
        plain = pair_logps(load_policy("tiny-llama").eval(), collate_pairs_shared(items, tok.pad_token_id))
    torch.testing.assert_close(base.chosen_logps, plain.chosen_logps, **SUM_TOL)
    assert (out.chosen_logps - base.chosen_logps).abs().max() > 1e-3  # the adapter was really used
