"""Log-probabilities of given tokens, computed only where they count and a chunk at a time.

The full (rows, T, V) logits of a batch are the largest tensor of preference training (V ~ 50k);
here the LM head runs only on the N hidden states that predict completion tokens, `chunk_size`
rows at a time, and under autograd each chunk is recomputed in backward (hand-written backward,
activation checkpointing by hand), so at most chunk_size x V logits exist at once in training as
in inference.
Pure tensors: nothing here knows about transformers.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  softcap: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, H) -> raw (n, V) head output and the logits the softmax sees, both float32 (exact
    log-softmax for bf16 models). Soft-capping (Gemma-2 style) is applied before the softmax."""
    raw = torch.nn.functional.linear(h, weight, bias).float()
    return raw, (torch.tanh(raw / softcap) * softcap if softcap is not None else raw)


def _unit_grad(raw: torch.Tensor, logits: torch.Tensor, lse: torch.Tensor, labels: torch.Tensor,
               softcap: float | None) -> torch.Tensor:
    """d log p(label) / d raw = (onehot(label) - softmax), through the soft-cap: (n, V) float32."""
    grad = torch.exp(logits - lse).neg_()
    grad.scatter_add_(-1, labels[:, None], torch.ones_like(labels[:, None], dtype=grad.dtype))
    if softcap is not None:
        grad *= 1 - torch.tanh(raw / softcap) ** 2
    return grad


class _HeadLogps(torch.autograd.Function):
    """Chunked log-probs with a hand-written backward.

    Trainable head: backward recomputes each chunk's logits (nothing of size V is kept between
    forward and backward) and forms both gradients from one (chunk, V) tensor.
    Frozen head (LoRA): the gradient w.r.t. each hidden row is linear in that row's upstream
    gradient, so it is formed in forward (N x H kept) and backward only scales it: no recompute.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size, softcap):
        head_grad = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        d_hidden = None if head_grad else torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_size):
            sl = slice(start, start + chunk_size)
            raw, logits = _chunk_logits(hidden[sl], weight, bias, softcap)
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            out[sl] = (logits.gather(-1, labels[sl, None]) - lse).squeeze(-1)
            if d_hidden is not None:
                d_hidden[sl] = _unit_grad(raw, logits, lse, labels[sl], softcap).to(weight.dtype) @ weight
        ctx.chunk_size, ctx.softcap, ctx.head_grad, ctx.hidden_dtype = chunk_size, softcap, head_grad, hidden.dtype
        if head_grad:
            ctx.save_for_backward(hidden, weight, bias, labels)
        else:
            ctx.save_for_backward(d_hidden)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        if not ctx.head_grad:
            (d_hidden,) = ctx.saved_tensors
            return (grad_out[:, None] * d_hidden).to(ctx.hidden_dtype), None, None, None, None, None
        hidden, weight, bias, labels = ctx.saved_tensors
        grad_h = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if bias is not None else None
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            sl = slice(start, start + ctx.chunk_size)
            h = hidden[sl]
            raw, logits = _chunk_logits(h, weight, bias, ctx.softcap)
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            g = _unit_grad(raw, logits, lse, labels[sl], ctx.softcap).mul_(grad_out[sl, None])  # (n, V)
            if grad_h is not None:
                grad_h[sl] = g.to(weight.dtype) @ weight
            grad_w.addmm_(g.T, h.float())
            if grad_b is not None:
                grad_b += g.sum(0)
        grad_w = grad_w.to(weight.dtype) if ctx.needs_input_grad[1] else None
        grad_b = grad_b.to(bias.dtype) if grad_b is not None and ctx.needs_input_grad[2] else None
        return grad_h, grad_w, grad_b, None, None, None


def gather_token_logps(hidden: torch.Tensor, lm_head_weight: torch.Tensor, labels: torch.Tensor,
                       chunk_size: int = 1024, bias: torch.Tensor | None = None,
                       softcap: float | None = None) -> torch.Tensor:
    """log softmax(hidden @ W^T + b)[label] for each row, float32.

    hidden (N, H), lm_head_weight (V, H), labels (N,) -> (N,).
    Equal (values and gradients) to `log_softmax(hidden @ W.T).gather(labels)`; peak memory is
    chunk_size x V logits, in training as in inference: a trainable head's chunks are recomputed
    in backward; with a frozen head (LoRA) the hidden-state gradient is formed in forward and
    nothing is recomputed (one head matmul fewer per chunk).
    """
    if hidden.dim() != 2 or labels.shape != hidden.shape[:1]:
        raise ValueError(f"expected hidden (N, H) and labels (N,), got {tuple(hidden.shape)} and {tuple(labels.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    track = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, lm_head_weight, bias))
    if track:
        return _HeadLogps.apply(hidden, lm_head_weight, bias, labels, chunk_size, softcap)
    out = []
    for start in range(0, hidden.shape[0], chunk_size):
        _, logits = _chunk_logits(hidden[start:start + chunk_size], lm_head_weight, bias, softcap)
        lab = labels[start:start + chunk_size, None]
        out.append((logits.gather(-1, lab) - torch.logsumexp(logits, dim=-1, keepdim=True)).squeeze(-1))
    return torch.cat(out)


def sum_by_segment(values: torch.Tensor, segment_ids: torch.Tensor, num_segments: int) -> torch.Tensor:
    """values (N,), segment_ids (N,) in [0, S) -> (S,) sums (0 for empty segments); differentiable."""
    out = values.new_zeros(num_segments)
    return out.index_add(0, segment_ids, values)


def count_by_segment(segment_ids: torch.Tensor, num_segments: int) -> torch.Tensor:
    """segment_ids (N,) -> (S,) long token counts."""
    return torch.bincount(segment_ids, minlength=num_segments)[:num_segments]


def pad_by_segment(values: torch.Tensor, segment_ids: torch.Tensor, num_segments: int,
                   fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter flat values into (S, Lmax) rows in their order of appearance; returns (values, mask).

    values (N,), segment_ids (N,) -> (S, L) values and (S, L) bool mask of filled cells.
    """
    counts = count_by_segment(segment_ids, num_segments)
    width = int(counts.max()) if counts.numel() and values.numel() else 0
    # rank of each element within its segment: stable sort by segment, then position minus segment start
    order = torch.sort(segment_ids, stable=True).indices
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(segment_ids)
    rank[order] = torch.arange(segment_ids.numel(), device=segment_ids.device) - starts[segment_ids[order]]
    out = values.new_full((num_segments, width), fill)
    mask = torch.zeros((num_segments, width), dtype=torch.bool, device=values.device)
    out = out.index_put((segment_ids, rank), values)
    mask[segment_ids, rank] = True
    return out, mask
