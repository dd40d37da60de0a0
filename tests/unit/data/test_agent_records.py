"""Agent rows in the record: tools, tool_calls, tool results; every validation error with its line and
field path; valid rows survive read -> write -> read unchanged."""

import json
from pathlib import Path

import pytest

from preftune.data.io import read_records, write_rows
from preftune.data.records import parse_row, record_from_dict, render_text
from preftune.data.validate import check_file

CALC = {"type": "function", "function": {
    "name": "calculator", "description": "evaluate an arithmetic expression",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                   "required": ["expression"], "additionalProperties": False}}}
LOOKUP = {"name": "lookup", "parameters": {"type": "object", "properties": {"key": {"type": "string"}}}}  # legacy


def U(text):
    return {"role": "user", "content": text}


def call(cid, name="calculator", arguments='{"expression": "2+3"}'):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}


def A(text="", *calls):
    m = {"role": "assistant", "content": text}
    if calls:
        m["tool_calls"] = list(calls)
    return m


def T(cid, content="5"):
    return {"role": "tool", "tool_call_id": cid, "content": content}


def good_row(**over):
    row = {"id": "r1", "tools": [CALC, LOOKUP],
           "prompt": [U("What is 2+3?"), A("", call("c1")), T("c1", "5")],
           "chosen": [A("2+3 = 5.")], "rejected": [A("2+3 = 6.")]}
    row.update(over)
    return row


def _write(tmp_path: Path, rows: list) -> Path:
    p = tmp_path / "agents.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def _problems(tmp_path, bad_row):
    """(line, field, message) of a file whose line 1 is valid and line 2 is `bad_row`."""
    bad_row = {**bad_row, "id": "r2"}
    return [(q.line, q.field, q.message) for q in check_file(_write(tmp_path, [good_row(), bad_row]))]


def test_a_valid_agent_row_is_normalised():
    rec = record_from_dict(good_row(prompt=[U("What is 2+3?"), {"role": "assistant", "content": None,
                                                                "tool_calls": [call("c1")]}, T("c1")]))
    assert rec.prompt[1] == {"role": "assistant", "content": "", "tool_calls": [call("c1")]}
    assert rec.prompt[2] == {"role": "tool", "content": "5", "tool_call_id": "c1"}
    # the legacy `functions` entry becomes the typed form
    assert rec.tools[1] == {"type": "function", "function": LOOKUP}
    # arguments given as an object are kept as the JSON text of that object
    r2 = record_from_dict(good_row(chosen=[A("", {"id": "c2", "function": {"name": "calculator",
                                                                          "arguments": {"expression": "1"}}})]))
    assert r2.chosen[0]["tool_calls"][0] == call("c2", arguments='{"expression": "1"}')


def test_arguments_not_valid_json(tmp_path):
    bad = good_row(chosen=[A("", call("c2", arguments='{"expression": "2+3"'))])
    assert _problems(tmp_path, bad) == [
        (2, "chosen[0].tool_calls[0].function.arguments", "is not valid JSON (Expecting ',' delimiter at column 21)")]


def test_arguments_not_a_json_object(tmp_path):
    bad = good_row(rejected=[A("", call("c2", arguments="[1, 2]"))])
    assert _problems(tmp_path, bad) == [(2, "rejected[0].tool_calls[0].function.arguments",
                                         "must be a JSON object, got list")]


def test_arguments_not_matching_the_schema(tmp_path):
    bad = good_row(chosen=[A("", call("c2", arguments='{"expr": "2+3"}'))])
    assert _problems(tmp_path, bad) == [(2, "chosen[0].tool_calls[0].function.arguments",
                                         ("do not match the parameters of tool 'calculator': 'expression' is a "
                                         "required property; Additional properties are not allowed ('expr' was "
                                         "unexpected)"))]
    wrong_type = good_row(chosen=[A("", call("c2", arguments='{"expression": 5}'))])
    assert _problems(tmp_path, wrong_type) == [(2, "chosen[0].tool_calls[0].function.arguments",
                                                ("do not match the parameters of tool 'calculator': at expression: "
                                                "5 is not of type 'string'"))]


def test_call_to_a_tool_not_in_tools(tmp_path):
    bad = good_row(chosen=[A("", call("c2", name="weather", arguments="{}"))])
    assert _problems(tmp_path, bad) == [(2, "chosen[0].tool_calls[0].function.name",
                                         "calls 'weather', which is not in tools (calculator, lookup)")]
    no_tools = good_row(chosen=[A("", call("c2"))])
    del no_tools["tools"]
    got = _problems(tmp_path, no_tools)
    assert (2, "prompt[1].tool_calls[0].function.name",
            "calls 'calculator', which is not in tools (the row has no `tools` list)") in got
    assert [g[1] for g in got] == ["prompt[1].tool_calls[0].function.name", "chosen[0].tool_calls[0].function.name"]


