"""The real drawing (matplotlib): every plot function returns a palette PNG of the stated size, and
values that cannot be drawn (NaN, inf, 1e308) are left out and counted, never a crash."""

from __future__ import annotations

import io
import struct

import pytest
from report_testlib import dpo_rows

from preftune.report import plots

# a plot that only draws with overflow warnings is a plot that draws nonsense
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning", "error::UserWarning")


@pytest.fixture(autouse=True)
def real_png(monkeypatch):
    monkeypatch.undo()  # undo conftest's stand-in renderer


def size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])  # PNG IHDR: width, height


def test_every_plot_function_renders_a_png():
    from PIL import Image

    group = plots.group_series(plots.extract_series(dpo_rows(n=12)))[0][1]
    s = plots.extract_series(dpo_rows(n=12))["train/loss"]
    pngs = [plots.plot_group(group), plots.plot_reward_histograms([1.0, 2.0], [0.0, 0.5]),
            plots.plot_reliability([{"mean_confidence": 0.3, "accuracy": 0.2, "count": 3}], 0.1),
            plots.plot_reward_vs_length(([10, 20], [1.0, 2.0]), ([5, 9], [0.1, 0.2]), 0.3),
            plots.plot_bars(["a", "b"], [0.5, 0.7], "t", "y"),
            plots.plot_overoptimisation([1, 2, 4], [0.1, 0.5, 0.9], [0.5, 0.6, 0.55], "N"),
            plots.plot_overlay([("A", s), ("B", s)], "loss", "loss"),
            plots.plot_histograms([("x", [1, 2, 3]), ("y", [2, 3, 4])], "t", "chars"),
            plots.plot_ranges([("chosen", {"min": 1, "median": 5, "mean": 6, "p90": 9, "max": 20})], "t", "chars")]
    # 6.4 x 3.4 inches at 90 dpi; the reliability diagram is 6.4 x 4.4, the range plot 6.4 x (0.55 n + 1.4)
    assert [size(p) for p in pngs] == [(576, 306)] * 2 + [(576, 396)] + [(576, 306)] * 5 + [(576, 175)]
    assert all(Image.open(io.BytesIO(p)).mode == "P" for p in pngs)  # 256-colour palette: ~3x smaller


def test_values_that_cannot_be_drawn_are_left_out_and_counted():
    nan, inf = float("nan"), float("inf")
    assert plots.drawable([1, 2, 3, 4, 5], [1.0, nan, inf, 1e308, 2.0]) == ([1, 5], [1.0, 2.0], 3)
    group = plots.PlotGroup("loss", "Loss", "loss", (plots.Series("train/loss", (1, 2, 3), (1e308, -inf, 0.5)),))
    rendered = [plots.plot_group(group), plots.plot_histograms([("a", [1e308, -1e308, 1.0, 2.0])], "t", "x"),
                plots.plot_bars(["a", "b"], [nan, 1e308], "t", "y"),
                plots.plot_overoptimisation([1, 2], [nan, 1.0], [inf, 0.5], "N"),
                plots.plot_reward_vs_length(([1, inf], [1.0, 2.0]), ([1e308], [0.0]), None),
                plots.plot_reward_histograms([inf], [nan])]
    assert all(size(p)[0] == 576 for p in rendered)
