import pytest

from preftune.data.records import (
    PairRecord,
    RatedRecord,
    UnpairedRecord,
    parse_row,
    record_from_dict,
    render_text,
    validate_row,
)


def test_strings_become_messages_and_metadata_is_kept():
    rec = record_from_dict({"id": 7, "prompt": "Sum 2+2", "chosen": "4", "rejected": "5", "confidence": 0.9,
                            "close": False, "attributes": {"correctness": "chosen"}, "annotator": "r1",
                            "my_key": [1, 2]})
    assert isinstance(rec, PairRecord)
    assert rec.prompt == [{"role": "user", "content": "Sum 2+2"}]
    assert rec.chosen == [{"role": "assistant", "content": "4"}]
    assert rec.id == "7" and rec.confidence == 0.9 and rec.close is False
    assert rec.extra == {"my_key": [1, 2]}
    d = rec.to_dict()
    assert d["my_key"] == [1, 2] and d["attributes"] == {"correctness": "chosen"}
    assert record_from_dict(d).to_dict() == d  # round trip


def test_every_problem_of_a_row_is_reported():
    problems = validate_row({"prompt": "", "chosen": [{"role": "bot", "content": "x"}], "rejected": 3,
                             "confidence": 1.5, "close": "yes", "attributes": {"h": "maybe"}})
    fields = sorted(p.field for p in problems)
    assert fields == sorted(["prompt", "chosen[0].role", "rejected", "confidence", "close", "attributes.h"])


def test_identical_and_missing():
    assert [p.field for p in validate_row({"prompt": "p", "chosen": "a", "rejected": "a"})] == ["rejected"]
    assert [str(p) for p in validate_row({"prompt": "p", "chosen": "a"})] == ["rejected: is missing"]
    assert validate_row([1, 2])[0].field == "row"
    assert "keys: foo" in validate_row({"foo": 1})[0].message
    with pytest.raises(ValueError, match="confidence: must be in"):
        record_from_dict({"prompt": "p", "chosen": "a", "rejected": "b", "confidence": -0.1})


def test_unpaired_and_rated():
    u = record_from_dict({"prompt": "p", "completion": "c", "label": False})
    assert isinstance(u, UnpairedRecord) and u.label is False
    assert validate_row({"prompt": "p", "completion": "c", "label": "no"})[0].field == "label"
    r = record_from_dict({"id": "q", "prompt": "p", "completions": ["a", "b", "c"], "scores": [1, 3, 3]})
    assert isinstance(r, RatedRecord)
    pairs = r.to_pairs()
    # 3 > 1 twice; the two completions scored 3 are a tie and give no pair
    assert [(p.chosen[0]["content"], p.rejected[0]["content"], p.margin) for p in pairs] == [
        ("b", "a", 2.0), ("c", "a", 2.0)]
    assert validate_row({"prompt": "p", "completions": ["a", "b"], "scores": [1]})[0].field == "scores"


def test_parse_row_returns_record_only_when_clean():
    rec, probs = parse_row({"prompt": "p", "chosen": "a", "rejected": "b"})
    assert rec is not None and probs == []
    rec, probs = parse_row({"prompt": "p", "chosen": "a", "rejected": ""})
    assert rec is None and [str(p) for p in probs] == ["rejected: is empty"]


def test_render_text():
    assert render_text([{"role": "user", "content": "hi"}]) == "hi"
    assert render_text([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]) == "system: s\nuser: u"
