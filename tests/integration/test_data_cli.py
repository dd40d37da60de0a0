"""`preftune data check | stats | curate | split` through preftune.cli.main: output, exit codes, files."""

import gzip
import json
import shutil
from pathlib import Path

import pytest

from preftune.cli import main
from preftune.data.curate import prompt_key, token_lengths
from preftune.data.io import iter_raw, read_records, write_rows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- check

def test_check_reports_all_five_problems_with_lines(capsys):
    f = str(FIXTURES / "five_problems.jsonl")
    code, out, _ = run(capsys, "data", "check", f)
    assert code == 1
    lines = out.strip().splitlines()
    assert [ln.split(": ")[0] for ln in lines[:5]] == [f"{f}:{n}" for n in (2, 3, 4, 5, 6)]
    assert lines[0].startswith(f"{f}:2: json: invalid JSON")
    assert lines[1] == f"{f}:3: rejected: is missing"
    assert lines[2] == f"{f}:4: rejected: is identical to chosen"
    assert lines[3].startswith(f"{f}:5: prompt[0].role: unknown role 'human'")
    assert lines[4] == f"{f}:6: confidence: must be in [0, 1], got 1.7"
    assert lines[5] == f"{f}: 6 rows, 5 with problems (5 problems)"


def test_check_clean_file_exits_0(capsys):
    f = str(FIXTURES / "curate_pairs.jsonl")
    code, out, _ = run(capsys, "data", "check", f)
    assert code == 0 and out == f"{f}: 12 rows, 0 with problems\n"


def test_check_max_problems_and_json(capsys):
    f = str(FIXTURES / "five_problems.jsonl")
    code, out, _ = run(capsys, "data", "check", f, "--max-problems", "2")
    assert code == 1
    assert out.splitlines()[2] == "... and 3 more problem(s) (raise --max-problems to see them)"
    code, out, _ = run(capsys, "data", "check", f, "--json")
    d = json.loads(out)
    assert code == 1 and d["num_rows"] == 6 and d["num_rows_with_problems"] == 5
    assert [p["line"] for p in d["problems"]] == [2, 3, 4, 5, 6]


def test_check_missing_file(capsys, tmp_path):
    code, _, err = run(capsys, "data", "check", str(tmp_path / "nope.jsonl"))
    assert code == 1 and "nope.jsonl: no such file" in err


# ---------------------------------------------------------------- stats

def test_stats_text_and_json(capsys):
    f = str(FIXTURES / "curate_pairs.jsonl")
    code, out, _ = run(capsys, "data", "stats", f)
    assert code == 0
    assert out.startswith(f"{f}: 12 rows (12 pair)")
    assert "annotators: r1 5, r2 4, r3 3" in out
    code, out, _ = run(capsys, "data", "stats", f, "--json")
    d = json.loads(out)
    assert code == 0 and d["file"] == f and d["kinds"] == {"pair": 12}
    # repeated pairs: lines 1-2 (agree), 3-4 (both ways), 5-7 (2:1) -> 2 of 3 disagree
    assert d["disagreement"]["num_repeated_pairs"] == 3 and d["disagreement"]["num_disagreeing_pairs"] == 2
    assert d["disagreement"]["per_annotator"]["r3"] == {"num_compared": 1, "num_disagree": 1, "share": 1.0}


def test_stats_rejects_invalid_file(capsys):
    code, _, err = run(capsys, "data", "stats", str(FIXTURES / "five_problems.jsonl"))
    assert code == 1 and "5 bad row(s)" in err and "five_problems.jsonl:3: rejected: is missing" in err


# ---------------------------------------------------------------- curate

