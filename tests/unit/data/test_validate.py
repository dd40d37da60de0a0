"""preftune.data.validate: every problem of a file, with its line, never stopping at the first."""

import json
from pathlib import Path

import pytest

from preftune.data.validate import check_file, check_path, turn_problems

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


def _write(tmp_path: Path, rows: list, name: str = "d.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return p


def test_five_problems_on_five_lines_all_reported():
    res = check_path(FIXTURES / "five_problems.jsonl")
    got = [(p.line, p.field) for p in res.problems]
    assert got == [(2, "json"), (3, "rejected"), (4, "rejected"), (5, "prompt[0].role"), (6, "confidence")]
    assert res.num_rows == 6 and res.num_bad_rows == 5
    assert "is missing" in res.problems[1].message
    assert "identical" in res.problems[2].message
    assert "'human'" in res.problems[3].message  # the unknown role is named (and reported once)
    assert "1.7" in res.problems[4].message
    assert str(res.problems[0]).startswith(f"{FIXTURES / 'five_problems.jsonl'}:2: json: invalid JSON")


def test_clean_file_has_no_problems(tmp_path):
    p = _write(tmp_path, [{"prompt": "a", "chosen": "b", "rejected": "c"},
                          {"prompt": "d", "chosen": "e", "rejected": "f", "id": 3}])
    assert check_file(p) == []


def test_duplicate_ids_name_the_first_line(tmp_path):
    row = {"id": "x", "prompt": "a", "chosen": "b", "rejected": "c"}
    p = _write(tmp_path, [row, {**row, "id": "y"}, row, {**row, "id": "y"}])
    probs = check_file(p)
    assert [(q.line, q.field) for q in probs] == [(3, "id"), (4, "id")]
    assert "first used on line 1" in probs[0].message and "first used on line 2" in probs[1].message


def test_int_and_str_ids_collide(tmp_path):
    # ids are strings once normalised, so 7 and "7" are the same id
    p = _write(tmp_path, [{"id": 7, "prompt": "a", "chosen": "b", "rejected": "c"},
                          {"id": "7", "prompt": "a", "chosen": "b", "rejected": "d"}])
    assert [(q.line, q.field) for q in check_file(p)] == [(2, "id")]


def test_rows_mixing_kinds(tmp_path):
    p = _write(tmp_path, [{"prompt": "a", "chosen": "b", "rejected": "c"},
                          {"prompt": "a", "completion": "b", "label": True},
                          {"prompt": "a", "chosen": "x", "rejected": "y"}])
    probs = check_file(p)
    assert [(q.line, q.field) for q in probs] == [(2, "row")]
    assert "unpaired" in probs[0].message and "line 1" in probs[0].message


def test_turn_order_checks():
    u, a, t = ({"role": r, "content": "x"} for r in ("user", "assistant", "tool"))
    assert turn_problems({"prompt": [u], "chosen": [a], "rejected": [a]}) == []
    assert turn_problems({"prompt": [u, a, t], "chosen": [a]}) == []  # a tool result can be answered
    got = turn_problems({"prompt": [u, a], "chosen": [a, u], "rejected": "plain text",
                         "completions": [[a], [u]]})
    assert [f for f, _ in got] == ["prompt", "chosen", "completions[1]"]
    assert "ends with 'assistant'" in got[0][1] and "ends with 'user'" in got[1][1]


def test_turn_problem_reported_with_other_problems_of_the_row(tmp_path):
    u = {"role": "user", "content": "q"}
    p = _write(tmp_path, [{"prompt": [u], "chosen": [{"role": "assistant", "content": "a"}, u],
                           "rejected": "b", "confidence": -1}])
    assert sorted(q.field for q in check_file(p)) == ["chosen", "confidence"]


def test_every_problem_of_one_row(tmp_path):
    p = _write(tmp_path, [{"prompt": "", "chosen": 3, "rejected": "x", "close": "yes", "confidence": "high"}])
    fields = sorted(q.field for q in check_file(p))
    assert fields == ["chosen", "close", "confidence", "prompt"]
    assert all(q.line == 1 for q in check_file(p))


def test_empty_file_is_a_problem(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("\n\n")
    probs = check_file(p)
    assert len(probs) == 1 and probs[0].line == 0 and str(probs[0]) == f"{p}: file: has no rows"


def test_csv_rows_keep_their_line_numbers(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("prompt,chosen,rejected,confidence\nq1,a,b,0.5\nq2,a,b,2\n", encoding="utf-8")
    probs = check_file(p)
    assert [(q.line, q.field) for q in probs] == [(3, "confidence")]


def test_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        check_file(tmp_path / "nope.jsonl")
