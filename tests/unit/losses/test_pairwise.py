"""Reward-model losses: hand-computed values with `math`, ties, heads, ensembles."""

import math
import statistics

import pytest
import torch

from preftune.losses.pairwise import (
    VERDICT_CHOSEN,
    VERDICT_MISSING,
    VERDICT_REJECTED,
    VERDICT_TIE,
    TieMode,
    bradley_terry_loss,
    ensemble_stats,
    multi_head_loss,
    scalarize,
)


def sp(x: float) -> float:  # -log σ(-x)
    return math.log1p(math.exp(x))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


T = lambda *v: torch.tensor(v, dtype=torch.float64)
RC, RR = T(1.0, -0.5, 2.0), T(0.2, 0.5, 2.5)  # Δ = 0.8, -1.0, -0.5


def test_bradley_terry_hand_value_and_metrics():
    out = bradley_terry_loss(RC, RR)
    expected = [sp(-0.8), sp(1.0), sp(0.5)]
    torch.testing.assert_close(out.losses, T(*expected))
    assert float(out.loss) == pytest.approx(sum(expected) / 3)
    torch.testing.assert_close(out.margins, T(0.8, -1.0, -0.5))
    assert out.accuracy == pytest.approx(1 / 3) and out.num_ties == 0


def test_margin():
    plain = bradley_terry_loss(RC, RR)
    torch.testing.assert_close(bradley_terry_loss(RC, RR, margin=T(0.0, 0.0, 0.0)).losses, plain.losses)
    out = bradley_terry_loss(RC, RR, margin=T(0.5, 0.0, 1.0))
    torch.testing.assert_close(out.losses, T(sp(-(0.8 - 0.5)), sp(1.0), sp(1.5)))
    # margins report the raw score difference, not the shifted logit
    torch.testing.assert_close(out.margins, plain.margins)


def test_centering():
    eta = 0.01
    out = bradley_terry_loss(RC, RR, center_coef=eta)
    bt = (sp(-0.8) + sp(1.0) + sp(0.5)) / 3
    center = ((1.2) ** 2 + 0.0 ** 2 + 4.5 ** 2) / 3
    assert float(out.loss) == pytest.approx(bt + eta * center)
    # the centering gradient pulls the pair sum towards zero: d/dr_c of η(r_c + r_r)^2 / B
    rc = RC.clone().requires_grad_()
    bradley_terry_loss(rc, RR, center_coef=eta).loss.backward()
    bt_grad = [-sig(-0.8) / 3, -sig(1.0) / 3, -sig(0.5) / 3]
    want = [g + eta * 2 * s / 3 for g, s in zip(bt_grad, [1.2, 0.0, 4.5])]
    torch.testing.assert_close(rc.grad, T(*want))


def test_confidence_and_smoothing():
    out = bradley_terry_loss(RC[:1], RR[:1], confidence=T(0.7))
    assert float(out.loss) == pytest.approx(0.7 * sp(-0.8) + 0.3 * sp(0.8))
    full = bradley_terry_loss(RC, RR, confidence=T(1.0, 1.0, 1.0))
    torch.testing.assert_close(full.losses, bradley_terry_loss(RC, RR).losses)
    smooth = bradley_terry_loss(RC[:1], RR[:1], label_smoothing=0.1)
    assert float(smooth.loss) == pytest.approx(0.9 * sp(-0.8) + 0.1 * sp(0.8))
    # confidence 1/2 is the tie target: minimised at Δ = 0
    half = bradley_terry_loss(T(0.0), T(0.0), confidence=T(0.5))
    assert float(half.loss) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="confidence"):
        bradley_terry_loss(RC, RR, confidence=T(1.5, 1.0, 1.0))


def test_ties_skip_are_excluded_and_reported():
    ties = torch.tensor([False, True, False])
    out = bradley_terry_loss(RC, T(0.2, -3.0, 2.5), tie_mask=ties, tie_mode="skip")
    # the tie has margin +2.5 but is never counted as a win, nor in the loss
    assert out.num_ties == 1 and not bool(out.correct[1]) and not bool(out.counted[1])
    assert float(out.loss) == pytest.approx((sp(-0.8) + sp(0.5)) / 2)
    assert out.accuracy == pytest.approx(0.5)
    all_ties = bradley_terry_loss(RC, RR, tie_mask=torch.ones(3, dtype=torch.bool))
    assert float(all_ties.loss) == 0.0 and math.isnan(all_ties.accuracy)