def test_tool_result_answering_no_earlier_call(tmp_path):
    bad = good_row(prompt=[U("What is 2+3?"), A("", call("c1")), T("c9")])
    got = _problems(tmp_path, bad)
    assert (2, "prompt[2].tool_call_id", "'c9' answers no earlier call (open calls: 'c1')") in got
    # the open call c1 then meets the next assistant turn: reported once, though chosen and rejected both follow
    assert got.count((2, "prompt[1].tool_calls[0]", ("call 'c1' (calculator) is not answered by a tool message "
                                                     "before the next assistant turn (chosen[0])"))) == 1
    answered_twice = good_row(prompt=[U("q"), A("", call("c1")), T("c1"), T("c1")])
    assert _problems(tmp_path, answered_twice) == [
        (2, "prompt[3].tool_call_id", "answers call 'c1', which an earlier tool message already answered")]


def test_call_never_answered_before_the_next_assistant_turn(tmp_path):
    bad = good_row(prompt=[U("What is 2+3?")],
                   chosen=[A("", call("c1")), A("5")], rejected=[A("6")])
    assert _problems(tmp_path, bad) == [(2, "chosen[0].tool_calls[0]", ("call 'c1' (calculator) is not answered by "
                                                                       "a tool message before the next assistant turn "
                                                                       "(chosen[1])"))]


def test_tool_result_without_an_id_while_a_call_is_open(tmp_path):
    bad = good_row(prompt=[U("q"), A("", call("c1")), {"role": "tool", "content": "5"}])
    got = _problems(tmp_path, bad)
    assert got[0] == (2, "prompt[2].tool_call_id", "is missing (the call it answers: one of 'c1')")


def test_malformed_calls_and_tools(tmp_path):
    bad = good_row(chosen=[A("", {"type": "function", "function": {"name": "calculator", "arguments": 3}})],
                   tools=[CALC, {"type": "function", "function": {"name": "calculator"}},
                          {"name": "x", "parameters": {"type": "objekt"}}])
    got = [(line, f) for line, f, _ in _problems(tmp_path, bad)]
    assert got == [(2, "tools[1].function.name"), (2, "tools[2].parameters"),
                   (2, "chosen[0].tool_calls[0].id"), (2, "chosen[0].tool_calls[0].function.arguments")]
    user_calls = good_row(chosen=[A("ok")], prompt=[{"role": "user", "content": "q", "tool_calls": [call("c1")]}])
    assert _problems(tmp_path, user_calls) == [(2, "prompt[0].tool_calls",
                                                "only assistant messages make tool calls (role is 'user')")]


def test_a_response_ending_with_an_open_call_is_a_valid_step():
    rec, problems = parse_row(good_row(prompt=[U("What is 2+3?")], chosen=[A("", call("c1"))],
                                       rejected=[A("It is 5.")]))
    assert problems == [] and rec.chosen[0]["tool_calls"][0]["id"] == "c1"


def test_a_whole_trajectory_as_the_response():
    rec, problems = parse_row(good_row(prompt=[U("What is 2+3?")],
                                       chosen=[A("", call("c1")), T("c1", "5"), A("5")],
                                       rejected=[A("", call("c1", arguments='{"expression": "2*3"}')), T("c1", "6"),
                                                 A("6")]))
    assert problems == []
    assert render_text(rec.chosen) == ('assistant: <tool_call>{"name": "calculator", "arguments": {"expression": '
                                       '"2+3"}}</tool_call>\ntool: 5\nassistant: 5')


@pytest.mark.parametrize("name", ["rt.jsonl", "rt.json", "rt.parquet"])
def test_valid_agent_rows_survive_read_write_read(tmp_path, name):
    rows = [good_row(),
            good_row(id="r2", prompt=[U("Convert 3 km to m, then 2+3")],
                     chosen=[A("Two steps.", call("a", arguments='{"expression": "3*1000"}'), call("b")),
                             T("a", "3000"), T("b", "5"), A("3000 m and 5.")],
                     rejected=[A("", call("a", name="lookup", arguments='{"key": "km"}'))]),
            good_row(id="r3", tools=None, prompt="Say hi", chosen="hi", rejected="go away")]
    rows[2].pop("tools")
    src = _write(tmp_path, rows)
    first = read_records(src)
    out = tmp_path / name
    write_rows(first, out)
    second = read_records(out)
    assert [r.to_dict() for r in second] == [r.to_dict() for r in first]
    assert check_file(out) == []
    assert first[1].chosen[0]["tool_calls"][1] == call("b") and first[2].tools == []
