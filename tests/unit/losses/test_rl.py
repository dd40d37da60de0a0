"""Online RL math: advantages, clipped losses, GAE, value loss, KL estimators and controller,
truncation handling. Hand values are written out with their arithmetic; GAE is checked against a
plain Python loop; KL estimators against exact enumeration on two categorical distributions."""

import json
import math

import pytest
import torch

from preftune.losses.rl import (
    KLController,
    apply_truncation,
    clipped_value_loss,
    gae,
    grpo_advantages,
    kl_penalty,
    policy_loss,
    ppo_policy_loss,
    rloo_advantages,
    sequence_rewards_with_kl,
    tied_groups,
    token_rewards_with_kl,
)

T = lambda *v: torch.tensor(v, dtype=torch.float64)
NAN = float("nan")
# three groups of G = 3: a signal group, an all-tie group, a group with one unscored (NaN) sample
REWARDS = T(1.0, 0.0, 0.0, 2.0, 2.0, 2.0, 3.0, NAN, 1.0)


# ---------------------------------------------------------------- advantages

def test_grpo_group_scaling_hand_values():
    out = grpo_advantages(REWARDS, 3, eps=0.0)
    # group 1: mean 1/3, deviations (2/3, -1/3, -1/3), unbiased var (4/9 + 1/9 + 1/9) / 2 = 1/3
    s1 = math.sqrt(1 / 3)
    # group 3: scored (3, 1), mean 2, unbiased var (1 + 1) / 1 = 2; the NaN sample gets 0
    s3 = math.sqrt(2)
    want = [2 / 3 / s1, -1 / 3 / s1, -1 / 3 / s1, 0, 0, 0, 1 / s3, 0, -1 / s3]
    torch.testing.assert_close(out.advantages, T(*want))
    assert out.tied.tolist() == [False, True, False] and out.num_tied == 1
    # default eps = 1e-4 is added to the std (TRL's convention)
    torch.testing.assert_close(grpo_advantages(REWARDS, 3).advantages[0], T(2 / 3 / (s1 + 1e-4))[0])


def test_grpo_batch_and_none_scaling_hand_values():
    # batch std over the 8 scored rewards (1,0,0,2,2,2,3,1): mean 11/8; squared deviations
    # .140625 + 1.890625*2 + .390625*3 + 2.640625 + .140625 = 7.875; unbiased var 7.875 / 7 = 1.125
    sb = math.sqrt(1.125)
    dev = [2 / 3, -1 / 3, -1 / 3, 0, 0, 0, 1, 0, -1]  # minus the *group* mean
    out = grpo_advantages(REWARDS, 3, scale_rewards="batch", eps=0.0)
    torch.testing.assert_close(out.advantages, T(*[d / sb for d in dev]))
    # none (Dr. GRPO): only the group mean is subtracted
    torch.testing.assert_close(grpo_advantages(REWARDS, 3, scale_rewards="none").advantages, T(*dev))


def test_rloo_leave_one_out_hand_values_and_identity():
    out = rloo_advantages(REWARDS, 3)
    # group 1: 1 - (0+0)/2 = 1; 0 - (1+0)/2 = -0.5 (twice). group 3 (k = 2 scored): 3 - 1 = 2, 1 - 3 = -2
    torch.testing.assert_close(out.advantages, T(1.0, -0.5, -0.5, 0, 0, 0, 2.0, 0, -2.0))
    # RLOO = k/(k-1) (r - mean) on a full group (Kool et al. 2019)
    r = torch.randn(20, dtype=torch.float64)
    g = r.view(5, 4)
    torch.testing.assert_close(rloo_advantages(r, 4).advantages.view(5, 4), 4 / 3 * (g - g.mean(1, keepdim=True)))
    # a group with a single scored sample has no baseline: advantage 0, counted as tied
    single = rloo_advantages(T(NAN, 5.0, NAN), 3)
    assert single.advantages.tolist() == [0, 0, 0] and single.num_tied == 1
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(T(1.0, 2.0), 1)


