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
