"""Render the report in a real headless browser (Debian's chromium) and check every plot drew.

The page carries a tiny inline checker (preftune.report.html.DRAW_CHECK) that, on load, marks each
`figure.plot` with data-drawn="1" when its image decoded and sets data-report-ok on <html>; the
browser's DOM dump is parsed here. The page itself never writes to the console, so any console line
in chromium's log is a failure. A deliberately broken page checks that this test can fail.

chromium missing: SKIP locally, FAIL in CI (CI=true), because CI installs it with
scripts/install_browser.sh.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from preftune.report.html import build_report, write_report
from preftune.report.run import load_run

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and Path("/usr/bin/chromium").exists():
        exe = "/usr/bin/chromium"
    if exe is None:
        reason = "chromium is not installed (run scripts/install_browser.sh)"
        if _in_ci():
            pytest.fail(f"{reason}; CI must install it")
        pytest.skip(reason)
    return exe


def render_dom(chromium: str, page: Path, tmp: Path) -> tuple[str, list[str]]:
    """(DOM after the load event, console lines chromium logged) for a local HTML file."""
    profile = tmp / f"profile-{page.stem}"
    proc = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    return proc.stdout, console


def drawn_state(dom: str) -> tuple[dict[str, str], dict[str, str]]:
    """(attributes the checker set on <html>, data-plot name -> data-drawn of each figure)."""
    root = re.search(r"<html([^>]*)>", dom).group(1)
    attrs = dict(re.findall(r'(data-[\w-]+)="([^"]*)"', root))
    figures = {}
    for tag in re.findall(r"<figure[^>]*>", dom):
        name = re.search(r'data-plot="([^"]*)"', tag).group(1)
        figures[name] = (re.search(r'data-drawn="([^"]*)"', tag) or [None, "missing"])[1]
    return attrs, figures


@pytest.mark.parametrize("run_name, num_figures", [("dpo_full", 17), ("metrics_only", 2)])
def test_every_plot_draws_and_the_console_stays_clean(chromium, tmp_path, run_name, num_figures):
    out = write_report(RUNS / run_name, tmp_path / f"{run_name}.html")
    dom, console = render_dom(chromium, out, tmp_path)
    attrs, figures = drawn_state(dom)
    assert console == []
    assert len(figures) == num_figures == out.read_text().count("<figure class='plot'")
    assert all(v == "1" for v in figures.values()), figures
    assert attrs == {"data-figures": str(num_figures), "data-drawn-figures": str(num_figures),
                     "data-errors": "", "data-report-ok": "1"}


def test_a_broken_page_is_caught(chromium, tmp_path):
    page = build_report(load_run(RUNS / "metrics_only"))
    # corrupt the first image and add a failing script: both checks must notice
    page = page.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
    page = page.replace("</body>", "<script>notDefinedAnywhere();</script></body>")
    bad = tmp_path / "bad.html"
    bad.write_text(page)
    dom, console = render_dom(chromium, bad, tmp_path)
    attrs, figures = drawn_state(dom)
    assert sorted(figures.values()) == ["0", "1"]
    assert attrs["data-report-ok"] == "0" and attrs["data-drawn-figures"] == "1"
    assert "notDefinedAnywhere is not defined" in attrs["data-errors"]
    assert any("notDefinedAnywhere" in ln for ln in console)
