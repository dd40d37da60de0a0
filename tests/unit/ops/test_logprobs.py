"""Chunked log-prob gathering equals the full log-softmax (values and gradients); segment sums."""

import pytest
import torch

from preftune.ops.logprobs import count_by_segment, gather_token_logps, pad_by_segment, sum_by_segment


def _oracle(hidden, weight, labels, bias=None, softcap=None):
    logits = hidden @ weight.T + (0 if bias is None else bias)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    return torch.log_softmax(logits, -1).gather(-1, labels[:, None]).squeeze(-1)


def _data(n=13, h=8, v=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64).float()
    weight = torch.randn(v, h, generator=g).float()
    bias = torch.randn(v, generator=g).float()
    labels = torch.randint(0, v, (n,), generator=g)
    return hidden, weight, bias, labels


@pytest.mark.parametrize("chunk", [1, 4, 13, 100])
@pytest.mark.parametrize("softcap", [None, 5.0])
def test_chunked_equals_full_values_and_grads(chunk, softcap):
    hidden, weight, bias, labels = _data()
    leaves = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    fast = gather_token_logps(leaves[0], leaves[1], labels, chunk, bias=leaves[2], softcap=softcap)
    coeffs = torch.linspace(-1, 2, len(labels))  # a non-uniform upstream gradient
    (fast * coeffs).sum().backward()
    refs = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    slow = _oracle(*refs[:2], labels, refs[2], softcap)
    (slow * coeffs).sum().backward()
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    for a, b in zip(leaves, refs):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(gather_token_logps(hidden, weight, labels, chunk, bias=bias, softcap=softcap),
                                   slow.detach(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("softcap", [None, 5.0])
def test_frozen_head_path_equals_full(softcap):
    # a frozen head (LoRA) takes the no-recompute path: same values and hidden-state gradients
    hidden, weight, bias, labels = _data()
    h1, h2 = hidden.clone().requires_grad_(), hidden.clone().requires_grad_()
    coeffs = torch.linspace(-1, 2, len(labels))
    fast = gather_token_logps(h1, weight, labels, 4, bias=bias, softcap=softcap)
    (fast * coeffs).sum().backward()
    slow = _oracle(h2, weight, labels, bias, softcap)
    (slow * coeffs).sum().backward()
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    torch.testing.assert_close(h1.grad, h2.grad, atol=1e-5, rtol=0)
    assert fast.grad_fn is not None


def test_training_keeps_no_full_logits():
    # Under autograd the graph saves only the chunk inputs, never a (N, V) logits tensor.
    hidden, weight, _, labels = _data(n=64, v=500)
    for head_trains in (True, False):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_(head_trains)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t, saved=saved: saved.append(t.numel()) or t, lambda t: t):
            out = gather_token_logps(h, w, labels, chunk_size=16)
        # the largest saved tensor is the head itself (or the 64 x 8 hidden gradient), never a
        # 16 x 500 chunk of logits, let alone the 64 x 500 ones
        assert max(saved, default=0) <= weight.numel()
        out.sum().backward()
        assert h.grad is not None and torch.isfinite(h.grad).all()


def test_bad_shapes_and_empty():
    hidden, weight, _, labels = _data()
    with pytest.raises(ValueError, match="expected hidden"):
        gather_token_logps(hidden[None], weight, labels)
    assert gather_token_logps(hidden[:0], weight, labels[:0]).shape == (0,)


def test_segments_by_hand():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    seg = torch.tensor([2, 0, 2, 2])
    assert sum_by_segment(values, seg, 4).tolist() == [2.0, 0.0, 8.0, 0.0]
    assert count_by_segment(seg, 4).tolist() == [1, 0, 3, 0]
    padded, mask = pad_by_segment(values, seg, 3)
    assert padded.tolist() == [[2.0, 0, 0], [0, 0, 0], [1.0, 3.0, 4.0]]
    assert mask.tolist() == [[True, False, False], [False] * 3, [True] * 3]
