"""Rollouts for online RL: G samples for each of P prompts, from the current training weights.

One small interface, `RolloutEngine.generate(...) -> Rollout`, so the training loop never knows who
samples. `HFRolloutEngine` is the transformers implementation used here (CPU, tested):
- the P prompts are left-padded and prefilled ONCE (B = P rows, the LM head only on each prompt's
  last position); the KV cache is then repeated G times in the batch dimension
  (`DynamicCache.batch_repeat_interleave`) and all P*G rows decode together, one token per step;
- rows stop at a stop id (the stop token is kept, as `generate` does); once a quarter of the rows
  in the batch have stopped they are dropped from the cache (`batch_select_indices`), so finished
  rows stop costing compute;
- sampling draws from a `torch.Generator` seeded per call: the same seed gives the same samples on
  the same device and software, whatever the global RNG state (which is never touched); the draw is
  an exact two-level inverse CDF (2 uniforms per row), not torch.multinomial (one exponential per
  vocabulary entry, most of a CPU rollout's time), so seeds do not reproduce `generate`'s samples;
- the model runs under `no_grad` in eval mode (dropout off) and every module's train/eval flag is
  restored afterwards; a peft model samples through its adapters in place: no weight copy, no merge.

`sampling_logps` are log-probs of the sampled tokens under the temperature-scaled distribution,
log_softmax(logits / T), before top-k / top-p truncation: the quantity a training forward at the
same T recomputes, so with top_k = 0 and top_p = 1 they are the exact sampling log-probs (T = 0,
greedy, reports log_softmax(logits)).

A vLLM engine (untested here: no GPU on this project's machines) would implement the protocol as:
`llm = vllm.LLM(model=path, ...)`; before each rollout load the trainer's current weights into the
engine (a peft model: merge the adapter into the weights sent, or serve it as a `LoRARequest`);
`params = vllm.SamplingParams(n=num_samples, max_tokens=max_new_tokens, temperature=temperature,
top_p=top_p, top_k=top_k or -1, seed=seed, stop_token_ids=sorted(stop_ids), logprobs=0)`;
`outs = llm.generate([{"prompt_token_ids": p} for p in prompt_ids], params)`; then for prompt i and
sample j: completion `outs[i].outputs[j].token_ids`, truncated = `finish_reason == "length"`, the
sampled token's log-prob from `.logprobs`, prompt_index i. vLLM shares the prompt's KV blocks among
the n samples itself. Its log-probs are by default those of the raw model distribution (T = 1);
recent versions can return temperature-processed ones (engine argument `logprobs_mode`): check the
installed version so that `sampling_logps` keeps the meaning above.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from preftune.models.forward import unwrap


@dataclass(frozen=True)
class Rollout:
    """N = P * G samples; sample p*G + g is prompt p's g-th. L = longest completion.

    completion_ids (N, L) long, right-padded with the pad id; completion_lengths (N,) long, tokens
    generated including the stop token; truncated (N,) bool, True when no stop id came within
    max_new_tokens; sampling_logps (N, L) float32, log_softmax(logits / T) at each sampled token, 0 at
    padding; prompt_index (N,) long, p for each sample; num_samples = G."""

    completion_ids: Tensor
    completion_lengths: Tensor
    truncated: Tensor
    sampling_logps: Tensor
    prompt_index: Tensor
    num_samples: int

    @property
    def completion_mask(self) -> Tensor:
        """(N, L) bool: True on generated tokens."""
        positions = torch.arange(self.completion_ids.shape[1], device=self.completion_ids.device)
        return positions[None] < self.completion_lengths[:, None]

    def completions(self) -> list[list[int]]:
        """The completions as ragged lists of token ids (stop token included when there is one)."""
        return [row[:n].tolist() for row, n in zip(self.completion_ids, self.completion_lengths.tolist())]


class RolloutEngine(Protocol):
    def generate(self, prompt_ids: list[list[int]], num_samples: int, max_new_tokens: int, temperature: float,
                 top_p: float, top_k: int, seed: int, stop_ids: set[int]) -> Rollout:
        """num_samples completions of each prompt; temperature 0 = greedy, top_k 0 = off, top_p 1 = off."""
        ...


# ---------------------------------------------------------------- the decode state (cache + masks)

@dataclass
class DecodeState:
    """R rows being decoded. cache: the transformers Cache over the R rows; attention_mask (R, S) long,
    1 on real tokens (left padding is 0); positions (R,) long, position id of the next token;
    logits (R, V) float32, next-token logits; rows (R,) long, the sample index of each row."""

    cache: Any
    attention_mask: Tensor
    positions: Tensor
    logits: Tensor
    rows: Tensor


@functools.cache
def _cache_kwarg(model_class: type) -> str:
    # transformers 5 renamed `past_key_values` to `cache` (the old name is deprecated until 5.40)
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def _forward(lm, state_cache, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
    """(R, S_new) tokens through the model with the cache; returns (R, V) float32 last-position logits."""
    out = lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
             logits_to_keep=1, **{_cache_kwarg(type(lm)): state_cache})
    return out.logits[:, -1].float()


def prefill(model, prompt_ids: list[list[int]], num_samples: int, pad_id: int) -> DecodeState:
    """Encode each prompt once (left-padded batch of P rows), then repeat cache, masks and logits
    num_samples times: rows p*G .. p*G+G-1 share prompt p. Returns a state of P*G rows."""
    from transformers import DynamicCache

    lm = unwrap(model)
    device = next(lm.parameters()).device
    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long, device=device)
    for i, p in enumerate(prompt_ids):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long, device=device)
        mask[i, width - len(p):] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # (P, S) real tokens at 0..len-1
    cache = DynamicCache(config=lm.config)
    logits = _forward(lm, cache, ids, mask, position_ids)  # (P, V)
    cache.batch_repeat_interleave(num_samples)
    g = num_samples
    return DecodeState(cache, mask.repeat_interleave(g, 0), mask.sum(-1).repeat_interleave(g, 0),
                       logits.repeat_interleave(g, 0), torch.arange(len(prompt_ids) * g, device=device))


def decode_step(model, state: DecodeState, tokens: Tensor) -> DecodeState:
    """Append one token per row (R,) and compute the next logits; the cache grows in place."""
    lm = unwrap(model)
    mask = torch.cat([state.attention_mask, torch.ones_like(state.attention_mask[:, :1])], dim=1)
    logits = _forward(lm, state.cache, tokens[:, None], mask, state.positions[:, None])
    return DecodeState(state.cache, mask, state.positions + 1, logits, state.rows)


def keep_rows(state: DecodeState, keep: Tensor) -> DecodeState:
    """Drop the rows where keep (R,) bool is False, from the cache too."""
    index = keep.nonzero().squeeze(1)
    state.cache.batch_select_indices(index)
    return DecodeState(state.cache, state.attention_mask[index], state.positions[index], state.logits[index],
                       state.rows[index])


# ---------------------------------------------------------------- sampling

def _sample(logits: Tensor, temperature: float, warpers: list, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(R, V) float32 logits -> tokens (R,) long and their log_softmax(logits / T) (R,)."""
    if temperature == 0:
        tokens = logits.argmax(-1)
        return tokens, torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).squeeze(-1)
    scaled = logits / temperature if temperature != 1 else logits
    filtered = scaled
    for warp in warpers:  # top-k then top-p, as transformers' generate orders them
        filtered = warp(None, filtered)
    peak = filtered.amax(-1, keepdim=True)  # (R, 1)
    tokens, total = _draw(filtered, peak, generator)
    if warpers:
        lse = torch.logsumexp(scaled, -1)
    else:  # the draw already summed the weights: log Σ exp(x) = peak + log Σ exp(x - peak)
        lse = (peak.squeeze(-1).double() + total.log()).float()
    return tokens, scaled.gather(-1, tokens[:, None]).squeeze(-1) - lse


