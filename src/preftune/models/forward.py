"""Model forward helpers: summed completion log-probs and reward-model scores for every batch layout.

The backbone (`model.model`, found through peft's `get_base_model()` when wrapped) runs once on the
batch; the LM head (or score head) then runs only where it counts: on the hidden states that predict
completion tokens (chunked over rows, see ops.logprobs) or on each response's last real token.
Layouts come from preftune.batching: `PairBatch` (padded, 2B rows), `SharedPairBatch` (prefix-shared
or packed, a 4D block mask) and `SequenceBatch` (single sequences, padded or packed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from preftune.batching import PairBatch, SequenceBatch, SharedPairBatch
from preftune.ops.logprobs import count_by_segment, gather_token_logps, pad_by_segment, sum_by_segment

LAYOUTS = ("padded", "shared")


@dataclass
class PairLogps:
    chosen_logps: torch.Tensor          # (B,) summed over chosen tokens, float32
    rejected_logps: torch.Tensor        # (B,)
    num_chosen_tokens: torch.Tensor     # (B,) long
    num_rejected_tokens: torch.Tensor   # (B,) long
    token_logps: torch.Tensor | None = None    # (N,) per completion token, when asked for
    token_segment: torch.Tensor | None = None  # (N,) b = pair b's chosen, B + b its rejected

    def token_matrix(self, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs of one side as (B, L) values and (B, L) bool mask, tokens in order."""
        if self.token_logps is None or self.token_segment is None:
            raise ValueError("per-token log-probs were not kept: call pair_logps(..., return_tokens=True)")
        B = self.chosen_logps.shape[0]
        values, mask = pad_by_segment(self.token_logps, self.token_segment, 2 * B)
        return (values[:B], mask[:B]) if side == "chosen" else (values[B:], mask[B:])

    @property
    def chosen_token_logps(self) -> torch.Tensor:
        """(B, L) chosen per-token log-probs, zero-padded on the right."""
        return self.token_matrix("chosen")[0]


@dataclass
class SequenceLogps:
    logps: torch.Tensor                 # (B,) summed over completion tokens, float32
    num_tokens: torch.Tensor            # (B,) long
    token_logps: torch.Tensor | None = None    # (N,)
    token_segment: torch.Tensor | None = None  # (N,) in [0, B)


@dataclass
class PairRewards:
    chosen: torch.Tensor    # (B, K) one score per head
    rejected: torch.Tensor  # (B, K)


def unwrap(model):
    """The transformers model under a peft wrapper (LoRA layers stay inside it and stay active)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def backbone(model):
    """The transformer body (e.g. LlamaModel) of a *ForCausalLM / *ForSequenceClassification."""
    m = unwrap(model)
    body = getattr(m, m.base_model_prefix, None)
    if body is None:
        raise ValueError(f"cannot find the backbone of {type(m).__name__} (no .{m.base_model_prefix})")
    return body


def _attention(model, batch) -> torch.Tensor:
    """The mask to hand to the backbone: 2D for padded layouts, the 4D block mask for shared ones."""
    if batch.attention_mask.dim() == 2:
        return batch.attention_mask
    impl = getattr(unwrap(model).config, "_attn_implementation", "eager")
    if impl == "sdpa":
        return batch.attention_mask  # SDPA takes a boolean mask (True = attend)
    if impl == "eager":
        dtype = next(model.parameters()).dtype
        return torch.zeros((), dtype=dtype).masked_fill(~batch.attention_mask, torch.finfo(dtype).min)
    raise ValueError(f"the prefix-shared layout needs attn_implementation 'sdpa' or 'eager' (a 4D mask), "
                     f"the model uses {impl!r}: load it with attn_implementation='sdpa' or use layout='padded'")


def _check_layout(batch, layout: str | None) -> None:
    if layout is None:
        return
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    want = SharedPairBatch if layout == "shared" else (PairBatch, SequenceBatch)
    if not isinstance(batch, want):
        raise TypeError(f"layout {layout!r} does not match the batch type {type(batch).__name__}")


def hidden_states(model, batch) -> torch.Tensor:
    """Run the backbone once: (rows, T, H) last hidden states."""
    kwargs = {"input_ids": batch.input_ids, "attention_mask": _attention(model, batch),
              "position_ids": batch.position_ids, "use_cache": False}
    if batch.token_type_ids is not None:
        kwargs["token_type_ids"] = batch.token_type_ids
    return backbone(model)(**kwargs)[0]


def _lm_head(model):
    head = unwrap(model).get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or type(head) is not torch.nn.Linear:
        raise ValueError(f"the LM head is a {type(head).__name__}, not a plain Linear layer: LoRA/adapters on "
                         "lm_head are not supported by the chunked log-prob path (leave lm_head out of target_modules)")
    return head


def _token_logps(model, batch, chunk_size: int) -> torch.Tensor:
    """(N,) log-probs of the completion tokens of any batch layout."""
    hidden = hidden_states(model, batch)
    flat = hidden.reshape(-1, hidden.shape[-1])[batch.gather_index]  # (N, H): only predicting positions
    head = _lm_head(model)
    softcap = getattr(unwrap(model).config, "final_logit_softcapping", None)
    return gather_token_logps(flat, head.weight, batch.gather_labels, chunk_size, bias=head.bias, softcap=softcap)


def token_logps_and_values(model, batch, chunk_size: int = 1024, temperature: float = 1.0,
                           value_head: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N,) log-probs of the completion tokens under log_softmax(logits / temperature), and with
    `value_head` (a Linear H -> 1) the (N,) values of the states that predict them (PPO's V(s_t)), from
    one backbone pass. temperature scales the hidden state (and bias) before the head: exactly
    logits / T without forming the logits."""
    hidden = hidden_states(model, batch)
    flat = hidden.reshape(-1, hidden.shape[-1])[batch.gather_index]  # (N, H)
    head = _lm_head(model)
    softcap = getattr(unwrap(model).config, "final_logit_softcapping", None)
    if temperature != 1.0 and softcap:
        raise ValueError("temperature != 1 with a soft-capped LM head is not supported")
    scale = 1.0 / temperature if temperature > 0 else 1.0
    bias = head.bias * scale if head.bias is not None and scale != 1.0 else head.bias
    logps = gather_token_logps(flat * scale if scale != 1.0 else flat, head.weight, batch.gather_labels, chunk_size,
                               bias=bias, softcap=softcap)
    values = value_head(flat.to(value_head.weight.dtype)).squeeze(-1).float() if value_head is not None else None
    return logps, values


