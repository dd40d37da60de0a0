"""DPO-family losses: hand-computed values (plain `math`), limit cases, options and errors."""

import dataclasses
import math

import pytest
import torch

from preftune.losses.preference import (
    LossMix,
    LossType,
    PairLossInputs,
    PreferenceLossParams,
    mixed_preference_loss,
    preference_loss,
)

_PARAMS = {f.name for f in dataclasses.fields(PreferenceLossParams)}


def _split(args, kw):
    params = PreferenceLossParams(**{k: kw.pop(k) for k in list(kw) if k in _PARAMS})
    return PairLossInputs(*args, **kw), params


def PL(lt, *args, **kw):
    """preference_loss with the equation-level arguments (the dataclasses built here)."""
    return preference_loss(lt, *_split(args, kw))


def ML(mix, *args, **kw):
    return mixed_preference_loss(mix, *_split(args, kw))


def sp(x: float) -> float:  # softplus: -log σ(-x)
    return math.log1p(math.exp(x))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


T = lambda *v: torch.tensor(v, dtype=torch.float64)
# One pair: h_c = -10 - (-11) = 1, h_r = -12 - (-11.5) = -0.5, Δ = 1.5; β = 0.5 so z = 0.75.
PC, PR, RC, RR = T(-10.0), T(-12.0), T(-11.0), T(-11.5)
LC, LR = T(2.0), T(4.0)
BETA = 0.5
Z = 0.75


def one(lt, *args, **kw):
    args = args or (PC, PR, RC, RR)
    return float(PL(lt, *args, beta=kw.pop("beta", BETA), **kw).losses[0])


HAND = [
    ("sigmoid", {}, sp(-Z)),
    ("sigmoid", {"label_smoothing": 0.1}, 0.9 * sp(-Z) + 0.1 * sp(Z)),
    ("ipo", {"ipo_normalize_length": False}, (1.5 - 1.0) ** 2),
    ("ipo", {"chosen_lengths": LC, "rejected_lengths": LR}, (1 / 2 + 0.5 / 4 - 1.0) ** 2),
    ("hinge", {}, 1 - Z),
    ("robust", {"label_smoothing": 0.2}, (0.8 * sp(-Z) - 0.2 * sp(Z)) / 0.6),
    ("sigmoid_norm", {"chosen_lengths": LC, "rejected_lengths": LR}, sp(-BETA * (1 / 2 + 0.5 / 4))),
    ("bco_pair", {}, sp(-0.5) + sp(-0.25)),
    ("apo_zero", {}, 1 - sig(0.5) + sig(-0.25)),
    ("apo_down", {}, sig(0.5) + 1 - sig(Z)),
    ("sppo_hard", {}, (1 - 1 / (2 * BETA)) ** 2 + (-0.5 + 1 / (2 * BETA)) ** 2),
    ("nca_pair", {}, sp(-0.5) + 0.5 * sp(0.5) + 0.5 * sp(-0.25)),
    ("exo_pair", {"label_smoothing": 1e-3},
     sig(Z) * (math.log(sig(Z)) - math.log(1 - 1e-3)) + sig(-Z) * (math.log(sig(-Z)) - math.log(1e-3))),
    ("discopop", {"discopop_tau": 0.05}, (1 - sig(Z / 0.05)) * sp(-Z) + sig(Z / 0.05) * math.exp(-Z)),
    ("sft", {"chosen_nll": T(2.5)}, 2.5),
    ("kto", {"kto_z0": 0.2}, 0.5 * ((1 - sig(BETA * (1 - 0.2))) + (1 - sig(BETA * (0.2 + 0.5))))),
]


@pytest.mark.parametrize("name,kw,expected", HAND, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(HAND)])
def test_hand_computed(name, kw, expected):
    assert one(name, **kw) == pytest.approx(expected, rel=1e-10)


def test_simpo_and_orpo_hand_computed_without_reference():
    # average log-probs: chosen -10/2 = -5, rejected -12/4 = -3
    simpo = one("simpo", PC, PR, chosen_lengths=LC, rejected_lengths=LR, simpo_gamma=0.5)
    assert simpo == pytest.approx(sp(-(BETA * (-5 + 3) - 0.5)))
    log_odds = (-5 - math.log(1 - math.exp(-5))) - (-3 - math.log(1 - math.exp(-3)))
    orpo = one("orpo", PC, PR, chosen_lengths=LC, rejected_lengths=LR, chosen_nll=T(1.25))
    assert orpo == pytest.approx(1.25 + BETA * sp(-log_odds))
    # a reference, when given, is ignored by reference-free losses
    assert one("simpo", PC, PR, RC, RR, chosen_lengths=LC, rejected_lengths=LR) == pytest.approx(simpo)


