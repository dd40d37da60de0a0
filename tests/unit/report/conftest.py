import pytest
from report_testlib import TINY_PNG

from preftune.report import plots


@pytest.fixture(autouse=True)
def fast_png(monkeypatch):
    """Most report tests swap the PNG renderer for a constant 1x1 PNG (the HTML does not depend on
    the pixels, and real rendering costs ~50 ms a figure); test_plots and the browser test draw."""
    monkeypatch.setattr(plots, "_render", lambda draw, size=None, dpi=None: TINY_PNG)