def test_tied_groups_exact_and_with_tolerance():
    r = T(1.0, 1.0 + 1e-7, 1.0, 0.0, 1.0, 0.0)
    assert tied_groups(r, 3).tolist() == [False, False]
    assert tied_groups(r, 3, atol=1e-6).tolist() == [True, False]
    assert tied_groups(T(NAN, NAN, 4.0, 4.0), 2).tolist() == [True, True]
    with pytest.raises(ValueError, match="groups of 4"):
        tied_groups(T(1.0, 2.0, 3.0), 4)


# ---------------------------------------------------------------- clipped policy losses

def _clip_case():
    # ratios row 0: (1.5, 0.7, 1.0), A = +1; row 1: (1.1, 0.5, pad), A = -2; eps_low 0.2, eps_high 0.28
    ratio = torch.tensor([[1.5, 0.7, 1.0], [1.1, 0.5, 3.0]], dtype=torch.float64)  # 3.0 is padding
    old = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -4.0]], dtype=torch.float64)
    logps = (old + ratio.log()).requires_grad_()
    mask = torch.tensor([[True, True, True], [True, True, False]])
    return logps, old, T(1.0, -2.0), mask


def test_policy_loss_types_hand_values():
    logps, old, adv, mask = _clip_case()
    # per-token l = -min(ρA, clip(ρ, 0.8, 1.28)A):
    # row 0: ρ 1.5 -> -min(1.5, 1.28) = -1.28 (high clip binds); 0.7 -> -min(0.7, 0.8) = -0.7; 1.0 -> -1.0
    # row 1: ρ 1.1 -> -min(-2.2, -2.2) = 2.2; 0.5 -> -min(-1.0, -1.6) = 1.6 (low clip binds)
    row0, row1 = -1.28 - 0.7 - 1.0, 2.2 + 1.6  # -2.98, 3.8
    kw = {"eps_low": 0.2, "eps_high": 0.28}
    grpo = policy_loss(logps, old, adv, mask, loss_type="grpo", **kw)
    assert float(grpo.loss.detach()) == pytest.approx((row0 / 3 + row1 / 2) / 2)  # 0.453333
    dapo = policy_loss(logps, old, adv, mask, loss_type="dapo", **kw)
    assert float(dapo.loss.detach()) == pytest.approx((row0 + row1) / 5)  # 0.164
    dr = policy_loss(logps, old, adv, mask, loss_type="dr_grpo", max_completion_length=4, **kw)
    assert float(dr.loss.detach()) == pytest.approx((row0 + row1) / (2 * 4))  # 0.1025
    # clip fractions over the 5 real tokens: one low, one high
    assert (float(grpo.clip_low), float(grpo.clip_high), float(grpo.clip_region)) == pytest.approx((0.2, 0.2, 0.4))
    # gradients: clipped tokens and padding get 0; d(-ρA)/d logp = -ρA, then /|o_i| and /N
    grpo.loss.backward()
    want = torch.tensor([[0.0, -0.7 / 3 / 2, -1.0 / 3 / 2], [2.2 / 2 / 2, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(logps.grad, want)
    with pytest.raises(ValueError, match="max_completion_length"):
        policy_loss(logps, old, adv, mask, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="unknown PolicyLossType"):
        policy_loss(logps, old, adv, mask, loss_type="ppo2")


def test_policy_loss_kl_term_and_normalizer():
    logps, old, adv, mask = _clip_case()
    kl = torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 99.0]], dtype=torch.float64)
    base = policy_loss(logps, old, adv, mask, eps_high=0.28)
    with_kl = policy_loss(logps, old, adv, mask, eps_high=0.28, per_token_kl=kl, kl_coef=0.1)
    # grpo adds 0.1 * mean over rows of the per-row token mean of KL: 0.1 * (1 + 2) / 2
    assert float((with_kl.loss - base.loss).detach()) == pytest.approx(0.15)
    assert float(with_kl.kl) == pytest.approx((3 * 1 + 2 * 2) / 5) and float(base.kl) == 0.0
    # an explicit normaliser replaces the default
    dapo10 = policy_loss(logps, old, adv, mask, loss_type="dapo", eps_high=0.28, normalizer=10)
    assert float(dapo10.loss.detach()) == pytest.approx((-2.98 + 3.8) / 10)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_micro_batches_with_global_normalizer_sum_to_full_batch(loss_type):
    g = torch.Generator().manual_seed(0)
    N, L = 6, 5
    old = -torch.rand(N, L, generator=g, dtype=torch.float64) * 3
    logps = old + 0.3 * torch.randn(N, L, generator=g, dtype=torch.float64)
    adv = torch.randn(N, generator=g, dtype=torch.float64)
    lengths = torch.tensor([5, 1, 3, 4, 2, 5])
    mask = torch.arange(L)[None] < lengths[:, None]
    full = policy_loss(logps, old, adv, mask, loss_type=loss_type, max_completion_length=L).loss
    norm = {"grpo": N, "dapo": int(mask.sum()), "dr_grpo": N * L}[loss_type]
    parts = sum(policy_loss(logps[s], old[s], adv[s], mask[s], loss_type=loss_type, normalizer=norm).loss
                for s in (slice(0, 2), slice(2, 6)))
    torch.testing.assert_close(parts, full)


