#!/usr/bin/env python
"""Screenshot the top of a run's HTML report with headless chromium (the README's picture).

    python scripts/report_screenshot.py quickstart_out/dpo            # -> docs/report_screenshot.png
    python scripts/report_screenshot.py RUN_OR_PAGE -o out.png --width 1280 --height 1400

RUN_OR_PAGE is a run folder (its report.html is used; written first with `preftune report RUN` when
it is missing, or always with --rewrite) or an .html file. Needs chromium (scripts/install_browser.sh).
An existing output is only replaced with --force. Exits non-zero with a message on failure.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=5000", "--force-device-scale-factor=1"]


def find_chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        raise SystemExit("report_screenshot: chromium not found (run scripts/install_browser.sh)")
    return exe


def page_of(target: Path, rewrite: bool) -> Path:
    if target.is_file():
        return target
    if not target.is_dir():
        raise SystemExit(f"report_screenshot: {target} is neither a run folder nor an HTML file")
    page = target / "report.html"
    if rewrite or not page.is_file():
        from preftune.report.html import write_report

        write_report(target)
    return page


def screenshot(page: Path, out: Path, width: int, height: int) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)  # so that a failed run cannot leave the old picture looking new
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([find_chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                               f"--screenshot={out.resolve()}", page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0 or not out.is_file():
        raise SystemExit(f"report_screenshot: chromium failed (exit {proc.returncode}): {proc.stderr[-1500:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="run folder or report .html file")
    p.add_argument("-o", "--out", default=str(REPO / "docs" / "report_screenshot.png"), help="PNG to write")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=1400, help="pixels of the page's top to capture")
    p.add_argument("--rewrite", action="store_true", help="rewrite RUN/report.html first")
    p.add_argument("--force", action="store_true", help="replace an existing PNG")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise SystemExit(f"report_screenshot: {out} exists; pass --force to replace it")
    path = screenshot(page_of(Path(args.target), args.rewrite), out, args.width, args.height)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