def test_ties_half_target():
    ties = torch.tensor([False, True, False])
    out = bradley_terry_loss(RC, RR, tie_mask=ties, tie_mode=TieMode.HALF, margin=T(0.5, 0.5, 0.5))
    # the margin does not shift a tie; the tie loss is ½(-log σ(Δ) - log σ(-Δ))
    tie = 0.5 * (sp(1.0) + sp(-1.0))
    torch.testing.assert_close(out.losses, T(sp(-0.3), tie, sp(1.0)))
    assert float(out.loss) == pytest.approx((sp(-0.3) + tie + sp(1.0)) / 3)
    assert out.num_ties == 1 and out.accuracy == pytest.approx(0.5)


def test_ties_rao_kupper():
    a = 0.7
    ties = torch.tensor([False, True, False])
    out = bradley_terry_loss(RC, RR, tie_mask=ties, tie_mode="rao_kupper", rao_kupper_log_theta=a)
    p_tie = 1 - sig(-1.0 - a) - sig(1.0 - a)
    torch.testing.assert_close(out.losses, T(sp(-(0.8 - a)), -math.log(p_tie), sp(-(-0.5 - a))))
    # the three Rao-Kupper outcomes are a distribution
    for d in (-2.0, 0.0, 0.3):
        assert sig(d - a) + sig(-d - a) + (1 - sig(d - a) - sig(-d - a)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="tie mode"):
        bradley_terry_loss(RC, RR, tie_mode="draw")


def test_weights():
    out = bradley_terry_loss(RC, RR, weights=T(2.0, 0.0, 1.0))
    assert float(out.loss) == pytest.approx((2 * sp(-0.8) + 0 + sp(0.5)) / 3)


def test_multi_head_masks_missing_attributes():
    c = T(1.0, 0.0, 2.0, -1.0).view(2, 2)
    r = T(0.0, 0.5, 1.0, 1.0).view(2, 2)
    v = torch.tensor([[VERDICT_CHOSEN, VERDICT_MISSING], [VERDICT_REJECTED, VERDICT_TIE]])
    out = multi_head_loss(c, r, v, tie_mode="skip")
    # present, non-tie entries: (0,0) Δ=1 won by chosen; (1,0) Δ=1 won by rejected
    e00, e10 = sp(-1.0), sp(1.0)
    assert float(out.loss) == pytest.approx((e00 + e10) / 2)
    assert out.counted.tolist() == [[True, False], [True, False]]
    assert float(out.head_losses[0]) == pytest.approx((e00 + e10) / 2) and math.isnan(float(out.head_losses[1]))
    assert float(out.head_accuracy[0]) == pytest.approx(0.5) and out.num_ties.tolist() == [0, 1]
    half = multi_head_loss(c, r, v, tie_mode="half")
    tie = 0.5 * (sp(2.0) + sp(-2.0))
    assert float(half.loss) == pytest.approx((e00 + e10 + tie) / 3)
    # a missing attribute gives its head no gradient at all
    cg = c.clone().requires_grad_()
    multi_head_loss(cg, r, v, tie_mode="half").loss.backward()
    assert float(cg.grad[0, 1]) == 0.0 and float(cg.grad[0, 0]) != 0.0
    weighted = multi_head_loss(c, r, v, tie_mode="half", head_weights=T(1.0, 3.0))
    assert float(weighted.loss) == pytest.approx((e00 + e10 + 3 * tie) / 5)
    with pytest.raises(ValueError, match="verdicts"):
        multi_head_loss(c, r, torch.tensor([[1, 5], [0, 0]]))


def test_scalarize_and_ensemble_stats():
    heads = T(1.0, 2.0, -1.0, 4.0).view(2, 2)
    torch.testing.assert_close(scalarize(heads, T(0.25, 0.75)), T(1.75, 2.75))
    members = T(1.0, 0.0, 3.0, 2.0, 5.0, 4.0).view(3, 2)  # (M=3, B=2)
    mean, std = ensemble_stats(members)
    torch.testing.assert_close(mean, T(3.0, 2.0))
    torch.testing.assert_close(std, T(statistics.pstdev([1, 3, 5]), statistics.pstdev([0, 2, 4])))
    _, sstd = ensemble_stats(members, unbiased=True)
    torch.testing.assert_close(sstd, T(statistics.stdev([1, 3, 5]), statistics.stdev([0, 2, 4])))
    _, one = ensemble_stats(members[:1])
    torch.testing.assert_close(one, T(0.0, 0.0))