_BLOCK = 256


def _draw(filtered: Tensor, peak: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One token per row with probability ∝ exp(filtered - peak) (R, V); also returns Σ weights (R,) float64.

    Two-level inverse CDF: pick a block of 256 entries by its mass (float64 cumulative sum over the V/256
    block sums), then an entry inside it (float64 cumulative sum of 256 weights), each with its own uniform.
    Why not torch.multinomial: it draws one exponential per vocabulary entry, which on one CPU thread was
    70% of a tiny-llama rollout (torch profiler, 64 rows x 49k vocabulary); this draws 2 uniforms per row.
    """
    R, V = filtered.shape
    nb = -(-V // _BLOCK)
    weights = filtered.new_empty((R, nb * _BLOCK))
    torch.sub(filtered, peak, out=weights[:, :V]).exp_()  # (R, V) in [0, 1], 0 where filtered out
    weights[:, V:] = 0.0
    blocks = weights.view(R, nb, _BLOCK)
    block_cdf = blocks.sum(-1).double().cumsum(-1)  # (R, nb)
    u = torch.rand((R, 2), generator=generator, dtype=torch.float64, device=filtered.device)
    b = torch.searchsorted(block_cdf, u[:, :1] * block_cdf[:, -1:], right=True).clamp(max=nb - 1)  # (R, 1)
    inner_cdf = blocks[torch.arange(R, device=filtered.device), b.squeeze(1)].double().cumsum(-1)  # (R, 256)
    j = torch.searchsorted(inner_cdf, u[:, 1:] * inner_cdf[:, -1:], right=True).clamp(max=_BLOCK - 1)
    return (b * _BLOCK + j).squeeze(1), block_cdf[:, -1]


def _warpers(top_k: int, top_p: float) -> list:
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    return ([TopKLogitsWarper(top_k)] if top_k > 0 else []) + ([TopPLogitsWarper(top_p)] if top_p < 1 else [])


def _check_request(prompt_ids, num_samples, max_new_tokens, temperature, top_p, top_k) -> None:
    if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
        raise ValueError("rollouts need at least one prompt, and every prompt at least one token")
    if num_samples < 1 or max_new_tokens < 1:
        raise ValueError(f"num_samples and max_new_tokens must be >= 1, got {num_samples}, {max_new_tokens}")
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got {temperature}, {top_p}, {top_k}")


class HFRolloutEngine:
    """Batched sampling with a KV cache from a transformers causal LM (or a peft model around one)."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = getattr(getattr(unwrap(model), "generation_config", None), "eos_token_id", None)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.default_stop_ids = {i for i in [tokenizer.eos_token_id, *eos] if i is not None}

    def generate(self, prompt_ids: list[list[int]], num_samples: int = 1, max_new_tokens: int = 64,
                 temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, seed: int = 0,
                 stop_ids: set[int] | None = None) -> Rollout:
        """stop_ids None = the tokenizer's and generation config's EOS ids; an empty set never stops."""
        _check_request(prompt_ids, num_samples, max_new_tokens, temperature, top_p, top_k)
        stops = self.default_stop_ids if stop_ids is None else set(stop_ids)
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        try:
            with torch.no_grad():
                return self._generate(prompt_ids, num_samples, max_new_tokens, temperature, _warpers(top_k, top_p),
                                      seed, stops)
        finally:
            for m, training in modes.items():
                m.training = training

    def _generate(self, prompt_ids, num_samples, max_new_tokens, temperature, warpers, seed, stops) -> Rollout:
        state = prefill(self.model, prompt_ids, num_samples, self.pad_id)
        device = state.logits.device
        n = state.rows.numel()
        ids = torch.full((n, max_new_tokens), self.pad_id, dtype=torch.long, device=device)
        logps = torch.zeros((n, max_new_tokens), dtype=torch.float32, device=device)
        lengths = torch.zeros(n, dtype=torch.long, device=device)
        stopped = torch.zeros(n, dtype=torch.bool, device=device)
        stop_tensor = torch.tensor(sorted(stops), dtype=torch.long, device=device)
        generator = torch.Generator(device=device).manual_seed(seed)
        live = torch.ones(n, dtype=torch.bool, device=device)  # rows of `state` still generating
        for t in range(max_new_tokens):
            tokens, token_logps = _sample(state.logits, temperature, warpers, generator)
            rows = state.rows[live]
            ids[rows, t], logps[rows, t], lengths[rows] = tokens[live], token_logps[live], t + 1
            hit = live & torch.isin(tokens, stop_tensor)
            stopped[state.rows[hit]] = True
            live &= ~hit
            if t + 1 == max_new_tokens or not bool(live.any()):
                break
            if 4 * int((~live).sum()) >= live.numel():  # compact: finished rows leave the cache
                state, tokens, live = keep_rows(state, live), tokens[live], live[live]
            state = decode_step(self.model, state, torch.where(live, tokens, self.pad_id))
        width = int(lengths.max())
        return Rollout(ids[:, :width], lengths, ~stopped, logps[:, :width],
                       torch.arange(len(prompt_ids), device=device).repeat_interleave(num_samples), num_samples)