def pair_logps(model, batch: PairBatch | SharedPairBatch, layout: str | None = None, chunk_size: int = 1024,
               return_tokens: bool = False) -> PairLogps:
    """Summed log-probs of chosen and rejected completions under a causal LM, for either layout."""
    _check_layout(batch, layout)
    if not isinstance(batch, (PairBatch, SharedPairBatch)):
        raise TypeError(f"pair_logps needs a pair batch, got {type(batch).__name__}")
    B = batch.num_pairs
    tok = _token_logps(model, batch, chunk_size)
    sums = sum_by_segment(tok, batch.gather_segment, 2 * B)
    counts = count_by_segment(batch.gather_segment, 2 * B)
    return PairLogps(sums[:B], sums[B:], counts[:B], counts[B:],
                     tok if return_tokens else None, batch.gather_segment if return_tokens else None)


def sequence_logps(model, batch: SequenceBatch, chunk_size: int = 1024,
                   return_tokens: bool = False) -> SequenceLogps:
    """Summed log-probs of each sequence's completion tokens (SFT, KTO, reference scoring)."""
    if not isinstance(batch, SequenceBatch):
        raise TypeError(f"sequence_logps needs a SequenceBatch, got {type(batch).__name__}")
    tok = _token_logps(model, batch, chunk_size)
    n = batch.num_sequences
    return SequenceLogps(sum_by_segment(tok, batch.gather_segment, n), count_by_segment(batch.gather_segment, n),
                         tok if return_tokens else None, batch.gather_segment if return_tokens else None)


def _score_head(model):
    m = unwrap(model)
    for name in ("score", "classifier", "v_head"):
        if hasattr(m, name):
            return getattr(m, name)
    raise ValueError(f"cannot find the score head of {type(m).__name__} (looked for .score, .classifier, .v_head)")


