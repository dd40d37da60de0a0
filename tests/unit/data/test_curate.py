"""preftune.data.curate: every removed row has a reason; kept + removed == input, always."""

import random
from pathlib import Path

import pytest

from preftune.data.curate import (
    Reason,
    _lsh_shape,
    curate_records,
    find_near_duplicates,
    jaccard,
    load_test_prompts,
    minhash_signatures,
    near_duplicates_bruteforce,
    shingles,
)
from preftune.data.io import read_records
from preftune.data.records import PairRecord, UnpairedRecord

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


def pair(prompt, chosen, rejected, **kw):
    return PairRecord(prompt=[{"role": "user", "content": prompt}], chosen=[{"role": "assistant", "content": chosen}],
                      rejected=[{"role": "assistant", "content": rejected}], **kw)


def reasons(res):
    return [(r.line, r.reason.value, r.duplicate_of) for r in res.removed]


def test_fixture_every_reason_with_lines():
    recs = read_records(FIXTURES / "curate_pairs.jsonl")
    res = curate_records(recs, test_prompts=load_test_prompts([str(FIXTURES / "test_prompts.jsonl")]))
    assert reasons(res) == [
        (2, "exact_duplicate", 1),          # case/whitespace variant of line 1
        (3, "conflict_no_majority", None),  # labelled both ways 1:1
        (4, "conflict_no_majority", None),
        (6, "conflict_minority", 5),        # 2:1 -> the majority's first copy (line 5) is kept
        (7, "exact_duplicate", 5),
        (8, "identical_responses", None),
        (9, "test_leak", None),
        (11, "near_duplicate", 10),         # differs from line 10 only in punctuation
    ]
    assert [r.id for r in res.kept] == ["p1", "p5", "p10", "p12"]
    assert res.kept_indices == [0, 4, 9, 11]
    assert res.counts == {"conflict_minority": 1, "conflict_no_majority": 2, "exact_duplicate": 2,
                          "identical_responses": 1, "near_duplicate": 1, "test_leak": 1}
    rep = res.report()
    assert rep["num_input"] == 12 and rep["num_kept"] + rep["num_removed"] == 12
    assert rep["removed"][0] == {"line": 2, "id": "p2", "reason": "exact_duplicate",
                                 "detail": "same pair as line 1", "duplicate_of": 1}
    assert "1:1" in res.removed[1].detail and "no majority" in res.removed[1].detail


def test_lines_come_from_the_caller():
    recs = [pair("q", "a", "b"), pair("q", "a", "b")]
    res = curate_records(recs, lines=[10, 42])
    assert reasons(res) == [(42, "exact_duplicate", 10)]


def test_empty_and_identical_responses():
    recs = [pair("q", "  \n ", "b"), pair("q2", "Same  Text", "same text"), pair("q3", "x", "y")]
    res = curate_records(recs)
    assert reasons(res) == [(1, "empty_response", None), (2, "identical_responses", None)]


def test_unpaired_conflict_and_duplicate():
    def up(c, label):
        return UnpairedRecord(prompt=[{"role": "user", "content": "q"}],
                              completion=[{"role": "assistant", "content": c}], label=label)
    res = curate_records([up("a", True), up("a", False), up("b", True), up("B ", True)])
    assert reasons(res) == [(1, "conflict_no_majority", None), (2, "conflict_no_majority", None),
                            (4, "exact_duplicate", 3)]


class CharTokenizer:
    """One token per character; adds 2 special tokens to a pair (like [CLS] a [SEP] b [SEP] minus one)."""
    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [list(t) for t in texts]}

    def num_special_tokens_to_add(self, pair=False):
        return 2 if pair else 1


def test_over_length_counts_prompt_plus_longest_response():
    recs = [pair("abc", "12345", "1"), pair("abc", "1234", "12"), pair("abcd", "1234", "12")]
    # lengths: 3+5+2 = 10, 3+4+2 = 9, 4+4+2 = 10
    res = curate_records(recs, tokenizer=CharTokenizer(), max_length=9)
    assert reasons(res) == [(1, "over_length", None), (3, "over_length", None)]
    assert res.removed[0].detail == "10 tokens > max length 9"
    with pytest.raises(ValueError, match="tokenizer"):
        curate_records(recs, max_length=9)


