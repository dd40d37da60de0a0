"""Converters of `preftune data convert`: every format on real-looking fixtures (tests/fixtures/convert),
with the exact records, the exact skipped lines and reasons, auto detection, and the CLI end to end."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from preftune.cli import main
from preftune.data import formats
from preftune.data.convert import Format, convert_file, convert_rows, guess_format
from preftune.data.io import RawRow, iter_raw
from preftune.data.records import PairRecord, RatedRecord, UnpairedRecord, record_from_dict, validate_row

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "convert"


def U(t):
    return {"role": "user", "content": t}


def A(t):
    return {"role": "assistant", "content": t}


def S(t):
    return {"role": "system", "content": t}


def conv(name: str, fmt: str = "auto"):
    return convert_rows(iter_raw(FIX / name), fmt)


def raw(*rows: dict, path: str = "in.jsonl") -> list[RawRow]:
    return [RawRow(path, i, r) for i, r in enumerate(rows, start=1)]


def by_id(result) -> dict:
    return {r.id: r for r in result.records}


# ----------------------------------------------------------------------------- HH-RLHF

def test_hh_multi_turn_history_becomes_the_prompt():
    res = conv("hh.jsonl", "hh")
    assert [r.id for r in res.records] == ["hh.jsonl:1", "hh.jsonl:2", "hh.jsonl:8"]
    rec = by_id(res)["hh.jsonl:2"]
    assert rec.prompt == [
        U("I want to bake bread at home. Where do I start?"),
        A("Start with a simple no-knead loaf: flour, water, salt and yeast."),
        U("How long does the dough need to rise?"),
        A("About 12 to 18 hours at room temperature for a no-knead dough."),
        U("Can I speed that up?")]
    assert rec.chosen == [A("Yes: use warm water and a little more yeast, and it can be ready in 3 to 4 hours.")]
    assert rec.rejected == [A("No, bread cannot be made faster.")]
    first = by_id(res)["hh.jsonl:1"]
    assert (first.prompt, first.chosen, first.rejected) == (
        [U("What is the capital of France?")], [A("The capital of France is Paris.")], [A("I think it might be Lyon.")])
    assert res.num_rows == 8 and res.detected_format == "hh" and not res.guessed


def test_hh_defects_are_listed_with_line_and_reason():
    res = conv("hh.jsonl", "hh")
    where = str(FIX / "hh.jsonl")
    assert [s[0] for s in res.skipped] == [f"{where}:{n}" for n in (3, 4, 5, 6, 7)]
    reasons = [s[1] for s in res.skipped]
    assert reasons[0] == "rejected: final Assistant response is empty"
    assert reasons[1] == "chosen and rejected histories differ before the last turn (first difference at turn 2)"
    assert reasons[2].startswith("json: invalid JSON")
    assert reasons[3] == "chosen: no '\\n\\nHuman:' / '\\n\\nAssistant:' turns found"
    assert reasons[4] == "rejected: is identical to chosen"
    # every input row is either a record or a skipped line: nothing vanished
    assert len(res.records) + len(res.skipped) == res.num_rows


def test_hh_gzipped_file_gives_the_same_pairs(tmp_path):
    gz = tmp_path / "hh.jsonl.gz"
    with gzip.open(gz, "wb") as f:
        f.write((FIX / "hh.jsonl").read_bytes())
    plain, zipped = conv("hh.jsonl", "hh"), convert_rows(iter_raw(gz), "hh")
    assert [(r.prompt, r.chosen, r.rejected) for r in zipped.records] == [
        (r.prompt, r.chosen, r.rejected) for r in plain.records]
    assert [r.id for r in zipped.records] == ["hh.jsonl.gz:1", "hh.jsonl.gz:2", "hh.jsonl.gz:8"]
    assert [s[0].rsplit(":", 1)[1] for s in zipped.skipped] == ["3", "4", "5", "6", "7"]


def test_hh_transcript_edge_cases():
    # the final "Assistant:" of real files often has no trailing space
    assert formats.hh_transcript("\n\nHuman: Hi\n\nAssistant:", "chosen") == [U("Hi"), A("")]
    with pytest.raises(formats.SkipRow, match="text before the first 'Human:' turn"):
        formats.hh_transcript("Preamble\n\nHuman: Hi\n\nAssistant: Yo", "chosen")
    res = convert_rows(raw({"chosen": "\n\nHuman: Hi\n\nAssistant: Yo\n\nHuman: Bye",
                            "rejected": "\n\nHuman: Hi\n\nAssistant: Hey"}), "hh")
    assert res.skipped == [("in.jsonl:1", "chosen: transcript ends with a Human turn, not an Assistant response")]


# ----------------------------------------------------------------------------- TRL

def test_trl_explicit_prompt_strings_and_messages():
    res = conv("trl_explicit.jsonl", "trl")
    assert [r.id for r in res.records] == ["trl_explicit.jsonl:1", "conv-1"]  # a source id is kept
    s, c = res.records
    assert (s.prompt, s.chosen, s.rejected) == ([U("The sky is")], [A(" blue.")], [A(" green.")])
    assert (c.prompt, c.chosen, c.rejected) == ([U("What color is the sky?")], [A("It is blue.")], [A("It is green.")])


def test_trl_implicit_prompt_is_split_off():
    res = conv("trl_implicit.jsonl", "trl")
    recs = by_id(res)
    one, multi, text = recs["trl_implicit.jsonl:1"], recs["trl_implicit.jsonl:2"], recs["trl_implicit.jsonl:3"]
    assert (one.prompt, one.chosen, one.rejected) == (
        [U("What color is the sky?")], [A("It is blue.")], [A("It is green.")])
    assert multi.prompt == [S("Be brief."), U("Hi"), A("Hello!"), U("Name a prime.")]
    assert (multi.chosen, multi.rejected) == ([A("7")], [A("8")])
    # plain strings: common prefix cut at a word boundary, prompt + response == the input exactly
    assert (text.prompt, text.chosen, text.rejected) == ([U("The sky is")], [A(" blue.")], [A(" green.")])
    assert res.skipped == [(f"{FIX / 'trl_implicit.jsonl'}:4",
                            "chosen and rejected histories differ before the last turn (first difference at turn 1)")]


def test_trl_full_conversations_win_over_a_repeated_prompt_and_keep_tool_turns():
    tool = {"role": "tool", "content": "22C"}
    res = convert_rows(raw(
        {"prompt": "What is 2+2?", "chosen": [U("What is 2+2?"), A("4")], "rejected": [U("What is 2+2?"), A("5")]},
        {"chosen": [U("Weather?"), A("calling"), tool, A("It is 22C.")], "rejected": [U("Weather?"), A("No idea.")]}),
        "trl")
    a, b = res.records
    assert (a.prompt, a.chosen, a.rejected) == ([U("What is 2+2?")], [A("4")], [A("5")])
    assert (b.prompt, b.chosen, b.rejected) == ([U("Weather?")], [A("calling"), tool, A("It is 22C.")],
                                                [A("No idea.")])


def test_trl_implicit_string_split_never_cuts_a_word():
    assert formats._split_strings("I like apples", "I like apricots") == ("I like", " apples", " apricots")
    with pytest.raises(formats.SkipRow, match="share no prompt text"):
        formats._split_strings("Apples", "Apricots")


def test_trl_unpaired_rows():
    res = conv("trl_unpaired.jsonl", "trl")
    assert all(isinstance(r, UnpairedRecord) for r in res.records)
    assert [(r.prompt, r.completion, r.label) for r in res.records] == [
        ([U("The sky is")], [A(" blue.")], True), ([U("What color is the sky?")], [A("It is green.")], False)]


# ----------------------------------------------------------------------------- UltraFeedback

def test_ultrafeedback_rated_completions_become_pairs_with_margins():
    res = conv("ultrafeedback.jsonl", "ultrafeedback")
    margins = {r.id: r.margin for r in res.records}
    # row 1 uses fine-grained_score (4.75, 2.5, 4.0), not overall_score (8.5, 4.0, 7.0)
    # row 2 has annotations only: mean of numeric ratings, "N/A" left out -> 5.0, 2.5, 2.0
    assert margins == {"ultrafeedback.jsonl:1:0>2": 0.75, "ultrafeedback.jsonl:1:0>1": 2.25,
                       "ultrafeedback.jsonl:1:2>1": 1.5, "ultrafeedback.jsonl:2:0>1": 2.5,
                       "ultrafeedback.jsonl:2:0>2": 3.0, "ultrafeedback.jsonl:2:1>2": 0.5}
    best = by_id(res)["ultrafeedback.jsonl:1:2>1"]
    assert best.extra == {"chosen_model": "falcon-40b-instruct", "rejected_model": "alpaca-7b"}
    assert best.attributes == {"helpfulness": "chosen", "honesty": "tie", "instruction_following": "chosen",
                               "truthfulness": "chosen"}
    assert best.source == "evol_instruct"
    assert by_id(res)["ultrafeedback.jsonl:2:0>2"].attributes == {"helpfulness": "chosen", "honesty": "chosen"}
    # equal scores: no pair, and a line saying so
    assert res.skipped == [(f"{FIX / 'ultrafeedback.jsonl'}:3", "tied completions give no pair: 0=1 (6)")]


def test_ultrafeedback_binarized_margin_and_tie():
    res = conv("ultrafeedback_binarized.jsonl", "ultrafeedback")
    (rec,) = res.records
    assert (rec.prompt, rec.chosen, rec.rejected, rec.margin) == (
        [U("What is 2+2?")], [A("2+2 = 4.")], [A("It is 5.")], 6.5)
    assert rec.extra == {"prompt_id": "p1"}
    assert res.skipped == [(f"{FIX / 'ultrafeedback_binarized.jsonl'}:2",
                            "tie: score_chosen == score_rejected == 7 (a tie is not a preference)")]
    bad = convert_rows(raw({"prompt": "q", "chosen": "a", "rejected": "b", "score_chosen": 1, "score_rejected": 3}),
                       "ultrafeedback")
    assert bad.skipped == [("in.jsonl:1", "score_chosen 1 < score_rejected 3: the label contradicts the scores")]


def test_native_rated_rows_match_rated_record_to_pairs():
    row = {"id": "r", "prompt": "p", "completions": ["a", "b", "c", "d"], "scores": [2.0, 5.0, 2.0, 1.0],
           "annotator": "x", "category": "c1"}
    oracle = record_from_dict(row)
    assert isinstance(oracle, RatedRecord)
    res = convert_rows(raw(row), "preftune")
    assert [r.to_dict() for r in res.records] == [p.to_dict() for p in oracle.to_pairs()]
    assert [r.margin for r in res.records] == [3.0, 3.0, 4.0, 1.0, 1.0]
    assert res.skipped == [("in.jsonl:1", "tied completions give no pair: 0=2 (2)")]


# ----------------------------------------------------------------------------- AlpacaEval

def test_alpacaeval_preference_values():
    res = conv("alpacaeval.json", "alpacaeval")
    recs = by_id(res)
    got = {i: (recs[f"alpacaeval.json:{i}"].chosen[0]["content"], recs[f"alpacaeval.json:{i}"].confidence,
               recs[f"alpacaeval.json:{i}"].close) for i in (1, 2, 3, 5)}
    long = "A longer and more detailed answer {}."
    assert got == {1: ("Short answer 1.", 1.0, False), 2: (long.format(2), 1.0, False),
                   3: (long.format(3), 0.8, False), 5: ("Short answer 5.", 0.9, False)}
    r2 = recs["alpacaeval.json:2"]
    assert (r2.annotator, r2.category, r2.source) == ("judge_a", "synthetic_set", "ref-model vs new-model")
    assert r2.extra == {"chosen_model": "new-model", "rejected_model": "ref-model", "preference": 2.0}
    where = str(FIX / "alpacaeval.json")
    assert res.skipped == [(f"{where}:4", "tie (preference 1.5): no chosen response"),
                           (f"{where}:6", "preference: no usable value (None; did the annotation fail?)")]


def test_alpacaeval_close_draw_and_range():
    row = {"instruction": "i", "output_1": "a", "output_2": "b"}
    res = convert_rows(raw({**row, "preference": 1.6}, {**row, "preference": 0}, {**row, "preference": 2.5}),
                       "alpacaeval")
    (rec,) = res.records
    assert (rec.chosen, rec.confidence, rec.close) == ([A("b")], 0.6, True)
    assert [s[1] for s in res.skipped] == ["preference 0: a draw, no chosen response",
                                           "preference: must be 1, 2 or a value in [1, 2], got 2.5"]


def test_alpacaeval_already_paired_rows_keep_metadata():
    res = conv("alpacaeval_pairs.jsonl", "alpacaeval")
    a, b = res.records
    assert (a.category, a.source, a.annotator, a.confidence, a.close) == (
        "helpful_base", "ref-model vs new-model", "judge_a", 1.0, False)
    assert a.extra == {"chosen_model": "new-model", "rejected_model": "ref-model", "p_output_2_better": 1.0}
    # output_1 won (p_output_2_better = 0): the comparison order is still generator_1 vs generator_2
    assert (b.category, b.source, b.chosen) == ("oasst", "ref-model vs new-model", [A("Chosen answer B.")])
    assert res.skipped == []


# ----------------------------------------------------------------------------- ShareGPT

def test_sharegpt_llamafactory_demo_rows():
    rows = json.loads((FIX / "sharegpt_dpo_en_demo_20.json").read_text())
    res = conv("sharegpt_dpo_en_demo_20.json", "sharegpt")
    assert len(res.records) == 20 and res.skipped == []
    role = {"human": "user", "gpt": "assistant", "system": "system"}
    for src, rec in zip(rows, res.records):
        assert rec.prompt == [{"role": role[m["from"]], "content": m["value"]} for m in src["conversations"]]
        assert rec.chosen == [A(src["chosen"]["value"])] and rec.rejected == [A(src["rejected"]["value"])]
    assert [len(r.prompt) for r in res.records].count(1) == 11
    assert res.records[1].prompt[0]["role"] == "system"


def test_sharegpt_conversation_must_end_with_a_human_turn():
    res = convert_rows(raw({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
                            "chosen": {"from": "gpt", "value": "x"}, "rejected": {"from": "gpt", "value": "y"}},
                           {"conversations": [{"from": "human", "value": "q"}], "system": "Be kind.",
                            "chosen": {"from": "gpt", "value": "x"}, "rejected": {"from": "gpt", "value": "y"}}),
                       "sharegpt")
    assert res.skipped == [("in.jsonl:1", "conversations: must end with a human turn (the one chosen/rejected answer)")]
    assert res.records[0].prompt == [S("Be kind."), U("q")]


# ----------------------------------------------------------------------------- OpenAI

def test_openai_preference_fine_tuning_rows():
    res = conv("openai_preference.jsonl", "openai")
    a, b = res.records
    assert a.prompt == [U("Hello, can you tell me how cold San Francisco is today?")]
    assert a.rejected == [A("It is not particularly cold in San Francisco today.")]
    # developer -> system; a list of text parts is joined
    assert (b.prompt, b.chosen) == ([S("Answer in one word."), U("Capital of Italy?")], [A("Rome.")])


def test_openai_messages_rows_and_tool_calls():
    res = conv("openai_messages.jsonl", "openai")
    a, b = res.records
    assert (a.prompt, a.chosen, a.rejected, a.annotator) == ([S("You are terse."), U("2+3?")], [A("5")], [A("6")],
                                                             "rater-1")
    assert (b.chosen, b.rejected) == ([A("Jupiter.")], [A("Saturn.")])
    tool = convert_rows(raw({"messages": [U("q")], "chosen": {"role": "assistant", "content": None, "tool_calls": []},
                             "rejected": "no"}), "openai")
    reason = "chosen: message has no text content (and no tool calls)"  # tool calls are converted (test_convert_agent)
    assert tool.skipped == [("in.jsonl:1", reason)]


# ----------------------------------------------------------------------------- native

def test_native_rows_are_validated():
    res = conv("preftune.jsonl", "preftune")
    assert [r.id for r in res.records] == ["ex-1", "ex-2", "ex-3:1>0", "ex-3:1>2"]
    ex1 = res.records[0]
    assert (ex1.annotator, ex1.confidence, ex1.close, ex1.attributes, ex1.source) == (
        "rater-07", 0.9, False, {"helpfulness": "chosen"}, "team/round-3")
    where = str(FIX / "preftune.jsonl")
    assert res.skipped == [(f"{where}:3", "tied completions give no pair: 0=2 (1)"),
                           (f"{where}:4", "confidence: must be in [0, 1], got 1.7")]


# ----------------------------------------------------------------------------- auto

@pytest.mark.parametrize("name, expected", [
    ("hh.jsonl", "hh"), ("trl_explicit.jsonl", "trl"), ("trl_implicit.jsonl", "trl"), ("trl_unpaired.jsonl", "trl"),
    ("ultrafeedback.jsonl", "ultrafeedback"), ("ultrafeedback_binarized.jsonl", "ultrafeedback"),
    ("alpacaeval.json", "alpacaeval"), ("alpacaeval_pairs.jsonl", "alpacaeval"),
    ("sharegpt_dpo_en_demo_20.json", "sharegpt"), ("openai_preference.jsonl", "openai"),
    ("openai_messages.jsonl", "openai"), ("preftune.jsonl", "preftune")])
def test_auto_detects_each_format_and_matches_the_explicit_one(name, expected):
    auto, explicit = conv(name, "auto"), conv(name, expected)
    assert (auto.detected_format, auto.guessed) == (expected, True)
    assert [r.to_dict() for r in auto.records] == [r.to_dict() for r in explicit.records]
    assert auto.skipped == explicit.skipped


def test_auto_fails_clearly_when_it_cannot_tell():
    with pytest.raises(ValueError, match=r"in.jsonl: cannot tell the format from the first rows \(keys: a, b\); "
                                         r"pass --from with one of: hh, trl, ultrafeedback, alpacaeval"):
        convert_rows(raw({"a": 1, "b": 2}), "auto")
    mixed = raw({"conversations": [], "chosen": {}, "rejected": {}}, {"input": {}, "preferred_output": []})
    with pytest.raises(ValueError, match=r"look like different formats \(sharegpt \(1 rows\), openai \(1 rows\)\)"):
        convert_rows(mixed, "auto")
    with pytest.raises(ValueError, match="no rows to convert; cannot guess the format"):
        convert_rows([], "auto")
    with pytest.raises(ValueError, match="unknown format 'xml'; use one of: hh, trl"):
        convert_rows([], "xml")


def test_guess_format_prefers_preftune_when_rubric_metadata_is_present():
    assert guess_format({"prompt": "p", "chosen": "a", "rejected": "b"}) is Format.TRL
    assert guess_format({"prompt": "p", "chosen": "a", "rejected": "b", "annotator": "x"}) is Format.PREFTUNE


# ----------------------------------------------------------------------------- files and CLI

ALL_FIXTURES = ["hh.jsonl", "trl_explicit.jsonl", "trl_implicit.jsonl", "trl_unpaired.jsonl", "ultrafeedback.jsonl",
                "ultrafeedback_binarized.jsonl", "alpacaeval.json", "alpacaeval_pairs.jsonl",
                "sharegpt_dpo_en_demo_20.json", "openai_preference.jsonl", "openai_messages.jsonl", "preftune.jsonl"]


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_cli_output_of_every_format_passes_validation(name, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", str(FIX / name), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = conv(name)
    assert len(rows) == len(expected.records) > 0
    assert [validate_row(r) for r in rows] == [[]] * len(rows)
    skipped_file = tmp_path / "out.jsonl.skipped.jsonl"
    assert skipped_file.exists() == bool(expected.skipped)


def test_cli_hh_end_to_end(tmp_path, capsys):
    src = tmp_path / "raw.jsonl"
    shutil.copy(FIX / "hh.jsonl", src)
    out = tmp_path / "pairs.jsonl"
    assert main(["data", "convert", "--from", "hh", str(src), "-o", str(out)]) == 0
    cap = capsys.readouterr()
    assert cap.out.splitlines()[0] == f"read 8 rows, wrote 3 records to {out} (format: hh)"
    err = cap.err.splitlines()
    assert err[0] == f"{src}:3: rejected: final Assistant response is empty"
    assert [line.split(": ", 1)[0] for line in err] == [f"{src}:{n}" for n in (3, 4, 5, 6, 7)]
    skipped = [json.loads(x) for x in (tmp_path / "pairs.jsonl.skipped.jsonl").read_text().splitlines()]
    assert [s["where"] for s in skipped] == [f"{src}:{n}" for n in (3, 4, 5, 6, 7)]
    assert len(out.read_text().splitlines()) == 3

    # refuses to overwrite without --force; --force replaces; auto says it guessed
    assert main(["data", "convert", "--from", "hh", str(src), "-o", str(out)]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["data", "convert", str(src), "-o", str(out), "--force"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"read 8 rows, wrote 3 records to {out} (format: hh, guessed)"


def test_cli_exit_1_when_nothing_converts_and_caps_printed_skips(tmp_path, capsys):
    src = tmp_path / "bad.jsonl"
    src.write_text("".join(json.dumps({"chosen": "\n\nHuman: q\n\nAssistant:",
                                      "rejected": "\n\nHuman: q\n\nAssistant: a"})
                           + "\n" for _ in range(60)))
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", "--from", "hh", str(src), "-o", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert sum(line.endswith("chosen: final Assistant response is empty") for line in err) == 50
    assert err[50] == f"... and 10 more skipped lines (all in {tmp_path / 'out.jsonl.skipped.jsonl'})"
    assert not out.exists()
    assert len((tmp_path / "out.jsonl.skipped.jsonl").read_text().splitlines()) == 60
    assert main(["data", "convert", "--from", "nope", str(src), "-o", str(out)]) == 1
    assert "unknown format 'nope'" in capsys.readouterr().err


def test_convert_file_writes_other_formats_and_keeps_records(tmp_path):
    out = tmp_path / "pairs.parquet"
    res = convert_file(FIX / "trl_implicit.jsonl", "trl", out)
    back = convert_rows(iter_raw(out), "preftune")
    assert [r.to_dict() for r in back.records] == [r.to_dict() for r in res.records]
    assert all(isinstance(r, PairRecord) for r in back.records)
    with pytest.raises(ValueError, match="already exists"):
        convert_file(FIX / "trl_implicit.jsonl", "trl", out)
    # --force over a run that had skipped lines: the stale OUT.skipped.jsonl goes with the old OUT
    assert res.skipped_path == tmp_path / "pairs.parquet.skipped.jsonl" and res.skipped_path.exists()
    clean = convert_file(FIX / "trl_explicit.jsonl", "trl", out, overwrite=True)
    assert clean.skipped_path is None and not (tmp_path / "pairs.parquet.skipped.jsonl").exists()


MALFORMED = [{}, {"chosen": 1, "rejected": []}, {"prompt": None, "chosen": "a"}, {"completions": "x", "instruction": 3},
             {"conversations": "x", "chosen": {}, "rejected": None}, {"input": [], "preferred_output": 1,
                                                                       "non_preferred_output": 2}]


@pytest.mark.parametrize("fmt", [f.value for f in Format if f is not Format.AUTO])
def test_malformed_rows_are_skipped_with_a_reason_never_dropped_or_crashing(fmt):
    res = convert_rows(raw(*MALFORMED, path="bad.jsonl"), fmt)
    assert res.records == []
    assert [w for w, _ in res.skipped] == [f"bad.jsonl:{i}" for i in range(1, len(MALFORMED) + 1)]
    assert all(reason for _, reason in res.skipped)


# ----------------------------------------------------------------------------- stops (issue 16 items 3 and 9)

NAN = float("nan")


def test_nan_in_any_input_row_stops_the_conversion_with_file_line_field():
    rated = {"prompt": "p", "completions": ["a", "b", "c"], "scores": [NAN, 1, 2]}
    res = convert_rows(raw({"prompt": "q", "chosen": "a", "rejected": "b"}, rated), "preftune")
    # the NaN row is not a record (NaN sorts anywhere: "a" could have won) and not a quiet skip either
    assert [str(e) for e in res.errors] == ["in.jsonl:2: scores[0]: must be a finite number, got NaN"]
    assert len(res.records) == 1 and res.skipped == []
    text = convert_rows(raw({"prompt": "q", "chosen": "a", "rejected": "b", "margin": "nan"}), "preftune")
    assert [str(e) for e in text.errors] == ["in.jsonl:1: margin: must be a finite number, got 'nan'"]
    uf = {"instruction": "q", "completions": [{"response": "a", "fine-grained_score": 4},
                                              {"response": "b", "fine-grained_score": float("inf")}]}
    assert [str(e) for e in convert_rows(raw(uf), "ultrafeedback").errors] == [
        "in.jsonl:1: completions[1].fine-grained_score: must be a finite number, got Infinity"]
    uf_text = {"instruction": "q", "completions": [
        {"response": "a", "annotations": {"honesty": {"Rating": "-inf"}}}, {"response": "b", "overall_score": 2}]}
    assert [str(e) for e in convert_rows(raw(uf_text), "ultrafeedback").errors] == [
        "in.jsonl:1: completions[0].annotations.honesty.Rating: must be a finite number, got '-inf'"]
    # "N/A" is UltraFeedback's own "no rating": still a note, not an error
    na = {"instruction": "q", "completions": [{"response": "a", "overall_score": "N/A"},
                                              {"response": "b", "overall_score": 2},
                                              {"response": "c", "overall_score": 1}]}
    res_na = convert_rows(raw(na), "ultrafeedback")
    assert res_na.errors == [] and len(res_na.records) == 1


def test_output_data_check_would_reject_stops_the_conversion():
    share = {"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "human", "value": "a"},
             "rejected": {"from": "gpt", "value": "b"}}
    assert [str(e) for e in convert_rows(raw(share), "sharegpt").errors] == [
        "in.jsonl:1: chosen: must end with an assistant turn, ends with 'user' (in the converted row)"]
    mixed = raw({"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "s", "completion": "c", "label": True})
    res = convert_rows(mixed, "trl")
    assert [(e.line, e.field) for e in res.errors] == [(2, "row")] and "unpaired" in res.errors[0].message
    # native rows as their author wrote them: the mix is a note, not a stop (loss=kto trains on both)
    native = convert_rows(mixed, "preftune")
    assert native.errors == [] and [(w.line, w.field) for w in native.warnings] == [(2, "row")]


def test_convert_file_writes_nothing_when_the_conversion_stops(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n'
                   '{"prompt": "p", "chosen": "a", "rejected": "b", "margin": NaN}\n'
                   '{"chosen": "\\n\\nHuman: q\\n\\nAssistant:", "rejected": "x"}\n')
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", str(src), "-o", str(out), "--from", "trl"]) == 1
    err = capsys.readouterr().err
    assert f"{src}:2: margin: must be a finite number, got NaN" in err.splitlines()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # neither OUT nor OUT.skipped.jsonl
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    for fmt in ("auto", "trl"):
        with pytest.raises(ValueError, match=rf"^{empty}: no rows to convert"):
            convert_file(empty, fmt, out)


def test_convert_refuses_an_output_that_is_its_input_or_its_skipped_file(tmp_path):
    src = tmp_path / "x.jsonl.skipped.jsonl"
    src.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(ValueError, match="OUT.skipped.jsonl is the same file as the input IN"):
        convert_file(src, "trl", tmp_path / "x.jsonl", overwrite=True)
    with pytest.raises(ValueError, match="-o is the same file as the input IN"):
        convert_file(src, "trl", src, overwrite=True)
    assert src.read_text() == '{"prompt": "q", "chosen": "a", "rejected": "b"}\n'
