"""KTO and BCO on unpaired rows: hand values with `math`, the reference point, pair splitting."""

import math

import pytest
import torch

from preftune.losses.preference import PairLossInputs, PreferenceLossParams, preference_loss
from preftune.losses.unpaired import (
    bco_loss,
    kto_loss,
    kto_reference_point,
    mismatched_index,
    split_pairs,
    update_running_mean,
)


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


T = lambda *v: torch.tensor(v, dtype=torch.float64)
POLICY, REF = T(-3.0, -5.0, -2.0), T(-4.0, -4.5, -2.0)  # r = 1.0, -0.5, 0.0
LABELS = torch.tensor([True, False, True])


def test_kto_hand_values_and_weights():
    beta, z0 = 0.5, 0.2
    out = kto_loss(POLICY, REF, LABELS, beta=beta, z0=z0, desirable_weight=1.5, undesirable_weight=0.8)
    want = [1.5 * (1 - sig(beta * (1.0 - z0))), 0.8 * (1 - sig(beta * (z0 + 0.5))), 1.5 * (1 - sig(beta * -z0))]
    torch.testing.assert_close(out.losses, T(*want))
    torch.testing.assert_close(out.rewards, T(0.5, -0.25, 0.0))
    # limit: policy == reference and z0 = 0 gives λ/2 on every row
    lim = kto_loss(REF, REF, LABELS, beta=beta, z0=0.0, desirable_weight=2.0, undesirable_weight=1.0)
    torch.testing.assert_close(lim.losses, T(1.0, 0.5, 1.0))


def test_kto_reference_point_is_clamped_and_detached():
    pol = T(-3.0, -6.0).requires_grad_()
    z0 = kto_reference_point(pol, T(-4.0, -6.5))
    assert float(z0) == pytest.approx(0.75) and not z0.requires_grad
    assert float(kto_reference_point(T(-5.0), T(-4.0))) == 0.0  # KL estimate < 0 is clamped
    assert float(kto_reference_point(T(-5.0), T(-4.0), clamp=False)) == -1.0  # for a cross-process mean
    # z0 carries no gradient into the loss: d/dπ only through r
    p = POLICY.clone().requires_grad_()
    kto_loss(p, REF, LABELS, beta=1.0, z0=kto_reference_point(p, REF)).losses.sum().backward()
    r = [1.0, -0.5, 0.0]
    z = 0.5 / 3  # mean of r, clamped at 0 -> 1/6
    want = [-sig(r[0] - z) * sig(-(r[0] - z)), sig(z - r[1]) * sig(-(z - r[1])), -sig(r[2] - z) * sig(z - r[2])]
    torch.testing.assert_close(p.grad, T(*want))


def test_mismatched_index_has_no_fixed_point():
    idx = mismatched_index(5)
    assert sorted(idx.tolist()) == list(range(5)) and all(i != j for i, j in enumerate(idx.tolist()))
    with pytest.raises(ValueError):
        mismatched_index(1)


def test_split_pairs_and_kto_on_pairs_agree():
    pc, pr, rc, rr = T(-3.0, -1.0), T(-5.0, -2.0), T(-4.0, -1.5), T(-4.5, -2.5)
    rows = split_pairs(pc, pr, rc, rr)
    assert rows.labels.tolist() == [True, True, False, False]
    torch.testing.assert_close(rows.policy_logps, T(-3.0, -1.0, -5.0, -2.0))
    unpaired = kto_loss(rows.policy_logps, rows.ref_logps, rows.labels, beta=0.3, z0=0.1)
    paired = preference_loss("kto", PairLossInputs(pc, pr, rc, rr, kto_z0=0.1), PreferenceLossParams(beta=0.3))
    assert float(paired.loss) == pytest.approx(float(unpaired.loss))


def test_bco_hand_values_and_running_mean():
    beta, delta = 0.5, 0.1
    out = bco_loss(POLICY, REF, LABELS, beta=beta, delta=delta)
    sp = lambda x: math.log1p(math.exp(x))
    torch.testing.assert_close(out.losses, T(sp(-(0.5 - delta)), sp(-0.25 - delta), sp(-(0.0 - delta))))
    mean, count = 0.0, 0
    chunks = [T(1.0, 2.0), T(), T(4.0, -1.0, 3.0)]
    for c in chunks:
        mean, count = update_running_mean(mean, count, c)
    assert count == 5 and mean == pytest.approx((1 + 2 + 4 - 1 + 3) / 5)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\(N,\)"):
        kto_loss(POLICY, REF[:2], LABELS, beta=0.1, z0=0.0)