def test_curate_writes_kept_rows_and_full_report(capsys, tmp_path):
    out = tmp_path / "clean.jsonl"
    code, text, _ = run(capsys, "data", "curate", str(FIXTURES / "curate_pairs.jsonl"), "-o", str(out),
                        "--test-file", str(FIXTURES / "test_prompts.jsonl"))
    assert code == 0
    assert "kept 4 of 12 rows" in text and "removed 8:" in text
    kept = [r.row for r in iter_raw(out)]
    assert [r["id"] for r in kept] == ["p1", "p5", "p10", "p12"]
    assert kept[0]["prompt"] == "What is the capital of France?"  # rows written as they were read
    rep = json.loads((tmp_path / "clean.jsonl.report.json").read_text())
    assert rep["num_input"] == 12 and rep["num_kept"] + rep["num_removed"] == 12
    assert [(r["line"], r["reason"]) for r in rep["removed"]] == [
        (2, "exact_duplicate"), (3, "conflict_no_majority"), (4, "conflict_no_majority"),
        (6, "conflict_minority"), (7, "exact_duplicate"), (8, "identical_responses"), (9, "test_leak"),
        (11, "near_duplicate")]
    assert rep["removed"][-1]["duplicate_of"] == 10 and rep["removed"][-1]["id"] == "p11"
    assert sum(rep["counts"].values()) == 8


def test_curate_refuses_to_overwrite(capsys, tmp_path):
    out = tmp_path / "clean.jsonl"
    out.write_text("precious\n")
    args = ["data", "curate", str(FIXTURES / "curate_pairs.jsonl"), "-o", str(out)]
    code, _, err = run(capsys, *args)
    assert code == 1 and "already exists; pass --force" in err and out.read_text() == "precious\n"
    code, _, _ = run(capsys, *args, "--force")
    assert code == 0 and len(read_records(out)) == 5  # no test file: line 9 is kept too
    code, _, err = run(capsys, "data", "curate", str(out), "-o", str(out), "--force")
    assert code == 1 and "replace the input" in err


def test_curate_invalid_rows_stop_unless_dropped(capsys, tmp_path):
    src, out = str(FIXTURES / "mixed_valid_invalid.jsonl"), tmp_path / "o.jsonl"
    code, _, err = run(capsys, "data", "curate", src, "-o", str(out))
    assert code == 1 and "2 invalid row(s); nothing was written" in err
    assert f"{src}:2: chosen: is empty" in err and f"{src}:4: json: invalid JSON" in err
    assert not out.exists()
    code, text, _ = run(capsys, "data", "curate", src, "-o", str(out), "--drop-invalid")
    assert code == 0 and "kept 2 of 4 rows" in text
    rep = json.loads(Path(str(out) + ".report.json").read_text())
    assert [(r["line"], r["reason"]) for r in rep["removed"]] == [(2, "invalid"), (4, "invalid")]
    assert rep["removed"][0]["detail"] == "chosen: is empty"
    assert rep["num_input"] == 4 and rep["counts"] == {"invalid": 2}


