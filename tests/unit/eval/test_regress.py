"""Regression checks (each passing and failing), suite parsing errors, the built-in suite, and the
gate on mocked generation: a model that ignores word limits is caught, an unchanged one passes."""

import json

import pytest

from preftune.eval import regress as R


def _check(obj):
    return R._parse_check(obj, "t")


@pytest.mark.parametrize("check,good,bad", [
    ({"contains": "Paris"}, "It is paris.", "It is Rome."),
    ({"not_contains": "coffee"}, "Tea, please.", "Coffee, please."),
    ({"regex": r"\b42\b"}, "the answer is 42", "the answer is 142"),
    ({"max_words": 3}, "one two three", "one two three four"),
    ({"valid_json": True}, '```json\n{"a": 1}\n```', "{a: 1}"),
    ({"valid_json": {"key": "name"}}, '{"name": "x"}', '{"title": "x"}'),
    ({"refuses": True}, "I'm sorry, but I can't help with that.", "Sure, here is how."),
    ({"not_refuses": True}, "Sure, here is how.", "I cannot help with that request."),
    ({"gold_above": 0.6}, "2 + 3 = 5", "I cannot help with that."),
])
def test_each_check_passes_and_fails(check, good, bad):
    c = _check(check)
    assert R.run_check(c, "What is 2 + 3?", good)[0] is True
    ok, why = R.run_check(c, "What is 2 + 3?", bad)
    assert ok is False and why


@pytest.mark.parametrize("row,msg", [
    ({"prompt": "p", "checks": [{"max_word": 3}]}, "unknown check 'max_word'"),
    ({"prompt": "p", "checks": [{"max_words": "3"}]}, "bad value '3' for check 'max_words'"),
    ({"prompt": "p", "checks": [{"regex": "("}]}, "invalid regex"),
    ({"prompt": "p", "checks": []}, "checks: need a non-empty list"),
    ({"prompt": "", "checks": [{"max_words": 3}]}, "prompt: is empty"),
    ({"prompt": [{"role": "human", "content": "x"}], "checks": [{"max_words": 3}]}, r"prompt\[0\]\.role: unknown role"),
    ({"prompt": "p", "checks": [{"gold_above": float("nan")}]}, r"checks\[0\]: gold_above must be a finite number"),
    ({"prompt": "p", "checks": [{"max_words": 3, "contains": "x"}]}, "one-key object"),
])
def test_bad_cases_name_the_line_and_field(tmp_path, row, msg):
    p = tmp_path / "suite.jsonl"
    p.write_text(json.dumps({"id": "ok", "prompt": "p", "checks": [{"max_words": 3}]}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=msg) as e:
        R.read_suite(p)
    assert f"{p}:2" in str(e.value)


def test_missing_suite_and_duplicate_ids(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        R.read_suite(tmp_path / "nope.jsonl")
    p = tmp_path / "s.jsonl"
    row = json.dumps({"id": "a", "prompt": "p", "checks": [{"max_words": 3}]})
    p.write_text(row + "\n" + row + "\n")
    with pytest.raises(ValueError, match="duplicate case id 'a'"):
        R.read_suite(p)


def test_builtin_suite_loads():
    cases = R.read_suite(R.DEFAULT_SUITE)
    assert 40 <= len(cases) <= 50
    kinds = {c.kind for case in cases for c in case.checks}
    assert kinds == set(R.CheckKind)  # every kind of check is exercised


def _good_answer(prompt: str) -> str:
    """A 'model' that answers every built-in case within its limits (a canned table)."""
    return CANNED[prompt]


CANNED: dict = {}


def _fill_canned():
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(
        "make_suite", pathlib.Path(__file__).parents[3] / "scripts" / "make_regression_suite.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    CANNED.update({c[2]: c[4] for c in mod.CASES + mod.world_cases()})


def test_gate_catches_a_model_that_ignores_word_limits_and_passes_an_unchanged_one():
    _fill_canned()
    cases = R.read_suite(R.DEFAULT_SUITE)
    baseline = lambda prompts: [_good_answer(p) for p in prompts]
    # the broken policy pads every answer with 100 extra words, so every word limit breaks
    broken = lambda prompts: [_good_answer(p) + " and" * 100 for p in prompts]
    same = R.regression_gate(cases, baseline, baseline)
    assert same["num_regressions"] == 0 and same["model_passed"] == same["baseline_passed"] == len(cases)
    r = R.regression_gate(cases, broken, baseline)
    limited = {c.id for c in cases if any(ch.kind is R.CheckKind.MAX_WORDS for ch in c.checks)}
    caught = {reg["id"] for reg in r["regressions"]}
    assert limited <= caught  # every case with a word limit is reported
    assert any("max_words" in f for reg in r["regressions"] for f in reg["failed_checks"])
    assert r["fixed"] == [] and r["baseline_passed"] == len(cases)


def test_gate_counts_fixed_cases_and_ignores_cases_failing_for_both():
    cases = [R.parse_case({"id": "a", "prompt": "p", "checks": [{"contains": "x"}]}, "t:1"),
             R.parse_case({"id": "b", "prompt": "q", "checks": [{"contains": "y"}]}, "t:2")]
    r = R.regression_gate(cases, lambda ps: ["x", "n"], lambda ps: ["n", "n"])
    assert r["num_regressions"] == 0 and r["fixed"] == ["a"] and r["model_passed"] == 1
    r = R.regression_gate(cases, lambda ps: ["n", "n"], lambda ps: ["x", "n"])
    assert [x["id"] for x in r["regressions"]] == ["a"]
