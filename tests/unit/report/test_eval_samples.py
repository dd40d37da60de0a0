"""What the evaluators store for the report (no model runs): per-sample category, scores and gold
attributes (eval policy), both responses of every regression case (eval regress), and the origin
of on-policy pairs (sample-pairs' summary)."""

from __future__ import annotations

import argparse
import json

import pytest

from preftune.eval import judges, policy, regress, sample_pairs
from preftune.world.gold import gold_score


def test_sample_rows_carry_info_scores_and_gold_attributes():
    prompts = ["What is 2 + 3?", [{"role": "user", "content": "Reply in at most 3 words: what is rain?"}]]
    model, base = ["The answer is 5.", "Water from clouds."], ["It is 6.", "Rain is water that falls from clouds."]
    judge = judges.GoldJudge()
    outcomes = judge.compare(prompts, model, base)
    rows = policy.sample_rows(prompts, model, base, outcomes, judge, [{"id": "a", "category": "arithmetic"}, {}])
    assert [r["verdict"] for r in rows] == [1.0, 1.0]
    assert rows[0]["id"] == "a" and rows[0]["category"] == "arithmetic" and "category" not in rows[1]
    assert rows[0]["score_model"] == gold_score(prompts[0], model[0])["total"] == rows[0]["gold_model"]["total"]
    assert rows[0]["gold_model"]["correctness"] == 1.0 and rows[0]["gold_baseline"]["correctness"] == 0.0
    assert rows[1]["gold_baseline"]["instruction_following"] < 1.0  # 8 words for a 3-word limit
    assert "checks" not in rows[0]["gold_model"]
    # a pairwise judge has no scores: only the verdict is stored
    class Pairwise:
        name, info = "llm:x", {}

    plain = policy.sample_rows(["p"], ["a"], ["b"], [0.5], Pairwise())
    assert plain == [{"prompt": "p", "model": "a", "baseline": "b", "verdict": 0.5}]


def test_read_prompt_info_lines_up_with_read_prompts(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"id": "x", "prompt": "one", "category": "c1"}\n"two"\n{"prompt": "three", "category": "c3"}\n')
    assert policy.read_prompts(f) == ["one", "two", "three"]
    assert policy.read_prompt_info(f) == [{"id": "x", "category": "c1"}, {}, {"category": "c3"}]
    assert policy.read_prompt_info(f, num_prompts=2) == [{"id": "x", "category": "c1"}, {}]


def test_regression_cases_store_prompt_category_and_both_responses():
    cases = [regress.parse_case({"id": "w", "prompt": "In at most 2 words: sky colour?", "category": "limit",
                                 "checks": [{"max_words": 2}]}, "s:1")]
    out = regress.regression_gate(cases, lambda ps: ["It is usually blue."], lambda ps: ["Blue."])
    assert out["cases"] == [{"id": "w", "model_passed": False, "baseline_passed": True,
                             "model_failed": ["max_words=2: 4 words > 2"], "baseline_failed": [],
                             "prompt": "In at most 2 words: sky colour?", "category": "limit",
                             "model_response": "It is usually blue.", "baseline_response": "Blue."}]


def test_sample_pairs_summary_records_where_the_pairs_came_from(tmp_path, monkeypatch):
    from preftune.eval import generate

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    monkeypatch.setattr(generate, "load_causal_lm", lambda name: (None, None))
    monkeypatch.setattr(judges, "make_scorer", lambda spec: object())
    rows = [{"id": "s-0", "prompt": "a", "chosen": "x", "rejected": "y", "margin": 0.5}]
    summary = {"num_prompts": 2, "num_pairs": 1, "num_no_pair": 1, "num_samples": 4, "mean_score": 0.5,
               "mean_best": 0.7, "mean_margin": 0.5}
    monkeypatch.setattr(sample_pairs, "sample_pairs", lambda *a, **k: (rows, dict(summary)))
    out = tmp_path / "pairs.jsonl"
    args = argparse.Namespace(out=str(out), force=False, prompts=str(prompts), num_prompts=None, scorer="gold",
                              model="smollm2-135m", num_samples=4, max_new_tokens=48, temperature=0.7,
                              batch_size=8, seed=3, min_margin=0.1)
    assert sample_pairs.run_sample_pairs(args) == 0
    side = json.loads((tmp_path / "pairs.jsonl.summary.json").read_text())
    assert side == {"command": "sample-pairs", "model": "smollm2-135m", "scorer": "gold", "prompts": str(prompts),
                    "temperature": 0.7, "max_new_tokens": 48, "seed": 3, "min_margin": 0.1, **summary}
    with pytest.raises(ValueError, match="already exists"):
        sample_pairs.run_sample_pairs(args)