def test_ppo_policy_loss_is_the_symmetric_token_mean_clip():
    old = torch.zeros(1, 2, dtype=torch.float64)
    logps = torch.log(T(1.5, 0.9))[None]
    adv = T(1.0, -1.0)[None]  # per-token advantages
    out = ppo_policy_loss(logps, old, adv, torch.ones(1, 2, dtype=torch.bool), clip_range=0.2)
    # token 0: -min(1.5, 1.2) = -1.2 (high clip); token 1: -min(-0.9, -0.9) = 0.9; mean -0.15
    assert float(out.loss.detach()) == pytest.approx(-0.15)
    assert (float(out.clip_high), float(out.clip_low)) == pytest.approx((0.5, 0.0))


# ---------------------------------------------------------------- GAE and the value loss

def _gae_oracle(r, v, m, gamma, lam):
    """Plain loop per row over its real tokens only; V = 0 after the last one."""
    adv = [[0.0] * len(r[0]) for _ in r]
    for i in range(len(r)):
        idx = [t for t in range(len(r[i])) if m[i][t]]
        a = 0.0
        for k in reversed(range(len(idx))):
            t = idx[k]
            next_v = v[i][idx[k + 1]] if k + 1 < len(idx) else 0.0
            a = r[i][t] + gamma * next_v - v[i][t] + gamma * lam * a
            adv[i][t] = a
    return adv


def test_gae_hand_values():
    out = gae(T(0.0, 1.0)[None], T(0.5, 0.2)[None], torch.ones(1, 2, dtype=torch.bool), gamma=1.0, lam=0.9,
              whiten=False)
    # t=1: δ = 1 + 0 - 0.2 = 0.8 -> A = 0.8; t=0: δ = 0 + 0.2 - 0.5 = -0.3 -> A = -0.3 + 0.9 * 0.8 = 0.42
    torch.testing.assert_close(out.advantages, T(0.42, 0.8)[None])
    torch.testing.assert_close(out.returns, T(0.92, 1.0)[None])


