"""The audit page in a real headless browser (Debian's chromium, as the run report's test): it loads
without console errors, both bias figures draw, the tables hold the JSON report's rows, and markup in a
labeller's name stays text. chromium missing: SKIP locally, FAIL in CI."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess

import pytest

from preftune.cli import main
from preftune.data.io import write_rows
from preftune.world.generate import generate_world

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000"]


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail("chromium is not installed; CI must install it (scripts/install_browser.sh)")
        pytest.skip("chromium is not installed (run scripts/install_browser.sh)")
    return exe


def test_audit_page_renders(chromium, tmp_path, capsys):
    w = generate_world(60, seed=0, num_test_pairs=1, labels_per_pair=3, honeypot_share=0.3)
    for r in w.train:
        if r.annotator == "noisy-1":
            r.annotator = "<b data-pwned>noisy-1</b>"
    data = tmp_path / "train.jsonl"
    write_rows(w.train, data)
    page, out = tmp_path / "audit.html", tmp_path / "audit.json"
    assert main(["data", "audit", str(data), "--folds", "3", "--json", str(out), "--html", str(page)]) == 0
    capsys.readouterr()
    rep = json.loads(out.read_text())
    proc = subprocess.run([chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln] == []
    dom = proc.stdout
    root = dict(re.findall(r'(data-[\w-]+)="([^"]*)"', re.search(r"<html([^>]*)>", dom).group(1)))
    assert root == {"data-figures": "2", "data-drawn-figures": "2", "data-errors": "", "data-report-ok": "1"}
    annot = re.search(r'<table id="annotators-table".*?</table>', dom, re.DOTALL).group(0)
    names = [html.unescape(x) for x in re.findall(r"<tr><td data-v=\"[^\"]*\">([^<]*)</td>", annot)]
    assert names == [a["annotator"] for a in rep["annotators"]]  # the injected name is shown as text
    sus = re.search(r'<table id="suspicious-table".*?</table>', dom, re.DOTALL).group(0)
    shown = [float(x) for x in re.findall(r"<tr><td[^>]*>[^<]*</td><td[^>]*>[^<]*</td><td data-v=\"([^\"]+)\"", sus)]
    want = sorted((it["suspicion"] for it in rep["items"] if it["suspicion"] is not None), reverse=True)
    assert shown == pytest.approx(want[: len(shown)]) and len(shown) == min(300, len(want))