def test_limit_policy_equals_reference():
    x = T(-3.0, -7.0, -1.5)
    eps, beta, n = 0.2, 0.1, torch.full((3,), 5.0, dtype=torch.float64)

    def f(lt, **kw):
        return PL(lt, x, x + 1, x, x + 1, beta=beta, **kw).losses

    torch.testing.assert_close(f("sigmoid"), torch.full_like(x, math.log(2)))
    torch.testing.assert_close(f("sigmoid", label_smoothing=eps), torch.full_like(x, math.log(2)))
    torch.testing.assert_close(f("robust", label_smoothing=eps), torch.full_like(x, math.log(2)))
    torch.testing.assert_close(f("ipo", chosen_lengths=n, rejected_lengths=n), torch.full_like(x, 1 / (4 * beta**2)))
    torch.testing.assert_close(f("hinge"), torch.ones_like(x))
    torch.testing.assert_close(f("sppo_hard"), torch.full_like(x, 1 / (2 * beta**2)))
    torch.testing.assert_close(f("nca_pair"), torch.full_like(x, 2 * math.log(2)))
    torch.testing.assert_close(f("bco_pair"), torch.full_like(x, 2 * math.log(2)))
    torch.testing.assert_close(f("apo_zero"), torch.ones_like(x))
    torch.testing.assert_close(f("apo_down"), torch.ones_like(x))
    torch.testing.assert_close(f("discopop"), torch.full_like(x, 0.5 * math.log(2) + 0.5))
    exo = 0.5 * (math.log(0.5) - math.log(1 - eps)) + 0.5 * (math.log(0.5) - math.log(eps))
    torch.testing.assert_close(f("exo_pair", label_smoothing=eps), torch.full_like(x, exo))
    torch.testing.assert_close(f("kto", kto_z0=0.0, desirable_weight=1.0, undesirable_weight=3.0),
                               torch.full_like(x, 0.5 * (0.5 + 1.5)))


def test_smoothing_zero_equals_dpo_and_robust_zero_equals_dpo():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(16, generator=g, dtype=torch.float64) * 3 for _ in range(4))
    dpo = PL("sigmoid", pc, pr, rc, rr, beta=0.3).losses
    torch.testing.assert_close(PL("cdpo", pc, pr, rc, rr, beta=0.3, label_smoothing=0.0).losses, dpo)
    torch.testing.assert_close(PL("robust", pc, pr, rc, rr, beta=0.3, label_smoothing=0.0).losses, dpo)
    one_conf = torch.ones(16, dtype=torch.float64)
    torch.testing.assert_close(PL("sigmoid", pc, pr, rc, rr, beta=0.3, confidence=one_conf).losses, dpo)
    # equal lengths: length-normalised DPO with β·L equals DPO with β
    n = torch.full((16,), 4.0, dtype=torch.float64)
    norm = PL("sigmoid_norm", pc, pr, rc, rr, beta=1.2, chosen_lengths=n, rejected_lengths=n).losses
    torch.testing.assert_close(norm, dpo)


def test_dpo_gradient_matches_closed_form():
    # d/dπ_c of -log σ(βΔ) = -β σ(-βΔ) < 0: raising the chosen log-prob always lowers the loss.
    pc = T(-4.0, -9.0, -2.0).requires_grad_()
    pr, rc, rr = T(-5.0, -3.0, -2.0), T(-4.5, -8.0, -1.0), T(-5.0, -4.0, -2.0)
    beta = 0.7
    PL("sigmoid", pc, pr, rc, rr, beta=beta).losses.sum().backward()
    z = beta * ((pc - rc) - (pr - rr)).detach()
    torch.testing.assert_close(pc.grad, -beta * torch.sigmoid(-z))
    assert bool((pc.grad < 0).all())


def test_margin_confidence_weights():
    m = T(0.3)
    assert one("sigmoid", margin=m) == pytest.approx(sp(-(Z - 0.3)))
    assert one("hinge", margin=0.3) == pytest.approx(1 - (Z - 0.3))
    assert one("sigmoid", confidence=T(0.7)) == pytest.approx(0.7 * sp(-Z) + 0.3 * sp(Z))
    # confidence and smoothing compose: p = c(1 - ε) + (1 - c)ε
    p = 0.7 * 0.9 + 0.3 * 0.1
    assert one("sigmoid", confidence=T(0.7), label_smoothing=0.1) == pytest.approx(p * sp(-Z) + (1 - p) * sp(Z))
    assert one("ipo", ipo_normalize_length=False, weights=T(3.0)) == pytest.approx(3 * 0.25)
    with pytest.raises(ValueError, match="takes no margin"):
        one("ipo", ipo_normalize_length=False, margin=m)
    with pytest.raises(ValueError, match="confidence"):
        one("hinge", confidence=T(0.7))


def test_rewards_are_beta_times_log_ratio():
    out = PL("sigmoid", PC, PR, RC, RR, beta=BETA)
    assert float(out.chosen_rewards[0]) == pytest.approx(0.5)
    assert float(out.rejected_rewards[0]) == pytest.approx(-0.25)
    assert not out.chosen_rewards.requires_grad


