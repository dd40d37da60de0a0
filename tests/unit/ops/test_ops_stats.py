"""Masked statistics and KL estimators against hand values and independent formulas."""

import math

import torch

from preftune.ops.stats import kl_k1, kl_k2, kl_k3, masked_mean, masked_sum, masked_var, masked_whiten


def test_masked_stats_by_hand():
    v = torch.tensor([[1.0, 2.0, 100.0], [3.0, -50.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    assert masked_sum(v, m).item() == 12.0
    assert masked_mean(v, m).item() == 3.0
    assert masked_mean(v, m, dim=1).tolist() == [1.5, 4.5]
    sel = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert math.isclose(masked_var(v, m).item(), sel.var().item(), rel_tol=1e-6)  # (4+1+0+9)/3
    assert math.isclose(masked_var(v, m, unbiased=False).item(), 14 / 4, rel_tol=1e-6)
    w = masked_whiten(v, m)
    assert abs(masked_mean(w, m).item()) < 1e-6
    assert math.isclose(masked_var(w, m).item(), 1.0, rel_tol=1e-5)


def test_empty_masks_give_zero_not_nan():
    v = torch.tensor([1.0, 2.0])
    none = torch.zeros(2, dtype=torch.bool)
    assert masked_mean(v, none).item() == 0.0
    assert masked_var(v, none).item() == 0.0
    assert masked_var(v, torch.tensor([True, False])).item() == 0.0  # n = 1: no spread


def test_kl_estimators_by_hand_and_in_expectation():
    lp, rlp = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    assert kl_k1(lp, rlp).tolist() == [0.5, -1.0]
    assert kl_k2(lp, rlp).tolist() == [0.125, 0.5]
    expected = [math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0]
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(kl_k3(lp, rlp).tolist(), expected))
    assert (kl_k3(lp, rlp) >= 0).all() and kl_k3(lp, lp).abs().max().item() == 0.0
    # Monte Carlo: k1 and k3 averaged over policy samples estimate the exact KL(p || q)
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.3, 0.5])
    exact = (p * (p / q).log()).sum().item()
    x = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    lp, rlp = p.log()[x], q.log()[x]
    assert abs(kl_k1(lp, rlp).mean().item() - exact) < 0.01
    assert abs(kl_k3(lp, rlp).mean().item() - exact) < 0.01
