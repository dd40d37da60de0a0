"""`data convert` on tool-calling rows: TRL (`tools`, id-less calls, named results) and OpenAI (`input.tools`,
legacy `functions` / `function_call` / `function` results), on the fixtures in tests/fixtures/convert."""

from __future__ import annotations

import json
from pathlib import Path

from preftune.cli import main
from preftune.data.convert import Format, convert_rows, guess_format
from preftune.data.formats_agent import link
from preftune.data.io import iter_raw, read_records
from preftune.data.validate import check_file

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "convert"
PARAMS = {"type": "object", "properties": {"location": {"type": "string", "description": "The city"},
                                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
          "required": ["location"]}
TOOL = {"type": "function", "function": {"name": "get_current_temperature",
                                         "description": "Gets the temperature at a given location.",
                                         "parameters": PARAMS}}


def U(t):
    return {"role": "user", "content": t}


def A(t):
    return {"role": "assistant", "content": t}


def call(cid, args):
    return {"id": cid, "type": "function", "function": {"name": "get_current_temperature", "arguments": args}}


def calls(*cs):
    return {"role": "assistant", "content": "", "tool_calls": list(cs)}


def result(cid, content, name="get_current_temperature"):
    return {"role": "tool", "content": content, "tool_call_id": cid, **({"name": name} if name else {})}


def conv(name):
    return convert_rows(iter_raw(FIX / name), "auto")


def test_trl_tool_rows():
    res = conv("trl_tools.jsonl")
    assert res.detected_format == "trl"
    one, two, three = res.records
    assert one.tools == [TOOL]
    assert one.chosen == [calls(call("call_1_0", '{"location": "Paris", "unit": "celsius"}'))]
    assert one.rejected == [A("It is 30 degrees.")]
    # two named results answer the two open calls in order
    assert two.prompt == [U("Is Paris warmer than Oslo?"),
                          calls(call("call_1_0", '{"location": "Paris"}'), call("call_1_1", '{"location": "Oslo"}')),
                          result("call_1_0", "21.0"), result("call_1_1", "9.5")]
    # implicit prompt: the response starts after the last user turn, call and result included
    assert three.prompt == [U("Temperature in Rome?")]
    assert three.chosen == [calls(call("call_1_0", '{"location": "Rome"}')), result("call_1_0", "25.0"),
                            A("25.0 degrees.")]
    assert three.rejected[-1] == A("It is freezing.")
    assert res.skipped == [(f"{FIX / 'trl_tools.jsonl'}:4", ("chosen[0].tool_calls[0].function.name: calls "
                            "'get_weather', which is not in tools (get_current_temperature)"))]


def test_openai_preference_rows_with_tools():
    res = conv("openai_tools.jsonl")
    assert res.detected_format == "openai"
    one, two = res.records
    assert one.tools == [TOOL] and one.prompt == [U("How warm is it in Paris?")]
    assert one.chosen == [calls(call("call_abc", '{"location": "Paris"}'))]
    assert two.prompt[1:] == [calls(call("call_abc", '{"location": "Paris"}')), result("call_abc", "21.0", None)]
    assert two.chosen == [A("It is 21.0 degrees in Paris.")]
    assert res.skipped == [(f"{FIX / 'openai_tools.jsonl'}:3", ("chosen[0].tool_calls[0].function.arguments: is not "
                            "valid JSON (Expecting property name enclosed in double quotes at column 2)"))]


def test_openai_legacy_functions():
    res = conv("openai_functions.jsonl")
    (one,) = res.records
    assert one.tools == [TOOL]  # the legacy `functions` entry in the typed form
    assert one.prompt == [U("How warm is it in Oslo?"), calls(call("call_1_0", '{"location": "Oslo"}')),
                          result("call_1_0", "9.5")]
    assert (one.chosen, one.rejected) == ([A("9.5 degrees in Oslo.")], [A("About 20 degrees.")])
    # the second row's rejected call breaks the schema: skipped, the reason names the field and the value
    assert res.skipped == [(f"{FIX / 'openai_functions.jsonl'}:2",
                            ("rejected[0].tool_calls[0].function.arguments: do not match the parameters of tool "
                            "'get_current_temperature': at unit: 'kelvin' is not one of ['celsius', 'fahrenheit']"))]


def test_guess_and_link():
    assert guess_format({"prompt": "q", "chosen": "a", "rejected": "b", "tools": []}) is Format.TRL
    conv_ = [U("q"), {"role": "assistant", "tool_calls": [{"function": {"name": "f"}}, {"function": {"name": "g"}}]},
             {"role": "tool", "name": "g", "content": "G"}, {"role": "tool", "content": "F"}]
    linked = link(conv_)
    assert [c["id"] for c in linked[1]["tool_calls"]] == ["call_1_0", "call_1_1"]
    assert [m["tool_call_id"] for m in linked[2:]] == ["call_1_1", "call_1_0"]  # by name, then the earliest open
    assert link(linked) == linked


def test_cli_converts_tool_rows_that_data_check_accepts(tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    assert main(["data", "convert", str(FIX / "trl_tools.jsonl"), "-o", str(out)]) == 0
    assert "wrote 3 records" in capsys.readouterr().out
    assert check_file(out) == []
    assert [r.to_dict() for r in read_records(out)] == [json.loads(line) for line in out.read_text().splitlines()]
