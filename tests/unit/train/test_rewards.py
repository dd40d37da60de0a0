"""Reward specs for online RL: parsing (weights, errors naming the bad part), user functions (None skips,
wrong lengths and non-finite values refused), the weighted sum, and the gold component equal to the
world's gold scorer."""

from __future__ import annotations

import math
import sys
import types

import pytest

from preftune.train.rewards import RewardMix, parse_reward_spec


def test_parse_weights_and_names():
    comps = parse_reward_spec("gold:2, rm:runs/rm:0.5,py:pkg.mod:fn")
    assert [(c.kind, c.arg, c.weight) for c in comps] == [
        ("gold", "", 2.0), ("rm", "runs/rm", 0.5), ("py", "pkg.mod:fn", 1.0)]
    assert [c.name for c in comps] == ["gold", "rm", "fn"]
    judge = parse_reward_spec("judge:llm:smollm2-135m")
    assert [(c.kind, c.arg) for c in judge] == [("judge", "llm:smollm2-135m")]


@pytest.mark.parametrize(("spec", "message"), [
    ("", "empty spec"),
    ("golden", "unknown component 'golden'"),
    ("rm", "'rm' does not read as rm:RUN[:w]"),
    ("py:mod", "'py:mod' does not read as py:module:function[:w]"),
    ("gold:x", "the weight 'x' is not a number"),
    ("gold:nan", "the weight must be finite"),
    ("judge", "needs a judge spec"),
    ("judge:gold,gold", "mixes with nothing else"),
])
def test_bad_specs_name_the_part(spec, message):
    with pytest.raises(ValueError, match="reward: ") as e:
        parse_reward_spec(spec)
    assert message in str(e.value)


@pytest.fixture
def user_module(monkeypatch):
    mod = types.ModuleType("user_rewards")
    mod.half = lambda prompts, completions, **cols: [0.5 * len(c) for c in completions]
    mod.skip_empty = lambda prompts, completions, **cols: [None if not c else 1.0 for c in completions]
    mod.short = lambda prompts, completions, **cols: [1.0]
    mod.inf = lambda prompts, completions, **cols: [math.inf for _ in completions]
    mod.boolean = lambda prompts, completions, **cols: [True for _ in completions]
    mod.columns = lambda prompts, completions, answer, **cols: [float(a == c) for a, c in zip(answer, completions)]
    mod.not_callable = 3
    monkeypatch.setitem(sys.modules, "user_rewards", mod)
    return mod


def test_weighted_sum_of_components(user_module):
    mix = RewardMix("py:user_rewards:half:2,py:user_rewards:skip_empty:-1")
    total, parts = mix.score(["p", "p"], ["abcd", "xy"])
    assert parts == {"half": [2.0, 1.0], "skip_empty": [1.0, 1.0]}
    assert total == [2 * 2.0 - 1.0, 2 * 1.0 - 1.0]


def test_none_skips_and_other_columns_are_passed(user_module):
    total, _ = RewardMix("py:user_rewards:skip_empty").score(["p", "p"], ["", "a"])
    assert math.isnan(total[0]) and total[1] == 1.0
    total, _ = RewardMix("py:user_rewards:columns").score(["p", "p"], ["7", "8"], {"answer": ["7", "9"]})
    assert total == [1.0, 0.0]


@pytest.mark.parametrize(("fn", "message"), [
    ("short", "returned 1 for 2 completions"),
    ("inf", "returned inf for completion 0: need a finite float or None"),
    ("boolean", "returned True for completion 0"),
])
def test_bad_user_values_are_refused(user_module, fn, message):
    with pytest.raises(ValueError, match=message):
        RewardMix(f"py:user_rewards:{fn}").score(["p", "p"], ["a", "b"])


def test_unimportable_or_uncallable_functions(user_module):
    with pytest.raises(ValueError, match="cannot import it"):
        RewardMix("py:no_such_module_xyz:f")
    with pytest.raises(ValueError, match="cannot import it"):
        RewardMix("py:user_rewards:missing")
    with pytest.raises(ValueError, match="is not a function"):
        RewardMix("py:user_rewards:not_callable")
    with pytest.raises(ValueError, match="pairwise"):
        RewardMix("judge:gold")


def test_gold_component_is_the_world_gold_total():
    from preftune.world import gold_score
    from preftune.world.generate import generate_world

    rows = generate_world(6, seed=3, num_test_pairs=0).train
    prompts = [r.prompt for r in rows]
    completions = [r.chosen[-1]["content"] for r in rows] + [r.rejected[-1]["content"] for r in rows]
    prompts = prompts + prompts
    total, parts = RewardMix("gold:3").score(prompts, completions)
    expected = [gold_score(p, c)["total"] for p, c in zip(prompts, completions)]
    assert parts["gold"] == pytest.approx(expected)
    assert total == pytest.approx([3 * e for e in expected])
    assert len(set(expected)) > 1  # the check can fail: the rows do not all score alike
