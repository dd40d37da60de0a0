"""preftune.data.stats: hand-computed counts, lengths and disagreement."""

import random

import numpy as np
import pytest

from preftune.data.records import PairRecord, RatedRecord, UnpairedRecord
from preftune.data.stats import compute_stats, distribution, format_stats, labeller_disagreement, percentile


def pair(prompt, chosen, rejected, **kw):
    return PairRecord(prompt=[{"role": "user", "content": prompt}], chosen=[{"role": "assistant", "content": chosen}],
                      rejected=[{"role": "assistant", "content": rejected}], **kw)


def test_percentile_matches_numpy():
    rng = random.Random(0)
    for n in (1, 2, 7, 50):
        v = sorted(rng.random() * 100 for _ in range(n))
        for q in (0, 50, 90, 100):
            assert percentile(v, q) == pytest.approx(float(np.percentile(v, q)))


def test_distribution_by_hand():
    assert distribution([4, 1, 3, 2]) == pytest.approx(
        {"count": 4, "min": 1, "mean": 2.5, "median": 2.5, "p90": 3.7, "max": 4})
    assert distribution([])["mean"] is None


def test_counts_shares_and_lengths():
    recs = [
        pair("ab cd", "long answer", "no", annotator="r1", close=True, confidence=0.5, category="math",
             attributes={"helpfulness": "chosen", "harmlessness": "tie"}),
        pair("x", "ok", "a longer one", annotator="r1", confidence=0.9, source="s1",
             attributes={"helpfulness": "rejected"}),
        pair("y", "same", "size", annotator="r2", close=False),
        UnpairedRecord(prompt=[{"role": "user", "content": "z"}], completion=[{"role": "assistant", "content": "c"}]),
    ]
    s = compute_stats(recs)
    assert s["num_rows"] == 4 and s["kinds"] == {"pair": 3, "unpaired": 1}
    assert s["length_units"] == ["chars", "words"]
    assert s["lengths"]["chosen"]["chars"] == pytest.approx(
        {"count": 3, "min": 2, "mean": 17 / 3, "median": 4.0, "p90": 9.6, "max": 11})  # p90: 4 + 0.8 * (11 - 4)
    assert s["lengths"]["prompt"]["words"]["max"] == 2 and s["lengths"]["prompt"]["words"]["count"] == 4
    assert s["lengths"]["completion"]["chars"]["count"] == 1
    assert s["close"] == {"num": 1, "num_known": 2, "share": 1 / 3}
    assert s["low_confidence"] == {"threshold": 0.6, "num": 1, "num_known": 2, "share": 1 / 3}
    assert s["chosen_longer"] == {"unit": "chars", "num_longer": 1, "num_shorter": 1, "num_equal": 1, "share": 1 / 3}
    assert s["annotators"] == {"counts": {"r1": 2, "r2": 1}, "missing": 1}
    assert s["categories"] == {"counts": {"math": 1}, "missing": 3}
    assert s["attributes"] == {"harmlessness": {"chosen": 0, "rejected": 0, "tie": 1},
                               "helpfulness": {"chosen": 1, "rejected": 1, "tie": 0}}
    text = format_stats(s, "f.jsonl")
    assert text.startswith("f.jsonl: 4 rows (3 pair, 1 unpaired)")
    assert "chosen longer than rejected (chars): 0.333" in text


def test_disagreement_by_hand():
    recs = [pair("Q", "A", "B", annotator="r1"), pair("q", "a", "b", annotator="r2"),
            pair("Q", "B", "A", annotator="r3"),                       # group 1: 2 vs 1
            pair("P", "C", "D", annotator="r1"), pair("P", "C", "D", annotator="r3"),  # group 2: agree
            pair("R", "E", "F", annotator="r1")]                       # single: not repeated
    d = labeller_disagreement(recs)
    assert d["num_repeated_pairs"] == 2 and d["num_rows_repeated"] == 5
    assert d["num_disagreeing_pairs"] == 1 and d["share"] == 0.5
    # r1, r2 in group 1 see the others split 1:1 -> not compared; r3 goes against 2 others.
    assert d["per_annotator"] == {"r1": {"num_compared": 1, "num_disagree": 0, "share": 0.0},
                                  "r3": {"num_compared": 2, "num_disagree": 1, "share": 0.5}}


class WordTokenizer:
    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [t.split() for t in texts]}


def test_tokenizer_lengths_and_rated_rows():
    recs = [pair("a b c", "one two", "one"),
            RatedRecord(prompt=[{"role": "user", "content": "p"}],
                        completions=[[{"role": "assistant", "content": "x y"}],
                                     [{"role": "assistant", "content": "x"}]], scores=[1, 0])]
    s = compute_stats(recs, tokenizer=WordTokenizer())
    assert s["length_units"] == ["tokens"]
    assert s["lengths"]["prompt"]["tokens"]["max"] == 3
    assert s["lengths"]["completions"]["tokens"]["count"] == 2
    assert s["chosen_longer"]["unit"] == "tokens" and s["chosen_longer"]["share"] == 1.0


def test_no_pairs_gives_none_shares():
    s = compute_stats([UnpairedRecord(prompt=[{"role": "user", "content": "z"}],
                                      completion=[{"role": "assistant", "content": "c"}])])
    assert s["close"]["share"] is None and s["chosen_longer"]["share"] is None
    assert s["disagreement"]["share"] is None
