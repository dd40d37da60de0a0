"""Guards, the best-of-N curve (pure part), prompt reading and verdict summaries."""

import json
import math

import numpy as np
import pytest

from preftune.eval import bon, guards, policy


def test_overoptimisation_report_warns_only_when_flagged():
    r = guards.overoptimisation_report([1, 2, 4, 8], [1, 2, 3, 4], [0.5, 0.6, 0.4, 0.3], x_name="N")
    assert r["flag"]["flagged"] and r["flag"]["x"] == 2 and len(r["warnings"]) == 1
    assert "N=2" in r["warnings"][0] and len(r["series"]) == 4
    assert guards.overoptimisation_report([1, 2], [1, 2], [1, 2])["warnings"] == []


def test_length_bias_report():
    lengths = np.arange(1.0, 21.0)
    r = guards.length_bias_report(lengths, rewards=lengths * 2 + 1)
    assert r["reward_length"]["spearman"] == pytest.approx(1.0) and len(r["warnings"]) == 1
    rng = np.random.default_rng(0)
    r = guards.length_bias_report(lengths, rewards=rng.permutation(20), outcomes=[1, 0] * 10,
                                  length_diffs=np.zeros(20))
    assert r["win_length"]["pearson"] == 0.0 and r["win_rate_by_length"][0]["n"] == 20
    # the same perfect correlation on 5 responses is reported but too few to warn about
    assert guards.length_bias_report(lengths[:5], rewards=lengths[:5])["warnings"] == []
    with pytest.raises(ValueError, match="length_diffs"):
        guards.length_bias_report(lengths, outcomes=[1] * 20)


def test_uncertain_responses_above_quantile():
    std = [0.1, 0.5, 0.2, 0.9, 0.3, 0.1, 0.2, 0.4, 0.1, 0.2]
    r = guards.uncertain_responses(std, quantile=0.8, ids=list("abcdefghij"))
    assert r["threshold"] == pytest.approx(np.quantile(std, 0.8))
    assert r["indices"] == [3, 1] and r["ids"] == ["d", "b"] and r["std"] == [0.9, 0.5]
    with pytest.raises(ValueError):
        guards.uncertain_responses(std, quantile=1.0)


def test_bon_curve_by_hand():
    proxy = np.array([[1.0, 3.0, 2.0, 5.0], [4.0, 1.0, 6.0, 0.0]])
    judge = np.array([[10.0, 30.0, 20.0, 50.0], [40.0, 10.0, 60.0, 0.0]])
    rows = bon.bon_curve(proxy, judge, [1, 2, 4], estimator="nested")
    assert [r["proxy"] for r in rows] == [2.5, 3.5, 5.5]  # picks (1,4), (3,4), (5,6)
    assert [r["judge"] for r in rows] == [25.0, 35.0, 55.0]
    assert [r["judge_gain"] for r in rows] == [0.0, 10.0, 30.0]
    assert rows[2]["kl_bound"] == pytest.approx(math.log(4) - 0.75)
    # all subsets: N=1 is the mean of every sample, N=4 the best; N=2 by hand: ascending ranks weigh
    # C(i, 1) / C(4, 2) = 0, 1/6, 2/6, 3/6 -> row 1 (1,2,3,5): 23/6, row 2 (0,1,4,6): 27/6
    rows = bon.bon_curve(proxy, judge, [1, 2, 4])
    assert [r["proxy"] for r in rows] == pytest.approx([2.75, 50 / 12, 5.5])
    assert [r["judge"] for r in rows] == pytest.approx([27.5, 500 / 12, 55.0])
    with pytest.raises(ValueError, match="outside"):
        bon.bon_curve(proxy, judge, [8])


def test_bon_all_subsets_equals_enumeration():
    """The rank weights give exactly the mean over every n-subset of the best sample's judge score."""
    import itertools

    rng = np.random.default_rng(1)
    proxy, judge = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    rows = bon.bon_curve(proxy, judge, [1, 2, 3, 5, 7])
    for r in rows:
        n, want = r["n"], []
        for p in range(5):
            subsets = list(itertools.combinations(range(7), n))
            want.append(np.mean([judge[p, max(s, key=lambda i: proxy[p, i])] for s in subsets]))
        assert r["judge"] == pytest.approx(np.mean(want), abs=1e-12)
        lo, hi = r["judge_ci95"]
        assert lo <= r["judge"] <= hi
    assert bon.subset_max_weights(7, 3).sum() == pytest.approx(1.0)


def test_bon_length_proxy_overoptimises_gold():
    # synthetic world in numbers: the proxy rewards length; the judge likes ~20 words, less beyond
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=(200, 16)).astype(float)
    judge = -np.abs(lengths - 20.0) / 100
    rows = bon.bon_curve(lengths, judge, [1, 2, 4, 8, 16])
    proxy_s, judge_s = [r["proxy"] for r in rows], [r["judge"] for r in rows]
    assert all(np.diff(proxy_s) > 0) and all(np.diff(judge_s) < 0)
    r = guards.overoptimisation_report([r["n"] for r in rows], proxy_s, judge_s, x_name="N")
    assert r["flag"]["flagged"] and r["flag"]["x"] == 1


def test_parse_ns():
    assert bon.parse_ns("8,1,2,2") == [1, 2, 8]
    for bad in ("0,1", "a", ""):
        with pytest.raises(ValueError, match="--n"):
            bon.parse_ns(bad)


def test_read_prompts(tmp_path):
    p = tmp_path / "p.jsonl"
    rows = [{"prompt": "hi"}, {"prompt": [{"role": "user", "content": "yo"}]}, "bare", {"prompt": "x"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert policy.read_prompts(p) == ["hi", [{"role": "user", "content": "yo"}], "bare", "x"]
    assert policy.read_prompts(p, num_prompts=2) == ["hi", [{"role": "user", "content": "yo"}]]
    p.write_text(json.dumps({"prompt": "a"}) + "\n" + json.dumps({"question": "b"}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl:2: prompt: is missing"):
        policy.read_prompts(p)
    with pytest.raises(ValueError, match="does not exist"):
        policy.read_prompts(tmp_path / "none.jsonl")


def test_summarise_verdicts_by_hand():
    s = policy.summarise_verdicts([1, 0.5, 0, 1], ["aaaa", "bb", "c", "dd"], ["a", "b", "c", "d"])
    assert (s["wins"], s["ties"], s["losses"], s["num_prompts"]) == (2, 1, 1, 4)
    assert s["win_rate"] == pytest.approx(0.625)
    assert s["mean_length_model"] == pytest.approx(2.25) and s["mean_length_baseline"] == 1.0
    lo, hi = s["win_rate_ci95"]
    assert 0 <= lo <= 0.625 <= hi <= 1


def test_write_json_refuses_to_overwrite(tmp_path):
    p = tmp_path / "r.json"
    policy.write_json({"a": 1}, p)
    with pytest.raises(ValueError, match="--force"):
        policy.write_json({"a": 2}, p)
    policy.write_json({"a": 2}, p, overwrite=True)
    assert json.loads(p.read_text()) == {"a": 2}