@pytest.mark.parametrize("mask_kind", ["full", "right_padded", "holes", "with_empty_row"])
@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.5), (0.99, 1.0)])
def test_gae_equals_loop_oracle(mask_kind, gamma, lam):
    g = torch.Generator().manual_seed(hash((mask_kind, gamma, lam)) % 2**31)
    N, L = 5, 7
    r = torch.randn(N, L, generator=g, dtype=torch.float64)
    v = torch.randn(N, L, generator=g, dtype=torch.float64)
    if mask_kind == "full":
        mask = torch.ones(N, L, dtype=torch.bool)
    elif mask_kind == "right_padded":
        mask = torch.arange(L)[None] < torch.tensor([7, 1, 4, 6, 2])[:, None]
    elif mask_kind == "holes":
        mask = torch.rand(N, L, generator=g) < 0.6
    else:
        mask = torch.arange(L)[None] < torch.tensor([3, 0, 7, 5, 0])[:, None]
    out = gae(r, v, mask, gamma=gamma, lam=lam, whiten=False)
    want = torch.tensor(_gae_oracle(r.tolist(), v.tolist(), mask.tolist(), gamma, lam), dtype=torch.float64)
    torch.testing.assert_close(out.advantages, want)
    torch.testing.assert_close(out.returns, (want + v) * mask)
    white = gae(r, v, mask, gamma=gamma, lam=lam).advantages
    sel = white[mask]
    assert float(sel.mean()) == pytest.approx(0.0, abs=1e-9)
    assert float(sel.std()) == pytest.approx(1.0, abs=1e-6)  # unbiased std over the real tokens
    assert bool((white[~mask] == 0).all())


def test_clipped_value_loss_hand_values():
    v = T(1.0, 0.0)[None].requires_grad_()
    out = clipped_value_loss(v, T(0.5, 0.1)[None], T(2.0, 0.0)[None], torch.ones(1, 2, dtype=torch.bool),
                             clip_range=0.2)
    # token 0: (1 - 2)^2 = 1 vs (0.5 + 0.2 - 2)^2 = 1.69 -> 1.69 (clipped wins)
    # token 1: (0 - 0)^2 = 0 vs (0.1 - 0.1 - 0)^2 = 0 -> 0 (tie: not counted as clipped)
    assert float(out.loss.detach()) == pytest.approx(0.5 * (1.69 + 0) / 2)
    assert float(out.clip_fraction) == pytest.approx(0.5)
    out.loss.backward()
    # the clipped branch has no gradient (V is clamped); token 1 picks the unclipped branch: d/dV = (V - R)/2 = 0
    torch.testing.assert_close(v.grad, T(0.0, 0.0)[None])


# ---------------------------------------------------------------- KL estimators

P, Q = T(0.5, 0.3, 0.2), T(0.2, 0.3, 0.5)  # policy p, reference q


def test_kl_estimators_expectations_by_enumeration():
    exact = float((P * (P / Q).log()).sum())  # 0.5 ln 2.5 + 0.2 ln 0.4 = 0.2749...
    assert exact == pytest.approx(0.5 * math.log(2.5) + 0.2 * math.log(0.4))
    expect = {k: float((P * kl_penalty(P.log(), Q.log(), k)).sum()) for k in ("k1", "k2", "k3")}
    assert expect["k1"] == pytest.approx(exact) and expect["k3"] == pytest.approx(exact)
    # k2 is biased: E[(ln p/q)^2]/2 = (0.5 ln^2 2.5 + 0.2 ln^2 0.4) / 2 = 0.2939, not the KL 0.2749
    k2 = (0.5 * math.log(2.5) ** 2 + 0.2 * math.log(0.4) ** 2) / 2
    assert expect["k2"] == pytest.approx(k2) and abs(k2 - exact) > 0.015
    per_sample_k1, per_sample_k3 = kl_penalty(P.log(), Q.log(), "k1"), kl_penalty(P.log(), Q.log(), "k3")
    assert float(per_sample_k1.min()) < 0 and float(per_sample_k3.min()) >= 0


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_k1_k3_unbiased_by_large_sample_mean(estimator):
    n = 200_000
    x = torch.multinomial(P, n, replacement=True, generator=torch.Generator().manual_seed(1))
    k = kl_penalty(P.log(), Q.log(), estimator)  # value per outcome
    exact = float((P * (P / Q).log()).sum())
    var = float((P * (k - exact) ** 2).sum())  # exact variance of one sample
    # 5 standard errors of the mean: a false failure has probability ~6e-7
    assert abs(float(k[x].mean()) - exact) < 5 * math.sqrt(var / n)


