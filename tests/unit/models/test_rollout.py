"""HFRolloutEngine on tiny-llama: greedy equals transformers' generate token for token; the
prompt-once cache expansion equals plain no-cache forwards; the sampling log-probs are
log_softmax(logits / T) of a no-cache forward; seeding, stopping, LoRA, and the prompt being
encoded once per group (counted at the embedding layer)."""

import pytest
import torch

from preftune.models import load_policy, load_tokenizer, quiet_peft
from preftune.models.rollout import HFRolloutEngine, decode_step, keep_rows, prefill

TOL = {"atol": 1e-5, "rtol": 0}
TEXTS = ["Hello there, how are you doing today, my friend?", "Why", "One two three four five six seven eight",
         "Tell me."]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny-llama")


@pytest.fixture(scope="module")
def model():
    return load_policy("tiny-llama").eval()


@pytest.fixture(scope="module")
def prompts(tok):
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    assert len({len(p) for p in ids}) == len(ids)  # all lengths differ: left padding is exercised
    return ids


def _no_cache_logits(model, prompt, completion) -> torch.Tensor:
    """(len(completion) + 1, V) logits predicting each completion token and the one after, one row alone."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].float()
    return logits[len(prompt) - 1:]


def _hf_greedy(model, tok, prompts, max_new_tokens, eos):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = (ids != -1).long()
    for i, p in enumerate(prompts):
        mask[i, : width - len(p)] = 0
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                         eos_token_id=eos, pad_token_id=tok.pad_token_id)
    return out[:, width:]


def test_greedy_equals_transformers_generate_with_stopping(model, tok, prompts):
    eng = HFRolloutEngine(model, tok)
    free = eng.generate(prompts, 1, 10, temperature=0.0, stop_ids=set())
    torch.testing.assert_close(free.completion_ids, _hf_greedy(model, tok, prompts, 10, None), rtol=0, atol=0)
    assert free.truncated.all() and (free.completion_lengths == 10).all()
    # a stop id that greedy row 0 emits at step 3 (and not before): row 0 stops there, with it kept
    stop = int(free.completion_ids[0, 3])
    assert stop not in free.completion_ids[0, :3].tolist()
    r = eng.generate(prompts, 1, 10, temperature=0.0, stop_ids={stop})
    hf = _hf_greedy(model, tok, prompts, 10, stop)
    assert r.completion_lengths[0] == 4 and not r.truncated[0] and int(r.completion_ids[0, 3]) == stop
    for i, comp in enumerate(r.completions()):
        n = len(comp)
        assert hf[i, :n].tolist() == comp and (hf[i, n:] == tok.pad_token_id).all()
        assert bool(r.truncated[i]) == (stop not in comp) and (r.truncated[i] or comp[-1] == stop)
        assert r.truncated[i] == (n == 10 and comp[-1] != stop)
    # G greedy samples of one prompt are G copies of the same completion
    g = eng.generate(prompts, 3, 6, temperature=0.0, stop_ids=set())
    assert g.prompt_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert all(torch.equal(g.completion_ids[3 * p + j], free.completion_ids[p, :6]) for p in range(4) for j in range(3))


def test_stop_on_the_last_allowed_token_is_not_truncated(model, tok, prompts):
    eng = HFRolloutEngine(model, tok)
    row = eng.generate(prompts[:1], 1, 12, temperature=0.0, stop_ids=set()).completions()[0]
    j = max(k for k in range(len(row)) if row[k] not in row[:k])  # the last first occurrence
    r = eng.generate(prompts[:1], 1, j + 1, temperature=0.0, stop_ids={row[j]})
    assert r.completions()[0] == row[: j + 1] and not bool(r.truncated[0])
    r = eng.generate(prompts[:1], 1, j, temperature=0.0, stop_ids={row[j]})
    assert r.completions()[0] == row[:j] and bool(r.truncated[0])


def test_prompt_once_cache_expansion_equals_no_cache_forward(model, tok, prompts):
    G, steps = 3, 4
    gen = torch.Generator().manual_seed(0)
    completion = torch.randint(0, len(tok), (len(prompts) * G, steps + 3), generator=gen)
    with torch.no_grad():
        state = prefill(model, prompts, G, tok.pad_token_id)
        for t in range(steps + 3):
            if t == steps:  # drop some rows, as the engine does when rows finish
                state = keep_rows(state, torch.arange(state.rows.numel()) % 4 != 1)
            for r, n in enumerate(state.rows.tolist()):
                want = _no_cache_logits(model, prompts[n // G], completion[n, :t].tolist())[-1]
                torch.testing.assert_close(state.logits[r], want, **TOL)
            state = decode_step(model, state, completion[state.rows, t])


def test_sampling_logps_are_temperature_log_softmax_of_a_no_cache_forward(model, tok, prompts):
    T = 0.7
    r = HFRolloutEngine(model, tok).generate(prompts, 3, 8, temperature=T, seed=5, stop_ids=set())
    assert r.sampling_logps.dtype == torch.float32
    for n, comp in enumerate(r.completions()):
        logits = _no_cache_logits(model, prompts[int(r.prompt_index[n])], comp)[:-1]  # (L, V)
        want = torch.log_softmax(logits / T, -1).gather(-1, torch.tensor(comp)[:, None]).squeeze(-1)
        torch.testing.assert_close(r.sampling_logps[n, : len(comp)], want, **TOL)
    # top-k: every sampled token is among the k largest logits; the log-probs keep the same meaning
    k = 3
    rk = HFRolloutEngine(model, tok).generate(prompts, 2, 6, temperature=T, top_k=k, seed=1, stop_ids=set())
    for n, comp in enumerate(rk.completions()):
        logits = _no_cache_logits(model, prompts[int(rk.prompt_index[n])], comp)[:-1]
        topk = logits.topk(k, -1).indices
        assert all(c in topk[i].tolist() for i, c in enumerate(comp))
        want = torch.log_softmax(logits / T, -1).gather(-1, torch.tensor(comp)[:, None]).squeeze(-1)
        torch.testing.assert_close(rk.sampling_logps[n, : len(comp)], want, **TOL)


def test_seeded_sampling_reproducible_and_independent_of_global_rng(model, tok, prompts):
    eng = HFRolloutEngine(model, tok)
    torch.manual_seed(0)
    a = eng.generate(prompts, 4, 8, temperature=1.0, seed=11, stop_ids=set())
    torch.manual_seed(123)
    state = torch.get_rng_state()
    b = eng.generate(prompts, 4, 8, temperature=1.0, seed=11, stop_ids=set())
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is never drawn from
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.sampling_logps, b.sampling_logps)
    c = eng.generate(prompts, 4, 8, temperature=1.0, seed=12, stop_ids=set())
    assert not torch.equal(a.completion_ids, c.completion_ids)
    # the 4 samples of a prompt differ from one another (one shared prompt, independent draws)
    assert len({tuple(x) for x in a.completions()[:4]}) == 4


def test_sampled_stop_ends_a_row_and_compaction_keeps_the_rest_exact(model, tok, prompts):
    eng = HFRolloutEngine(model, tok)
    free = eng.generate(prompts, 2, 8, temperature=1.0, seed=3, stop_ids=set())
    stop = int(free.completion_ids[0, 2])
    assert stop not in free.completion_ids[0, :2].tolist()
    r = eng.generate(prompts, 2, 8, temperature=1.0, seed=3, stop_ids={stop})
    # same seed, same draws up to the stop: row 0 ends at its step 3 with the stop token kept
    assert r.completions()[0] == free.completions()[0][:3] and not bool(r.truncated[0])
    mask = r.completion_mask
    assert (r.completion_ids[~mask] == tok.pad_token_id).all() and (r.sampling_logps[~mask] == 0).all()
    for n, comp in enumerate(r.completions()):
        assert bool(r.truncated[n]) == (comp[-1] != stop) and comp[:-1].count(stop) == 0
        # whatever rows were dropped from the cache, each row's log-probs are still its own forward's
        logits = _no_cache_logits(model, prompts[n // 2], comp)[:-1]
        want = torch.log_softmax(logits, -1).gather(-1, torch.tensor(comp)[:, None]).squeeze(-1)
        torch.testing.assert_close(r.sampling_logps[n, : len(comp)], want, **TOL)


def test_prompt_runs_once_per_group(model, tok, prompts):
    shapes = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: shapes.append(tuple(args[0].shape)))
    G, width = 4, max(len(p) for p in prompts)
    try:
        HFRolloutEngine(model, tok).generate(prompts, G, 5, temperature=1.0, stop_ids=set())
        ours = list(shapes)
        shapes.clear()
        ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        model.generate(input_ids=ids, attention_mask=mask, do_sample=True, num_return_sequences=G, max_new_tokens=5,
                       pad_token_id=tok.pad_token_id, eos_token_id=None)
        theirs = list(shapes)
    finally:
        hook.remove()
    # ours: one prefill of the P prompts, then single-token steps over the P*G rows
    assert ours[0] == (len(prompts), width) and all(s == (len(prompts) * G, 1) for s in ours[1:])
    assert len(ours) == 5
    # transformers' generate encodes every prompt G times
    assert theirs[0] == (len(prompts) * G, width)
    assert ours[0][0] * ours[0][1] * G == theirs[0][0] * theirs[0][1]


def test_lora_samples_through_the_adapter_without_changing_weights(tok, prompts):
    import peft

    with quiet_peft():
        lora = peft.get_peft_model(load_policy("tiny-llama"), peft.LoraConfig(
            r=4, lora_alpha=8, lora_dropout=0.5, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)  # a non-trivial adapter
    lora.train()
    before = {k: v.clone() for k, v in lora.state_dict().items()}
    r = HFRolloutEngine(lora, tok).generate(prompts, 2, 6, temperature=0.0, stop_ids=set())
    assert all(torch.equal(before[k], v) for k, v in lora.state_dict().items())
    assert all(m.training for m in lora.modules())  # train mode restored everywhere
    lora.eval()  # dropout off, as the engine ran it
    for n, comp in enumerate(r.completions()):
        logits = _no_cache_logits(lora, prompts[n // 2], comp)
        assert logits[:-1].argmax(-1).tolist() == comp  # greedy under the adapter
    with lora.disable_adapter():
        base = HFRolloutEngine(lora, tok).generate(prompts, 1, 6, temperature=0.0, stop_ids=set())
    assert not torch.equal(base.completion_ids, r.completion_ids[::2])  # the adapter changed the samples
    lora.train()
    assert all(m.training for m in lora.modules())


def test_bad_requests_are_clear_errors(model, tok, prompts):
    eng = HFRolloutEngine(model, tok)
    with pytest.raises(ValueError, match="at least one prompt"):
        eng.generate([], 2, 4)
    with pytest.raises(ValueError, match="at least one token"):
        eng.generate([prompts[0], []], 2, 4)
    with pytest.raises(ValueError, match="num_samples"):
        eng.generate(prompts, 0, 4)
    with pytest.raises(ValueError, match="top_p"):
        eng.generate(prompts, 2, 4, top_p=0.0)
    assert eng.default_stop_ids == {tok.eos_token_id} | set(
        [model.generation_config.eos_token_id] if isinstance(model.generation_config.eos_token_id, int)
        else model.generation_config.eos_token_id or [])


@pytest.mark.parametrize(("top_k", "temperature"), [(0, 1.0), (0, 0.6), (5, 1.0)])
def test_sampler_frequencies_match_the_distribution(top_k, temperature):
    from preftune.models.rollout import _sample, _warpers

    V, N = 300, 20_000  # two blocks of 256, the second partial
    logits = torch.randn(V, generator=torch.Generator().manual_seed(2)) * 2
    target = torch.softmax(logits.double() / temperature, -1)
    if top_k:
        keep = logits.topk(top_k).indices
        target = torch.zeros_like(target).index_copy(0, keep, target[keep] / target[keep].sum())
    tokens, logps = _sample(logits.expand(N, V).contiguous(), temperature, _warpers(top_k, 1.0),
                            torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens, minlength=V).double() / N
    # each frequency within 5 binomial standard errors of its probability, plus 5 counts for the rare
    # tokens where the normal approximation fails (p = 1e-6: one count is 35 sigma); never a p = 0 token
    assert bool((freq[target == 0] == 0).all())
    bad = (freq - target).abs() > 5 * (target * (1 - target) / N).sqrt() + 5 / N
    assert not bad.any(), (freq[bad], target[bad])
    torch.testing.assert_close(logps, torch.log_softmax(logits / temperature, -1)[tokens], **TOL)
