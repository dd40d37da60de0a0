"""The benchmark harness's pure helpers (benchmarks/common.py): the numbers in the result tables."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import common


def test_padding_share_hand_computed():
    # a (2, 4) batch with 5 real tokens: 3 of 8 positions are padding
    assert common.padding_share(5, 8) == pytest.approx(3 / 8)
    assert common.padding_share(8, 8) == 0.0
    assert common.padding_share(0, 0) == 0.0  # nothing computed: no padding, not a division by zero


def test_steady_step_seconds_skips_warmup():
    # steps end at 10 (warm-up, slow), 12, 15, 16: the three steady steps take 2, 3, 1 -> mean 2
    ends = [10.0, 12.0, 15.0, 16.0]
    assert common.steady_step_seconds(ends, warmup=1) == pytest.approx(2.0)
    # two warm-up steps: steps 3 and 4 take 3 and 1
    assert common.steady_step_seconds(ends, warmup=2) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        common.steady_step_seconds([1.0], warmup=1)
    with pytest.raises(ValueError):
        common.steady_step_seconds(ends, warmup=0)


def test_overall_pairs_per_s_counts_the_reference_pass():
    # issue 5's TRL precompute numbers: 32 pairs at 0.078 pairs/s plus a 146 s pass -> about 0.058 pairs/s
    assert common.overall_pairs_per_s(32, 0.078, 146.0) == pytest.approx(32 / (32 / 0.078 + 146.0))
    assert round(common.overall_pairs_per_s(32, 0.078, 146.0), 3) == 0.058
    # no reference pass: the training rate itself
    assert common.overall_pairs_per_s(10, 2.0, 0.0) == pytest.approx(2.0)


def test_ratio_and_fmt_handle_missing_values():
    assert common.ratio(3.0, 1.5) == pytest.approx(2.0)
    assert common.ratio(None, 1.0) is None
    assert common.ratio(1.0, 0) is None
    assert common.fmt(None) == "-"
    assert common.fmt(math.nan) == "nan"
    assert common.fmt(0.123456) == "0.123"
    assert common.fmt(2596.4) == "2,596"


def test_markdown_table_shape():
    text = common.markdown_table(["a", "b"], [[1, 0.5], ["x", None]])
    lines = text.splitlines()
    assert lines[0] == "| a | b |"
    assert lines[1] == "|---|---|"
    assert lines[2] == "| 1 | 0.5 |"
    assert lines[3] == "| x | - |"


def test_load_pairs_is_the_first_rows(tmp_path):
    import gzip
    import json

    path = tmp_path / "pairs.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for i in range(5):
            f.write(json.dumps({"prompt": f"p{i}", "chosen": "c", "rejected": "r", "extra": i}) + "\n")
    rows = common.load_pairs(3, path)
    assert [r["prompt"] for r in rows] == ["p0", "p1", "p2"]
    assert set(rows[0]) == {"prompt", "chosen", "rejected"}
    with pytest.raises(ValueError):
        common.load_pairs(6, path)
    conv = common.as_conversation(rows[0])
    assert conv["prompt"] == [{"role": "user", "content": "p0"}]
    assert conv["chosen"] == [{"role": "assistant", "content": "c"}]