def test_leak_compares_normalised_prompts():
    recs = [pair("What is  2+2?", "4", "5"), pair("What is 2+3?", "5", "6")]
    res = curate_records(recs, test_prompts=["what is 2+2? "])
    assert reasons(res) == [(1, "test_leak", None)]


def test_near_duplicate_threshold_by_hand():
    words = [f"w{i}" for i in range(10)]
    a, b = " ".join(words), " ".join(words[:9] + ["other"])
    # 8 trigrams each, 7 shared -> Jaccard 7/9 = 0.778
    assert jaccard(shingles(a), shingles(b)) == pytest.approx(7 / 9)
    recs = [pair("q", a, "no"), pair("q", b, "no"), pair("other prompt", b, "no")]
    assert reasons(curate_records(recs, near_dup_threshold=0.75)) == [(2, "near_duplicate", 1)]
    assert reasons(curate_records(recs, near_dup_threshold=0.8)) == []
    assert reasons(curate_records(recs, near_dup_threshold=None)) == []
    # chosen near-equal but the rejected responses differ: not a duplicate
    recs2 = [pair("q", a, "no thanks at all"), pair("q", b, "something else entirely here")]
    assert reasons(curate_records(recs2, near_dup_threshold=0.5)) == []


def _random_records(n, seed, vocab=60):
    rng = random.Random(seed)
    words = [f"v{i}" for i in range(vocab)]
    recs = []
    for _ in range(n):
        if recs and rng.random() < 0.3:  # a perturbed copy of an earlier row
            src = rng.choice(recs)
            c = src.chosen[0]["content"].split()
            c[rng.randrange(len(c))] = rng.choice(words)
            recs.append(pair(src.prompt[0]["content"], " ".join(c), src.rejected[0]["content"]))
            continue
        p = f"prompt {rng.randrange(n // 4 + 1)}"
        recs.append(pair(p, " ".join(rng.choices(words, k=rng.randint(4, 25))),
                         " ".join(rng.choices(words, k=rng.randint(1, 25)))))
    return recs


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.9])
def test_lsh_equals_bruteforce(threshold):
    recs = _random_records(300, seed=int(threshold * 10))
    fast = find_near_duplicates(recs, range(len(recs)), threshold)
    slow = near_duplicates_bruteforce(recs, range(len(recs)), threshold)
    assert len(slow) > 5  # the oracle found something to compare
    assert {i: j for i, (j, _) in fast.items()} == slow


def test_minhash_estimates_jaccard():
    a, b = set(range(300)), set(range(100, 400))  # |a & b| = 200, |a | b| = 400 -> 0.5
    sig = minhash_signatures([list(a), list(b), []])
    assert abs((sig[0] == sig[1]).mean() - 0.5) < 0.15
    assert (sig[2] == sig[2].max()).all()


@pytest.mark.parametrize("t", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_lsh_banding_catches_pairs_at_the_threshold(t):
    b, r = _lsh_shape(t)
    assert b * r <= 128 and 1 - (1 - t ** r) ** b >= 0.995


@pytest.mark.parametrize("seed", range(5))
def test_kept_plus_removed_is_input(seed):
    rng = random.Random(seed)
    recs = _random_records(200, seed)
    for _ in range(20):  # swapped copies: conflicts
        s = rng.choice(recs)
        recs.append(pair(s.prompt[0]["content"], s.rejected[0]["content"], s.chosen[0]["content"]))
    rng.shuffle(recs)
    res = curate_records(recs, test_prompts=["prompt 3"], near_dup_threshold=0.8)
    assert len(res.kept) + len(res.removed) == len(recs) == res.num_input
    assert sorted(res.kept_indices + [r.line - 1 for r in res.removed]) == list(range(len(recs)))
    kept_lines = {i + 1 for i in res.kept_indices}
    assert all(r.duplicate_of in kept_lines for r in res.removed if r.duplicate_of is not None)
    assert all(r.reason in Reason for r in res.removed)


def test_bad_threshold():
    with pytest.raises(ValueError, match="threshold"):
        curate_records([pair("q", "a", "b")], near_dup_threshold=1.5)


def test_test_prompts_from_any_rows_and_errors(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"prompt": "A  B"}\n'
                 '{"prompt": [{"role": "user", "content": "c"}], "completion": "x", "label": true}\n')
    assert load_test_prompts([str(f)]) == {"a b", "c"}
    f.write_text('{"prompt": "ok"}\n{"question": "no prompt"}\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2: prompt"):
        load_test_prompts([str(f)])
