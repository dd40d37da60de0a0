"""Write the bad-input corpus, tests/fixtures/bad_inputs/ (files + manifest.json), for
tests/integration/test_bad_inputs.py (issue 16: every command that reads data refuses each of these
with exit 1, an error line naming the file, line and field, no traceback, and no file written).

Each file holds one defect, on line 2 where a line applies (line 1 is a valid row, so a reader that
only looks at the first row, or counts lines from 0, is caught). manifest.json says for each file
what it is, which commands must reject it, and the error expected: `line` and `field` (null where
the defect has none: a truncated gzip has no bad line) and a `fragment` of the message (a regular
expression). `invocations` are the path cases (an output that is an input or another output, an
output that cannot be written): argument lists with placeholders the test fills in.

    .venv/bin/python scripts/make_bad_inputs.py [--out DIR] [--check]

--check rewrites nothing and exits 1 when the committed corpus differs from what this script writes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "bad_inputs"

# Commands (as the test names them) grouped by what they read.
PAIR_READERS = ["data check", "data curate", "data split", "data stats", "score", "train rm", "train sft",
                "train dpo", "eval rm"]
PROMPT_READERS = ["eval policy", "bon", "sample-pairs"]
SUITE_READERS = ["eval regress"]
CONVERT = ["data convert"]
FINITE = r"must be a finite number"

GOOD = {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."}
GOOD2 = {"prompt": "Name a fruit.", "chosen": "A pear.", "rejected": "A chair."}


def _line(row: object) -> str:
    # Python's json writes NaN / Infinity for non-finite floats: exactly the input this corpus needs.
    return json.dumps(row) + "\n"


def _jsonl(*rows: object) -> bytes:
    return "".join(r if isinstance(r, str) else _line(r) for r in rows).encode()


def _entry(what: str, item: int, commands: list[str], line: int | None, field: str | None, fragment: str,
           **extra: object) -> dict:
    return {"what": what, "issue_item": item, "rejected_by": commands,
            "error": {"line": line, "field": field, "fragment": fragment}, **extra}


def _long_text(num_words: int) -> str:
    words = ["the", "river", "carries", "cold", "water", "from", "the", "mountains", "down", "to", "the", "wide",
             "green", "valley", "where", "farmers", "grow", "wheat", "and", "barley", "every", "summer"]
    return " ".join(words[i % len(words)] for i in range(num_words))


def corpus() -> dict[str, tuple[bytes, dict]]:
    """file name -> (bytes, manifest entry)."""
    files: dict[str, tuple[bytes, dict]] = {}

    def add(name: str, data: bytes, entry: dict) -> None:
        files[name] = (data, entry)

    # -- item 3: non-finite numbers in every numeric field of every kind of row
    add("nan_margin.jsonl", _jsonl(GOOD, {**GOOD2, "margin": float("nan")}),
        _entry("pair row with margin NaN", 3, PAIR_READERS + CONVERT, 2, "margin", FINITE))
    add("infinity_confidence.jsonl", _jsonl(GOOD, {**GOOD2, "confidence": float("inf")}),
        _entry("pair row with confidence Infinity", 3, PAIR_READERS + CONVERT, 2, "confidence", FINITE))
    add("negative_infinity_margin.jsonl", _jsonl(GOOD, {**GOOD2, "margin": float("-inf")}),
        _entry("pair row with margin -Infinity", 3, PAIR_READERS + CONVERT, 2, "margin", FINITE))
    add("overflow_margin.jsonl", _jsonl(GOOD, '{"prompt": "Name a fruit.", "chosen": "A pear.", '
                                               '"rejected": "A chair.", "margin": 1e999}\n'),
        _entry("pair row with margin 1e999 (Python's json reads it as Infinity)", 3, PAIR_READERS + CONVERT,
               2, "margin", FINITE))
    add("nan_text_margin.jsonl", _jsonl(GOOD, {**GOOD2, "margin": "nan"}),
        _entry('pair row with margin "nan" (text where a number is expected)', 3, PAIR_READERS + CONVERT,
               2, "margin", FINITE))
    add("nan_scores_rated.jsonl", _jsonl(
        {"prompt": "Pick a number.", "completions": ["1", "2", "3"], "scores": [1, 3, 2]},
        {"prompt": "Pick a letter.", "completions": ["a", "b", "c"], "scores": [float("nan"), 1, 2]}),
        _entry("rated row with scores [NaN, 1, 2] (a NaN sorts anywhere: any completion could win)", 3,
               PAIR_READERS + CONVERT, 2, "scores[0]", FINITE))
    add("nan_weight_unpaired.jsonl", _jsonl(
        {"prompt": "Say yes.", "completion": "Yes.", "label": True, "weight": 1.0},
        {"prompt": "Say no.", "completion": "No.", "label": True, "weight": float("nan")}),
        _entry("unpaired row with an extra numeric field weight NaN", 3, PAIR_READERS + CONVERT, 2, "weight", FINITE))
    add("nan_text_confidence.csv", b"prompt,chosen,rejected,confidence\n"
        b"Name a colour.,Blue.,Seven.,0.9\nName a fruit.,A pear.,A chair.,nan\n",
        _entry('CSV whose confidence cell is "nan" (float() reads it as NaN)', 3, PAIR_READERS + CONVERT,
               3, "confidence", FINITE))
    uf_ok = {"instruction": "Name a colour.", "completions": [
        {"response": "Blue.", "fine-grained_score": 4.5}, {"response": "Seven.", "fine-grained_score": 1.0}]}
    add("nan_ultrafeedback.jsonl", _jsonl(uf_ok, {"instruction": "Name a fruit.", "completions": [
        {"response": "A pear.", "fine-grained_score": 4.0},
        {"response": "A chair.", "fine-grained_score": float("nan")}]}),
        _entry("UltraFeedback row whose second completion scores NaN (convert must not pick a winner)", 3, CONVERT,
               2, "completions[1].fine-grained_score", FINITE))
    add("nan_text_ultrafeedback_rating.jsonl", _jsonl(uf_ok, {"instruction": "Name a fruit.", "completions": [
        {"response": "A pear.", "annotations": {"helpfulness": {"Rating": "nan"}}},
        {"response": "A chair.", "annotations": {"helpfulness": {"Rating": "2"}}}]}),
        _entry('UltraFeedback rating "nan" (text where a number is expected)', 3, CONVERT,
               2, "completions[0].annotations.helpfulness.Rating", FINITE))
    add("suite_nan_threshold.jsonl", _jsonl(
        {"id": "a", "prompt": "Say hi.", "checks": [{"max_words": 5}]},
        {"id": "b", "prompt": "Say bye.", "checks": [{"gold_above": float("nan")}]}),
        _entry("regression suite case whose gold_above threshold is NaN", 3, SUITE_READERS, 2, "checks[0]", "finite"))

    # -- item 4: pairs longer than the 512 positions of the built-in encoder RMs (tiny-bert, minilm-l6)
    long_rows = [{"prompt": _long_text(650) + f" Question {i}: which is right?", "chosen": "The first.",
                  "rejected": "The second."} for i in range(4)]
    add("long_pairs_encoder.jsonl", _jsonl(*long_rows),
        _entry("valid pairs of about 700 tokens, over the 512 positions of tiny-bert / minilm-l6: the command "
               "clamps max_length to 512 and says so (exit 0), or refuses before any work (exit 1); never an "
               "IndexError", 4, ["train rm", "score", "eval rm"], None, None, "512", expect="clamp_or_error"))

    # -- item 8: files that cannot be read, and rows that must not be read as something else
    rows40 = _jsonl(*({"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": "No."} for i in range(40)))
    whole = gzip.compress(rows40, mtime=0)
    everyone = PAIR_READERS + CONVERT + PROMPT_READERS
    add("truncated.jsonl.gz", whole[: len(whole) // 2],
        _entry("gzip file cut in half (EOFError)", 8, everyone + SUITE_READERS, None, None, "gzip"))
    add("not_gzip.jsonl.gz", _jsonl(GOOD, GOOD2),
        _entry("plain JSON lines named .gz", 8, everyone, None, None, "not a valid gzip file"))
    add("latin1.jsonl", _jsonl(GOOD) + b'{"prompt": "Caf\xe9?", "chosen": "Yes.", "rejected": "No."}\n',
        _entry("non-UTF-8 byte (Latin-1 \\xe9) on line 2", 8, everyone + SUITE_READERS, 2, None, "not UTF-8"))
    add("bom_bad_confidence.csv", b"\xef\xbb\xbfprompt,chosen,rejected,confidence\n"
        b"Name a colour.,Blue.,Seven.,0.9\nName a fruit.,A pear.,A chair.,7\n",
        _entry("CSV with a UTF-8 byte-order mark (Excel) and confidence 7 on line 3: the error must be that one, "
               "not 'prompt: is missing' on every row", 8, PAIR_READERS, 3, "confidence", r"must be in \[0, 1\]",
               must_not_say="is missing"))
    add("csv_extra_cells.csv", b"prompt,chosen,rejected\nName a colour.,Blue.,Seven.\n"
        b"Name a fruit.,A pear, ripe.,A chair.\n",
        _entry("CSV row with more cells than the header (an unquoted comma)", 8, PAIR_READERS + PROMPT_READERS,
               3, "row", "beyond"))
    add("empty.jsonl", b"", _entry("empty file", 8, everyone + SUITE_READERS, None, None,
                                   "no (rows|prompts|cases|pairs)"))
    add("blank_lines.jsonl", b"\n   \n\n", _entry("only blank lines", 8, everyone + SUITE_READERS, None, None,
                                                  "no (rows|prompts|cases|pairs)"))
    add("row_string.jsonl", _jsonl(GOOD, json.dumps("just a string") + "\n"),
        _entry("a row that is a JSON string", 8, PAIR_READERS, 2, "row", "must be a JSON object"))
    add("row_int.jsonl", _jsonl(GOOD, 7),
        _entry("a row that is a JSON number", 8, PAIR_READERS + PROMPT_READERS, 2, None, "(row|prompt)"))
    add("prompt_message_without_role.jsonl", _jsonl(GOOD, {**GOOD2, "prompt": [{"content": "Name a fruit."}]}),
        _entry("a prompt message without a role", 8, PAIR_READERS + PROMPT_READERS, 2, "prompt[0].role", "missing"))
    add("unknown_role.jsonl", _jsonl(GOOD, {**GOOD2, "prompt": [{"role": "human", "content": "Name a fruit."}]}),
        _entry("a prompt message with role 'human' (not one of system, user, assistant, tool)", 8,
               PAIR_READERS + PROMPT_READERS, 2, "prompt[0].role", "unknown role"))
    add("confidence_7.jsonl", _jsonl(GOOD, {**GOOD2, "confidence": 7}),
        _entry("confidence 7 (must be in [0, 1])", 8, PAIR_READERS, 2, "confidence", r"must be in \[0, 1\]"))

    # -- item 9: convert output that `data check` would reject
    share_ok = {"conversations": [{"from": "human", "value": "Name a colour."}],
                "chosen": {"from": "gpt", "value": "Blue."}, "rejected": {"from": "gpt", "value": "Seven."}}
    share_bad = {"conversations": [{"from": "human", "value": "Name a fruit."}],
                 "chosen": {"from": "human", "value": "A pear."}, "rejected": {"from": "gpt", "value": "A chair."}}
    add("sharegpt_chosen_user.json", (json.dumps([share_ok, share_bad], indent=1) + "\n").encode(),
        _entry("ShareGPT row whose chosen turn is from the human", 9, CONVERT, 2, "chosen",
               "must end with an assistant turn"))
    add("trl_mixed_pair_unpaired.jsonl", _jsonl(GOOD, {"prompt": "Say yes.", "completion": "Yes.", "label": True}),
        _entry("TRL file mixing a pair row and an unpaired row", 9,
               ["data check", "data convert", "train rm", "train dpo", "eval rm"], 2, "row", "unpaired"))
    return files


def invocations() -> list[dict]:
    """Path cases. Placeholders: {tmp} (the test's folder), {good} (a valid pairs file in it), {good_csv},
    {suite}; `setup` makes links, copies and a read-only folder first."""
    same_in = "same file as the input"

    def case(name: str, item: int, argv: list[str], fragment: str, setup: list | None = None) -> dict:
        return {"name": name, "issue_item": item, "argv": argv, "fragment": fragment, "setup": setup or []}

    ro = [["readonly_dir", "ro"]]
    unwritable = "(cannot be written|not writable|Permission denied|Operation not permitted|Read-only)"
    return [
        # item 5: an output that is an input, or another output (resolved, through links), even with --force
        case("curate_report_is_output", 5, ["data", "curate", "{good}", "-o", "{tmp}/out.jsonl", "--report",
                                            "{tmp}/out.jsonl"], "same path"),
        case("curate_report_is_input_force", 5, ["data", "curate", "{good}", "-o", "{tmp}/out.jsonl", "--report",
                                                 "{good}", "--force"], same_in),
        case("curate_output_symlink_to_input", 5, ["data", "curate", "{good}", "-o", "{tmp}/link.jsonl", "--force"],
             "replace the input", [["symlink", "link.jsonl", "good.jsonl"]]),
        case("curate_output_hardlink_to_input", 5, ["data", "curate", "{good}", "-o", "{tmp}/hard.jsonl", "--force"],
             same_in, [["hardlink", "hard.jsonl", "good.jsonl"]]),
        case("curate_report_is_test_file", 5, ["data", "curate", "{good}", "-o", "{tmp}/out.jsonl", "--test-file",
                                               "{tmp}/test.jsonl", "--report", "{tmp}/test.jsonl", "--force"],
             same_in, [["copy", "test.jsonl", "good.jsonl"]]),
        case("convert_output_is_input_force", 5, ["data", "convert", "{good}", "-o", "{good}", "--force"], same_in),
        case("convert_output_symlink_to_input", 5, ["data", "convert", "{good}", "-o", "{tmp}/link.jsonl",
                                                    "--force"], same_in, [["symlink", "link.jsonl", "good.jsonl"]]),
        case("convert_skipped_file_is_input", 5, ["data", "convert", "{tmp}/x.jsonl.skipped.jsonl", "-o",
                                                  "{tmp}/x.jsonl", "--force"], same_in,
             [["copy", "x.jsonl.skipped.jsonl", "good.jsonl"]]),
        case("split_output_is_input_force", 5, ["data", "split", "{tmp}/d/train.jsonl", "--test-frac", "0.5", "-o",
                                                "{tmp}/d", "--force"], same_in,
             [["copy", "d/train.jsonl", "good.jsonl"]]),
        case("score_output_is_data_force", 5, ["score", "tiny-bert", "--data", "{good}", "-o", "{good}", "--force"],
             same_in),
        case("score_output_symlink_to_data", 5, ["score", "tiny-bert", "--data", "{good}", "-o", "{tmp}/link.jsonl",
                                                 "--force"], same_in, [["symlink", "link.jsonl", "good.jsonl"]]),
        # item 8: outputs that cannot be written, found before any work
        case("curate_readonly_folder", 8, ["data", "curate", "{good}", "-o", "{tmp}/ro/out.jsonl"], "cannot be written",
             ro),
        case("convert_readonly_folder", 8, ["data", "convert", "{good}", "-o", "{tmp}/ro/new/out.jsonl"],
             "cannot be written", ro),
        case("split_readonly_folder", 8, ["data", "split", "{good}", "--test-frac", "0.5", "-o", "{tmp}/ro"],
             "cannot be written", ro),
        case("score_readonly_folder", 8, ["score", "tiny-bert", "--data", "{good}", "-o", "{tmp}/ro/s.jsonl"],
             "cannot be written", ro),
        case("world_readonly_folder", 8, ["data", "world", "-o", "{tmp}/ro/world", "--num-pairs", "4",
                                          "--num-test-pairs", "2"], "cannot be written", ro),
        case("curate_parent_is_file", 8, ["data", "curate", "{good}", "-o", "{good}/out.jsonl"], "is a file"),
        case("convert_parent_is_file", 8, ["data", "convert", "{good}", "-o", "{good}/out.jsonl"], "is a file"),
        case("score_parent_is_file", 8, ["score", "tiny-bert", "--data", "{good}", "-o", "{good}/s.jsonl"],
             "is a file"),
        case("split_out_is_file", 8, ["data", "split", "{good}", "--test-frac", "0.5", "-o", "{good_csv}"],
             "not a folder"),
        case("world_out_is_file", 8, ["data", "world", "-o", "{good_csv}", "--num-pairs", "4", "--num-test-pairs",
                                      "2"], "not a folder"),
        # item 8, commands owned elsewhere: the output must be checked before the models load and generate
        case("eval_rm_readonly_folder", 8, ["eval", "rm", "tiny-bert", "--data", "{good}", "--json",
                                            "{tmp}/ro/rm.json"], unwritable, ro),
        case("eval_policy_readonly_folder", 8, ["eval", "policy", "tiny-llama", "--prompts", "{good}", "--baseline",
                                                "tiny-llama", "--json", "{tmp}/ro/policy.json", "--max-new-tokens", "2",
                                                "--num-prompts", "1"], unwritable, ro),
        case("eval_regress_readonly_folder", 8, ["eval", "regress", "tiny-llama", "--suite", "{suite}", "--baseline",
                                                 "tiny-llama", "--json", "{tmp}/ro/regress.json", "--max-new-tokens",
                                                 "2"], unwritable, ro),
        case("train_rm_readonly_folder", 8, ["train", "rm", "--model", "tiny-bert", "--data", "{good}", "--out",
                                             "{tmp}/ro/run", "max_steps=1", "report_to=none"], unwritable, ro),
    ]


def manifest(files: dict[str, tuple[bytes, dict]]) -> dict:
    return {"about": "bad-input corpus of issue 16; written by scripts/make_bad_inputs.py (do not edit by hand)",
            "good_rows": [GOOD, GOOD2],
            "files": {name: entry for name, (_, entry) in sorted(files.items())},
            "invocations": invocations()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="compare with the committed corpus; write nothing")
    args = ap.parse_args(argv)
    files = corpus()
    wanted = {name: data for name, (data, _) in files.items()}
    wanted["manifest.json"] = (json.dumps(manifest(files), indent=1) + "\n").encode()
    if args.check:
        stale = [n for n, d in wanted.items() if not (args.out / n).is_file() or (args.out / n).read_bytes() != d]
        extra = sorted(p.name for p in args.out.iterdir() if p.name not in wanted) if args.out.is_dir() else []
        for n in stale + extra:
            print(f"{args.out / n}: {'not what the script writes' if n in stale else 'not written by the script'}",
                  file=sys.stderr)
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in wanted.items():
        (args.out / name).write_bytes(data)
    print(f"wrote {len(files)} files and manifest.json to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
