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


# ---------------------------------------------------------------- non-finite numbers (issue 16 item 3)

NAN, INF = float("nan"), float("inf")
PAIR = {"prompt": "p", "chosen": "a", "rejected": "b"}


@pytest.mark.parametrize(("extra", "field", "shown"), [
    ({"margin": NAN}, "margin", "NaN"), ({"margin": -INF}, "margin", "-Infinity"),
    ({"margin": 10 ** 400}, "margin", "an integer of 1329 bits (beyond the float range)"),
    ({"confidence": INF}, "confidence", "Infinity"), ({"weight": NAN}, "weight", "NaN"),
    ({"meta": {"scores": [1.0, NAN]}}, "meta.scores[1]", "NaN")])
def test_every_non_finite_number_is_named_with_its_field(extra, field, shown):
    probs = validate_row({**PAIR, **extra})
    assert [(p.field, p.nonfinite) for p in probs] == [(field, True)]
    assert probs[0].message.endswith(f"got {shown}") and "finite" in probs[0].message


def test_text_nan_is_not_a_number_and_is_flagged_non_finite():
    probs = validate_row({**PAIR, "margin": "nan", "confidence": "high"})
    assert [(p.field, p.message, p.nonfinite) for p in probs] == [
        ("confidence", "must be a finite number in [0, 1], got 'high'", False),
        ("margin", "must be a finite number, got 'nan'", True)]


def test_rated_row_with_a_nan_score_gives_no_record_and_names_the_score():
    rec, probs = parse_row({"prompt": "p", "completions": ["a", "b", "c"], "scores": [NAN, 1, 2]})
    assert rec is None and [(p.field, p.nonfinite) for p in probs] == [("scores[0]", True)]
    # a non-number is named by position too, and ints stay ints in the record (written back as they came)
    assert [p.field for p in validate_row({"prompt": "p", "completions": ["a", "b"], "scores": [1, "2"]})] == [
        "scores[1]"]
    assert record_from_dict({"prompt": "p", "completions": ["a", "b"], "scores": [1, 2]}).to_dict()["scores"] == [1, 2]


def test_message_keys_and_unpaired_rows_are_scanned_too():
    row = {"prompt": [{"role": "user", "content": "q", "weight": NAN}], "completion": "c", "label": True,
           "confidence": NAN}
    assert sorted(p.field for p in validate_row(row)) == ["confidence", "prompt[0].weight"]


def test_a_message_without_a_role_says_missing():
    assert [str(p) for p in validate_row({**PAIR, "prompt": [{"content": "q"}]})] == [
        "prompt[0].role: is missing (expected one of system, user, assistant, tool)"]


# ---------------------------------------------------------------- rows to score

def test_parse_response_row_accepts_what_score_scores_and_nothing_else():
    from preftune.data.records import parse_response_row

    assert parse_response_row(PAIR) == ("pair", [])
    assert parse_response_row({"prompt": "p", "completion": "c"}) == ("single", [])  # label optional
    assert parse_response_row({"prompt": "p", "response": "c"}) == ("single", [])
    assert parse_response_row({"prompt": "p", "completions": ["a", "b"]}) == ("rated", [])  # scores optional
    kind, probs = parse_response_row({"prompt": "p", "response": ""})
    assert kind == "single" and [str(p) for p in probs] == ["response: is empty"]
    assert [p.field for p in parse_response_row("text")[1]] == ["row"]
    assert [p.field for p in parse_response_row(7)[1]] == ["row"]
    assert "no response to score" in parse_response_row({"prompt": "p"})[1][0].message
    assert [str(p) for p in parse_response_row({**PAIR, "confidence": 7})[1]] == [
        "confidence: must be in [0, 1], got 7"]
    assert [p.field for p in parse_response_row({**PAIR, "prompt": [{"role": "human", "content": "q"}]})[1]] == [
        "prompt[0].role"]
    assert [p.field for p in parse_response_row({"prompt": "p", "completions": ["a", "b"], "scores": [NAN, 1]})[1]] == [
        "scores[0]"]