def test_curate_bad_options(capsys, tmp_path):
    src = str(FIXTURES / "curate_pairs.jsonl")
    code, _, err = run(capsys, "data", "curate", src, "-o", str(tmp_path / "o.jsonl"), "--max-length", "10")
    assert code == 1 and "--max-length needs --tokenizer" in err
    code, _, err = run(capsys, "data", "curate", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.jsonl"))
    assert code == 1 and "missing.jsonl: no such file" in err


def test_curate_over_length_with_real_tokenizer(capsys, tmp_path):
    from preftune.models import load_tokenizer

    tok = load_tokenizer("tiny-llama")
    src = FIXTURES / "curate_pairs.jsonl"
    out = tmp_path / "o.jsonl"
    code, _, _ = run(capsys, "data", "curate", str(src), "-o", str(out), "--tokenizer", "tiny-llama",
                     "--max-length", "20", "--near-dup-threshold", "1")
    assert code == 0
    rep = json.loads(Path(str(out) + ".report.json").read_text())
    assert rep["tokenizer"] == "tiny-llama" and rep["max_length"] == 20
    over = {r["line"] for r in rep["removed"] if r["reason"] == "over_length"}
    lengths = token_lengths(read_records(src), tok)
    assert over and over == {i + 1 for i, n in enumerate(lengths) if n > 20 and i + 1 != 8}  # 8: identical
    # stats in the same model's tokens
    code, out, _ = run(capsys, "data", "stats", str(src), "--json", "--tokenizer", "tiny-llama")
    d = json.loads(out)
    assert code == 0 and d["length_units"] == ["tokens"]
    prompt_tokens = [len(tok(r.prompt[0]["content"], add_special_tokens=False)["input_ids"])
                     for r in read_records(src)]
    assert d["lengths"]["prompt"]["tokens"]["max"] == max(prompt_tokens)


# ---------------------------------------------------------------- split

def _pairs_file(tmp_path, n=200, name="pairs.jsonl"):
    p = tmp_path / name
    rows = [{"id": str(i), "prompt": f"prompt {i // 3}", "chosen": f"good {i}", "rejected": f"bad {i}"}
            for i in range(n)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_split_writes_both_files_without_prompt_overlap(capsys, tmp_path):
    src = _pairs_file(tmp_path)
    code, out, _ = run(capsys, "data", "split", str(src), "--test-frac", "0.25", "-o", str(tmp_path / "s"))
    assert code == 0
    train, test = read_records(tmp_path / "s" / "train.jsonl"), read_records(tmp_path / "s" / "test.jsonl")
    assert len(train) + len(test) == 200 and abs(len(test) - 50) <= 2
    assert not ({prompt_key(r) for r in train} & {prompt_key(r) for r in test})
    assert out.splitlines()[1].startswith(f"test:  {len(test)} rows")
    code, _, _ = run(capsys, "data", "split", str(src), "--test-frac", "0.25", "-o", str(tmp_path / "s2"))
    assert (tmp_path / "s2" / "test.jsonl").read_text() == (tmp_path / "s" / "test.jsonl").read_text()


def test_split_keeps_the_input_format_and_refuses_overwrite(capsys, tmp_path):
    src = _pairs_file(tmp_path, 30)
    csv_src = tmp_path / "pairs.csv"
    write_rows([r.row for r in iter_raw(src)], csv_src)
    code, _, _ = run(capsys, "data", "split", str(csv_src), "--test-frac", "0.3", "-o", str(tmp_path / "s"))
    assert code == 0 and (tmp_path / "s" / "train.csv").exists() and (tmp_path / "s" / "test.csv").exists()
    code, _, err = run(capsys, "data", "split", str(csv_src), "--test-frac", "0.3", "-o", str(tmp_path / "s"))
    assert code == 1 and "train.csv already exists; pass --force" in err
    code, _, _ = run(capsys, "data", "split", str(csv_src), "--test-frac", "0.3", "-o", str(tmp_path / "s"),
                     "--force")
    assert code == 0


@pytest.mark.parametrize("frac,msg", [("0", "strictly between 0 and 1"), ("0.01", "leaves a split empty")])
def test_split_bad_fraction(capsys, tmp_path, frac, msg):
    src = _pairs_file(tmp_path, 6)
    code, _, err = run(capsys, "data", "split", str(src), "--test-frac", frac, "-o", str(tmp_path / "s"))
    assert code == 1 and msg in err and not (tmp_path / "s" / "train.jsonl").exists()


def test_split_rejects_invalid_rows(capsys, tmp_path):
    src = str(FIXTURES / "five_problems.jsonl")
    code, _, err = run(capsys, "data", "split", src, "--test-frac", "0.5", "-o", str(tmp_path / "s"))
    assert code == 1 and "5 invalid row(s)" in err and "--drop-invalid" in err


# ---------------------------------------------------------------- issue 16: empty inputs, outputs, OS errors

def test_curate_on_an_empty_file_or_nothing_valid_exits_1_and_writes_nothing(capsys, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, _, err = run(capsys, "data", "curate", str(empty), "-o", str(tmp_path / "o.jsonl"))
    assert code == 1 and err == f"preftune: error: {empty}: no rows; nothing was written\n"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a"}\n')
    code, _, err = run(capsys, "data", "curate", str(bad), "-o", str(tmp_path / "o.jsonl"), "--drop-invalid")
    assert code == 1 and f"{bad}:1: rejected: is missing" in err and "no valid row is left" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "empty.jsonl"]


def test_curate_report_on_the_output_or_the_input_is_refused_and_the_input_survives(capsys, tmp_path):
    src = tmp_path / "in.jsonl"
    shutil.copyfile(FIXTURES / "curate_pairs.jsonl", src)
    before = src.read_bytes()
    code, _, err = run(capsys, "data", "curate", str(src), "-o", str(tmp_path / "o.jsonl"), "--report",
                       str(tmp_path / "o.jsonl"))
    assert code == 1 and "-o and --report are the same path" in err
    code, _, err = run(capsys, "data", "curate", str(src), "-o", str(tmp_path / "o.jsonl"), "--report", str(src),
                       "--force")
    assert code == 1 and "--report is the same file as the input IN" in err
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_split_out_that_is_a_file_or_holds_the_input(capsys, tmp_path):
    src = _pairs_file(tmp_path, n=10)
    code, _, err = run(capsys, "data", "split", str(src), "--test-frac", "0.5", "-o", str(src))
    assert code == 1 and "-o exists and is a file, not a folder" in err
    inside = tmp_path / "d" / "train.jsonl"
    inside.parent.mkdir()
    shutil.copyfile(src, inside)
    code, _, err = run(capsys, "data", "split", str(inside), "--test-frac", "0.5", "-o", str(inside.parent), "--force")
    assert code == 1 and "train is the same file as the input IN" in err
    assert sorted(p.name for p in inside.parent.iterdir()) == ["train.jsonl"]


def _raising(exc):
    def cmd(args):
        raise exc
    return cmd


@pytest.mark.parametrize(("exc", "line"), [
    (PermissionError(13, "Permission denied", "/x/out.jsonl"), "/x/out.jsonl: Permission denied"),
    (IsADirectoryError(21, "Is a directory", "/x/d"), "/x/d: Is a directory"),
    (NotADirectoryError(20, "Not a directory", "/x/f/o"), "/x/f/o: Not a directory"),
    (OSError(30, "Read-only file system", "/ro/o"), "/ro/o: Read-only file system"),
    (EOFError("Compressed file ended before the end-of-stream marker was reached"),
     "the input ends early (a truncated file?): Compressed file ended before the end-of-stream marker was reached"),
    (gzip.BadGzipFile("Not a gzipped file (b'{\"')"), "not a valid gzip file (Not a gzipped file (b'{\"'))"),
    (UnicodeDecodeError("utf-8", b"ab\xff", 2, 3, "invalid start byte"),
     "not UTF-8 text (invalid start byte at byte 2): save the file as UTF-8"),
])
def test_os_errors_print_one_line_and_exit_1(monkeypatch, capsys, exc, line):
    from preftune.data import commands

    monkeypatch.setattr(commands, "cmd_stats", _raising(exc))
    code, out, err = run(capsys, "data", "stats", "whatever.jsonl")
    assert (code, out, err) == (1, "", f"preftune: error: {line}\n")


def test_yaml_errors_name_file_line_and_column(monkeypatch, capsys, tmp_path):
    import yaml

    from preftune.data import commands

    cfg = tmp_path / "bad.yaml"
    cfg.write_text("lr: 1\nbeta: [0.1\n")

    def load(args):
        with open(cfg) as f:
            yaml.safe_load(f)

    monkeypatch.setattr(commands, "cmd_stats", load)
    code, _, err = run(capsys, "data", "stats", "x.jsonl")
    assert code == 1 and err.startswith(f"preftune: error: {cfg}:3:1: invalid YAML: expected ',' or ']'")


def test_an_os_error_without_a_file_is_a_bug_and_keeps_its_traceback(monkeypatch):
    from preftune.data import commands

    monkeypatch.setattr(commands, "cmd_stats", _raising(OSError("no file named")))
    with pytest.raises(OSError, match="no file named"):
        main(["data", "stats", "x.jsonl"])
