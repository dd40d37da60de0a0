import gzip
import json

import pytest

from preftune.data.io import iter_raw, read_records, write_rows

ROWS = [
    {"id": "a", "prompt": "hi", "chosen": "x", "rejected": "y", "confidence": 0.5, "close": True},
    {"id": "b", "prompt": [{"role": "user", "content": "q"}], "chosen": "c", "rejected": "d",
     "attributes": {"helpfulness": "chosen"}, "margin": 1.5},
    {"id": "c", "prompt": "p", "chosen": [{"role": "assistant", "content": "e"}], "rejected": "f", "source": "s"},
]


@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz", "d.json", "d.csv", "d.parquet", "dsfolder"])
def test_every_format_round_trips_losslessly(tmp_path, name):
    expected = [r.to_dict() for r in read_records(write_jsonl_rows(tmp_path / "ref.jsonl"))]
    assert write_rows(ROWS, tmp_path / name) == 3
    assert [r.to_dict() for r in read_records(tmp_path / name)] == expected


def write_jsonl_rows(path):
    write_rows(ROWS, path)
    return path


def test_refuses_to_overwrite(tmp_path):
    p = tmp_path / "out.jsonl"
    write_rows(ROWS, p)
    with pytest.raises(ValueError, match="already exists"):
        write_rows(ROWS[:1], p)
    assert len(p.read_text().splitlines()) == 3  # untouched
    write_rows(ROWS[:1], p, overwrite=True)
    assert len(p.read_text().splitlines()) == 1


def test_bad_rows_are_located_and_nothing_loads(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n\n{not json\n" + json.dumps({"prompt": "p", "chosen": "a"}) + "\n")
    raws = list(iter_raw(p))
    assert [r.line for r in raws] == [1, 3, 4]  # the blank line 2 is skipped, numbering kept
    assert raws[1].error.startswith("json: invalid JSON")
    with pytest.raises(ValueError) as e:
        read_records(p)
    msg = str(e.value)
    assert "2 bad row(s)" in msg and f"{p}:3: json" in msg and f"{p}:4: rejected: is missing" in msg


def test_gzip_and_csv_line_numbers(tmp_path):
    g = tmp_path / "x.jsonl.gz"
    with gzip.open(g, "wt") as f:
        f.write(json.dumps(ROWS[0]) + "\n")
    assert read_records(g)[0].id == "a"
    c = tmp_path / "x.csv"
    c.write_text('prompt,chosen,rejected,confidence\np,a,b,0.2\np2,a,a,0.3\n')
    with pytest.raises(ValueError, match=r"x.csv:3: rejected: is identical to chosen"):
        read_records(c)


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="cannot tell the format"):
        list(iter_raw(_touch(tmp_path / "x.txt")))
    with pytest.raises(ValueError, match="no such file"):
        list(iter_raw(tmp_path / "nope.jsonl"))


def _touch(p):
    p.write_text("")
    return p


# ---------------------------------------------------------------- unreadable files (issue 16 item 8)

PAIR_LINE = '{"prompt": "p", "chosen": "a", "rejected": "b"}\n'


def test_truncated_gzip_and_a_gz_that_is_not_gzip_name_the_file(tmp_path):
    whole = gzip.compress((PAIR_LINE * 200).encode())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=rf"^{cut}: the gzip stream ends early, after line \d+"):
        list(iter_raw(cut))
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_text(PAIR_LINE)
    with pytest.raises(ValueError, match=rf"^{plain}: not a valid gzip file"):
        read_records(plain)


def test_non_utf8_byte_is_named_with_line_and_column(tmp_path):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes(PAIR_LINE.encode() + b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n')
    # column 16: the 16th character of line 2 ('{"prompt": "caf' is 15 characters)
    with pytest.raises(ValueError, match=rf"^{p}:2: not UTF-8 text \(byte 0xe9 at column 16\)"):
        list(iter_raw(p))
    csv_p = tmp_path / "latin1.csv"
    csv_p.write_bytes(b"prompt,chosen,rejected\np,a,b\nq,caf\xe9,b\n")
    with pytest.raises(ValueError, match=rf"^{csv_p}:3: not UTF-8"):
        list(iter_raw(csv_p))


def test_byte_order_mark_is_dropped_so_the_first_header_is_prompt(tmp_path):
    p = tmp_path / "excel.csv"
    p.write_bytes(b"\xef\xbb\xbfprompt,chosen,rejected\r\np,a,b\r\nq,c,d\r\n")
    assert [(r.line, r.row) for r in iter_raw(p)] == [(2, {"prompt": "p", "chosen": "a", "rejected": "b"}),
                                                    (3, {"prompt": "q", "chosen": "c", "rejected": "d"})]
    j = tmp_path / "bom.jsonl"
    j.write_bytes(b"\xef\xbb\xbf" + PAIR_LINE.encode())
    assert len(read_records(j)) == 1


def test_csv_cells_beyond_the_header_are_a_row_error(tmp_path):
    p = tmp_path / "extra.csv"
    p.write_text("prompt,chosen,rejected\np,a,b\nq,a pear, ripe,b\n")
    raws = list(iter_raw(p))
    assert raws[0].error is None and raws[1].line == 3 and raws[1].row is None
    assert raws[1].error == "row: 1 cell(s) beyond the 3 columns of the header ('b'); quote cells that hold commas"
    with pytest.raises(ValueError, match=rf"{p}:3: row: 1 cell\(s\) beyond"):
        read_records(p)


def test_huge_integers_are_a_row_error_not_a_crash(tmp_path):
    p = tmp_path / "big.jsonl"
    p.write_text('{"prompt": "p", "chosen": "a", "rejected": "b", "margin": ' + "9" * 5000 + "}\n")
    (r,) = list(iter_raw(p))
    assert r.line == 1 and r.error.startswith("json: unreadable number")


def test_not_a_parquet_file_names_the_file(tmp_path):
    p = tmp_path / "x.parquet"
    p.write_text("hello")
    with pytest.raises(ValueError, match=rf"^{p}: not a readable Parquet file"):
        list(iter_raw(p))


@pytest.mark.parametrize("name", ["o.jsonl", "o.json", "o.csv", "o.parquet"])
def test_write_rows_refuses_nan_and_leaves_no_file(tmp_path, name):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "a", "rejected": "b",
                                                              "score": float("nan")}]
    with pytest.raises(ValueError, match=rf"{tmp_path / name}: row 2: holds a non-finite number"):
        write_rows(rows, tmp_path / name)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its .tmp sibling