def test_errors():
    with pytest.raises(ValueError, match="needs ref_chosen_logps"):
        PL("ipo", PC, PR, beta=0.1, ipo_normalize_length=False)
    with pytest.raises(ValueError, match="needs chosen_lengths"):
        PL("ipo", PC, PR, RC, RR, beta=0.1)
    with pytest.raises(ValueError, match="needs chosen_lengths"):
        PL("simpo", PC, PR, beta=0.1)
    with pytest.raises(ValueError, match="chosen_nll"):
        PL("orpo", PC, PR, beta=0.1, chosen_lengths=LC, rejected_lengths=LR)
    with pytest.raises(ValueError, match=r"unknown loss 'dpoo'.*sigmoid.*ipo.*simpo"):
        LossType.from_name("dpoo")
    with pytest.raises(ValueError, match="0.5"):
        PL("robust", PC, PR, RC, RR, beta=0.1, label_smoothing=0.5)
    with pytest.raises(ValueError, match="exo_pair"):
        PL("exo_pair", PC, PR, RC, RR, beta=0.1)
    with pytest.raises(ValueError, match="kto_z0"):
        PL("kto", PC, PR, RC, RR, beta=0.1)
    with pytest.raises(ValueError, match="shape"):
        PL("sigmoid", PC, T(1.0, 2.0), RC, RR, beta=0.1)


def test_enum_properties_and_aliases():
    assert LossType.IPO.needs_reference and not LossType.SIMPO.needs_reference
    assert not LossType.ORPO.needs_reference and LossType.SIGMOID.paired and not LossType.KTO.paired
    assert LossType.from_name("DPO") is LossType.SIGMOID
    assert LossType.from_name("apo-zero") is LossType.APO_ZERO


def test_loss_mix_rpo_and_parse():
    nll = T(2.0)
    mix = LossMix.parse("sigmoid:1.0,ipo:0.5,sft:0.2")
    assert mix.terms == ((LossType.SIGMOID, 1.0), (LossType.IPO, 0.5)) and mix.sft_weight == 0.2
    # the row margin and smoothing go to sigmoid only; IPO would refuse them
    out = ML(mix, PC, PR, RC, RR, beta=BETA, chosen_nll=nll, margin=T(0.3),
                                label_smoothing=0.1, ipo_normalize_length=False)
    zm = Z - 0.3
    expected = (0.9 * sp(-zm) + 0.1 * sp(zm)) + 0.5 * 0.25 + 0.2 * 2.0
    assert float(out.losses[0]) == pytest.approx(expected)
    rpo = ML(LossMix(((LossType.SIGMOID, 1.0),), sft_weight=1.0), PC, PR, RC, RR,
                                beta=BETA, chosen_nll=nll)
    assert float(rpo.loss) == pytest.approx(sp(-Z) + 2.0)
    assert LossMix.parse("simpo").needs_reference is False and LossMix.parse("kto").paired is False
    with pytest.raises(ValueError, match="bad weight"):
        LossMix.parse("sigmoid:x")


def test_trl_conventions_match_independent_formulas():
    """TRL 1.x DPOTrainer formulas (see docs/paper_index.md), typed out here independently:
    sigmoid -logσ(βΔ); hinge relu(1-βΔ); robust ((1-ε)(-logσ(βΔ)) + ε logσ(-βΔ))/(1-2ε);
    ipo ((h_c/n_c - h_r/n_r) - 1/(2β))^2 with n clamped at 1."""
    g = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (torch.randn(8, generator=g, dtype=torch.float64) * 5 - 20 for _ in range(4))
    nc, nr = torch.randint(0, 30, (8,), generator=g).double(), torch.randint(1, 30, (8,), generator=g).double()
    beta, eps = 0.1, 0.1
    d = (pc - rc) - (pr - rr)
    ls = torch.nn.functional.logsigmoid
    cases = {
        "sigmoid": ({}, -ls(beta * d)),
        "hinge": ({}, torch.relu(1 - beta * d)),
        "robust": ({"label_smoothing": eps}, ((1 - eps) * -ls(beta * d) + eps * ls(-beta * d)) / (1 - 2 * eps)),
        "ipo": ({"chosen_lengths": nc, "rejected_lengths": nr},
                ((pc - rc) / nc.clamp(min=1) - (pr - rr) / nr.clamp(min=1) - 1 / (2 * beta)) ** 2),
    }
    for name, (kw, want) in cases.items():
        got = PL(name, pc, pr, rc, rr, beta=beta, **kw).losses
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10, msg=name)


def test_extreme_logits_stay_finite():
    pc = torch.tensor([-500.0, 0.0, -1e-9], requires_grad=True)
    pr, n = torch.tensor([0.0, -500.0, -1e-9]), torch.ones(3)
    for name, kw in [("discopop", {}), ("sigmoid", {}), ("orpo", {"chosen_nll": -pc.detach()}),
                     ("simpo", {})]:
        kw = {**kw, "chosen_lengths": n, "rejected_lengths": n} if name in ("orpo", "simpo") else kw
        ref = () if name in ("orpo", "simpo") else (torch.zeros(3), torch.zeros(3))
        out = PL(name, pc, pr, *ref, beta=1.0, **kw)
        (grad,) = torch.autograd.grad(out.loss, pc)
        assert bool(torch.isfinite(out.losses).all()) and bool(torch.isfinite(grad).all()), name
