"""preftune.data.split: no prompt in both splits, deterministic, fraction honoured."""

import random

import pytest

from preftune.data.curate import prompt_key
from preftune.data.records import PairRecord
from preftune.data.split import split_keys, split_records


def pair(prompt, i=0):
    return PairRecord(id=str(i), prompt=[{"role": "user", "content": prompt}],
                      chosen=[{"role": "assistant", "content": f"good {i}"}],
                      rejected=[{"role": "assistant", "content": f"bad {i}"}])


def _rows(n=1000, seed=0):
    rng = random.Random(seed)
    recs, i = [], 0
    while len(recs) < n:
        p = f"Prompt number {i}"
        for k in range(rng.randint(1, 4)):  # groups of 1-4 rows; case/space variants of one prompt
            recs.append(pair(p.upper() if k % 2 else p + "  ", len(recs)))
        i += 1
    return recs[:n]


@pytest.mark.parametrize("frac", [0.1, 0.2, 0.5])
def test_no_prompt_overlap_and_fraction_on_1000_rows(frac):
    recs = _rows()
    train, test = split_records(recs, frac, seed=3)
    assert len(train) + len(test) == 1000
    assert not ({prompt_key(r) for r in train} & {prompt_key(r) for r in test})
    # greedy group assignment: within half the largest group (4 rows) of the target
    assert abs(len(test) - frac * 1000) <= 2


def test_deterministic_for_a_seed_and_independent_of_row_order():
    recs = _rows(400)
    a = split_records(recs, 0.25, seed=7)
    b = split_records(recs, 0.25, seed=7)
    assert [r.id for r in a[1]] == [r.id for r in b[1]]
    shuffled = recs[:]
    random.Random(1).shuffle(shuffled)
    c = split_records(shuffled, 0.25, seed=7)
    assert {r.id for r in c[1]} == {r.id for r in a[1]}
    d = split_records(recs, 0.25, seed=8)
    assert {r.id for r in d[1]} != {r.id for r in a[1]}


def test_split_keys_counts_prompts_and_keeps_input_order():
    res = split_keys(["a", "b", "a", "c", "b", "d"], 0.5, seed=0)
    assert sorted(res.train_indices + res.test_indices) == list(range(6))
    assert res.train_indices == sorted(res.train_indices) and res.test_indices == sorted(res.test_indices)
    assert res.num_train_prompts + res.num_test_prompts == 4
    assert res.test_frac == len(res.test_indices) / 6


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1, 1.5])
def test_bad_fraction(frac):
    with pytest.raises(ValueError, match="test-frac"):
        split_keys(["a", "b"], frac)


def test_one_group_cannot_be_split():
    res = split_keys(["same"] * 10, 0.2)
    assert res.test_indices == [] and len(res.train_indices) == 10
