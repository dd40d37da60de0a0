"""Best-of-N on the synthetic world, with sampling drawn from each task's candidate pool (the good
response and its flawed variants): a faithful proxy raises the gold score with N; a proxy that
rewards length over-optimises, and the guard flags it. Same best_of_n code as the CLI."""

import random

import numpy as np

from preftune.eval.bon import best_of_n
from preftune.eval.judges import make_judge

NS = [1, 2, 4, 8]


class LengthProxy:
    """A deliberately bad reward model: longer is better."""
    name = "length"

    def score(self, prompts, responses):
        return np.array([len(r.split()) for r in responses], dtype=float)


def _world_sampler(num_prompts: int, seed: int = 0):
    from preftune.world.tasks import sample_task

    rng = random.Random(seed)
    tasks = {}
    while len(tasks) < num_prompts:
        t = sample_task(rng, "test")
        tasks[t.prompt] = t

    def sample(prompts):
        # a decent 'policy': the good response 60% of the time, else one of the task's flawed ones
        return [(tasks[p].good if rng.random() < 0.6 else rng.choice(list(tasks[p].flaws.values())))(rng)
                for p in prompts]
    return list(tasks), sample


def test_best_of_n_with_a_faithful_proxy_raises_gold():
    prompts, sample = _world_sampler(40)
    gold = make_judge("gold")
    r = best_of_n("pool", prompts, gold, gold, NS, sample_fn=sample)
    judge = [row["judge"] for row in r["curve"]]
    assert all(np.diff(judge) >= 0) and judge[1] > judge[0]  # rises at small N, then saturates at 1
    assert judge[-1] - judge[0] > 0.1
    assert not r["overoptimisation"]["flag"]["flagged"] and r["warnings"] == []


def test_best_of_n_with_a_length_proxy_is_flagged():
    prompts, sample = _world_sampler(40)
    r = best_of_n("pool", prompts, LengthProxy(), make_judge("gold"), NS, sample_fn=sample)
    proxy, judge = [row["proxy"] for row in r["curve"]], [row["judge"] for row in r["curve"]]
    assert all(np.diff(proxy) > 0) and judge[-1] < judge[0]
    flag = r["overoptimisation"]["flag"]
    assert flag["flagged"] and flag["x"] in NS and r["warnings"]
    assert r["length_bias"]["reward_length"]["spearman"] > 0.9  # the guard also names the cause