def unpad_chunks(lengths: list[int], pad_tolerance: float) -> list[list[int]]:
    """Rows grouped for padding-free encoder forwards: sorted longest first, a chunk grows while its
    padding share (positions beyond each row's length, in a block as wide as its longest row) stays
    <= pad_tolerance. 0 = every distinct length alone (no padding computed), 1 = one block.

    Written here because an encoder (BERT) has no padding-free kernel on CPU: trimming right-padded
    rows to their chunk's width is exact (pads are masked out of attention) and needs no 4D mask.
    """
    if not 0.0 <= pad_tolerance <= 1.0:
        raise ValueError(f"pad_tolerance must be in [0, 1], got {pad_tolerance}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    chunks: list[list[int]] = []
    width = total = 0
    for i in order:
        if chunks:
            n = len(chunks[-1]) + 1
            if (width * n - total - lengths[i]) <= pad_tolerance * width * n:
                chunks[-1].append(i)
                total += lengths[i]
                continue
        chunks.append([i])
        width = total = lengths[i]
    return chunks


def _encoder_scores(model, batch, pad_tolerance: float) -> torch.Tensor:
    """(rows, K) pooled scores of a 2D-masked encoder batch, computed on unpadded chunks of rows."""
    if batch.attention_mask.dim() == 4:
        raise ValueError("encoders see the whole row, so they cannot share a prefix or be packed: "
                         "use layout='padded'")
    mask = batch.attention_mask
    # token types: 0 on the prompt, 1 on the response (the text-pair encoding BERT was trained on)
    types = batch.token_type_ids if batch.token_type_ids is not None else batch.completion_mask.long()
    # a row's width = its last real position + 1, so a left-padded row is kept whole (never cut)
    cols = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    widths = (mask.bool() * cols).amax(1).clamp(min=1).tolist()
    chunks = unpad_chunks(widths, pad_tolerance)

    # the token embeddings are looked up once for the whole batch: one (V, H) embedding gradient
    # instead of one per chunk (each is a dense fill + add of the vocabulary matrix)
    embeds = model.get_input_embeddings()(batch.input_ids) if len(chunks) > 1 else None

    def run(rows):
        w = max(widths[i] for i in rows)
        idx = torch.tensor(rows, device=mask.device)
        ids = {"input_ids": batch.input_ids[idx, :w]} if embeds is None else {"inputs_embeds": embeds[idx, :w]}
        # explicit positions: BERT's are absolute, so left padding would otherwise shift them
        return model(**ids, attention_mask=mask[idx, :w], token_type_ids=types[idx, :w],
                     position_ids=batch.position_ids[idx, :w]).logits

    scores = torch.cat([run(rows) for rows in chunks])  # the model's own pooling ([CLS] + pooler) per row
    order = torch.tensor([i for rows in chunks for i in rows], device=mask.device)
    return scores[torch.argsort(order)]


def _scores(model, batch, pad_tolerance: float = 0.05) -> torch.Tensor:
    """(rows', K) scores: pooled output for encoders, hidden state at each last real token for decoders."""
    from preftune.models import is_encoder

    if is_encoder(unwrap(model).config):
        return _encoder_scores(model, batch, pad_tolerance)
    hidden = hidden_states(model, batch)
    last = hidden.reshape(-1, hidden.shape[-1])[batch.last_index]  # never a pad: indices come from the layout
    return _score_head(model)(last)


def pair_rewards(reward_model, batch: PairBatch | SharedPairBatch, layout: str | None = None,
                 pad_tolerance: float = 0.05) -> PairRewards:
    """(B, K) scores of chosen and rejected. Decoders read the last real token of each response;
    encoders run on unpadded chunks of rows (see unpad_chunks)."""
    _check_layout(batch, layout)
    scores = _scores(reward_model, batch, pad_tolerance)
    B = batch.num_pairs
    return PairRewards(scores[:B], scores[B:])


def sequence_rewards(reward_model, batch: SequenceBatch, pad_tolerance: float = 0.05) -> torch.Tensor:
    """(B, K) scores of single responses (scoring files of unpaired responses)."""
    if not isinstance(batch, SequenceBatch):
        raise TypeError(f"sequence_rewards needs a SequenceBatch, got {type(batch).__name__}")
    return _scores(reward_model, batch, pad_tolerance)


def completion_logps(model, batch, chunk_size: int = 1024, return_tokens: bool = False):
    """PairLogps of a pair batch (any layout) or SequenceLogps of a SequenceBatch."""
    if isinstance(batch, SequenceBatch):
        return sequence_logps(model, batch, chunk_size=chunk_size, return_tokens=return_tokens)
    return pair_logps(model, batch, chunk_size=chunk_size, return_tokens=return_tokens)


class ForwardModule(torch.nn.Module):
    """`fn(model, batch)` as a module, so that a DDP / accelerate wrapper around it sees the forward
    (calling `model.model` on a DDP-wrapped model would bypass DDP's forward and its gradient sync).

    fn: "logps" (completion_logps: pairs or sequences), "pair_logps", "sequence_logps", "pair_rewards" or
    "sequence_rewards"; kwargs go to fn. The training stages wrap their model in one of these.
    """

    def __init__(self, model, fn: str = "pair_logps", **kwargs):
        super().__init__()
        fns = {"logps": completion_logps, "pair_logps": pair_logps, "sequence_logps": sequence_logps,
               "pair_rewards": pair_rewards, "sequence_rewards": sequence_rewards}
        if fn not in fns:
            raise ValueError(f"fn must be one of {', '.join(fns)}, got {fn!r}")
        self.model, self.fn, self.kwargs = model, fns[fn], kwargs

    def forward(self, batch):
        return self.fn(self.model, batch, **self.kwargs)