def test_kl_in_the_loss_expected_gradients():
    theta = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64, requires_grad=True)
    logq = Q.log()

    def expected_grad(estimator):
        logp = torch.log_softmax(theta, 0)
        (g,) = torch.autograd.grad((logp.exp().detach() * kl_penalty(logp, logq, estimator)).sum(), theta)
        return g

    logp = torch.log_softmax(theta, 0)
    (true,) = torch.autograd.grad((logp.exp() * (logp - logq)).sum(), theta)
    torch.testing.assert_close(expected_grad("k1"), torch.zeros(3, dtype=torch.float64))  # E[∇ log p] = 0
    torch.testing.assert_close(expected_grad("k2"), true)  # E[(log p/q) ∇ log p] = ∇ KL


def test_kl_in_the_reward_token_and_sequence_forms():
    scores = T(1.0, 2.0, 3.0)
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 9.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, True, False], [False, False, False]])
    tok = token_rewards_with_kl(scores, kl, mask, kl_coef=0.5)
    # row 0: -0.5 * KL, score on the last token; row 1: last real token is t=1; row 2: no token, nothing
    want = torch.tensor([[-0.05, -0.1, -0.15 + 1.0], [-0.25, -0.25 + 2.0, 0.0], [0.0, 0.0, 0.0]],
                        dtype=torch.float64)
    torch.testing.assert_close(tok, want)
    seq = sequence_rewards_with_kl(scores, kl, mask, kl_coef=0.5)
    torch.testing.assert_close(seq, T(1.0 - 0.3, 2.0 - 0.5, 3.0))
    torch.testing.assert_close(tok.sum(1)[:2], seq[:2])


def test_adaptive_kl_controller_hand_sequence_and_resume():
    c = KLController(0.1, target=6.0, horizon=10000)
    b = 0.1
    # KL 9: error 9/6 - 1 = 0.5, clipped to 0.2: β *= 1 + 0.2 * 256 / 10000 = 1.00512
    b *= 1.00512
    assert c.update(9.0, 256) == pytest.approx(b)
    assert c.update(6.0, 256) == pytest.approx(b)  # on target: unchanged
    b *= 1 - 0.2 * 256 / 10000  # KL 3: error -0.5 -> -0.2
    assert c.update(3.0, 256) == pytest.approx(b)
    b *= 1 - 0.1 * 512 / 10000  # KL 5.4: error 0.9 - 1 = -0.1 (inside the clip), n = 512
    assert c.update(5.4, 512) == pytest.approx(b)
    state = json.loads(json.dumps(c.state_dict()))
    resumed = KLController(0.1, target=6.0, horizon=10000)
    resumed.load_state_dict(state)
    assert resumed.update(7.0, 64) == c.update(7.0, 64)
    with pytest.raises(ValueError, match="does not match"):
        KLController(0.1, target=3.0).load_state_dict(state)
    fixed = KLController(0.05)
    assert fixed.update(100.0, 256) == 0.05


# ---------------------------------------------------------------- truncated completions

def test_truncated_completions_masked_or_penalised():
    rewards = T(1.0, 0.5, 0.0)
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    truncated = torch.tensor([True, False, False])
    r, m = apply_truncation("mask", rewards, mask, truncated)
    assert torch.equal(r, rewards) and m.tolist() == [[False, False], [True, False], [True, True]]
    r, m = apply_truncation("penalty", rewards, mask, truncated, penalty=1.0)
    torch.testing.assert_close(r, T(0.0, 0.5, 0.0))
    assert torch.equal(m, mask)
    r, m = apply_truncation("none", rewards, mask, truncated)
    assert torch.equal(r, rewards) and torch.equal(m, mask)
    # a masked completion gets neither loss nor gradient
    logps = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    _, m = apply_truncation("mask", rewards, mask, truncated)
    policy_loss(logps, logps.detach(), T(5.0, 1.0, -1.0), m).loss.backward()
    assert logps.grad[0].tolist() == [0.0, 0.0] and float(logps.grad[1, 0]) != 0
    with pytest.raises(ValueError, match="unknown TruncationMode"):
        apply_truncation("drop", rewards, mask, truncated)
