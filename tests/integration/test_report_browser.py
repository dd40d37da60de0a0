"""Render every kind of report (DPO, RM, SFT, metrics only, compare) in a real headless browser
(Debian's chromium) and check what a reader would see.

The page carries a tiny inline checker (preftune.report.html.DRAW_CHECK) that, on load, marks each
`figure.plot` with data-drawn="1" when its image decoded and sets data-report-ok on <html>; the
browser's DOM dump is parsed here. For each page: every plot drew, the console stayed empty, every
number in the headline equals the eval JSON (or metrics.jsonl row) it is tagged with to the digits
shown, no text reads like a Python repr, and the markup injected into a fixture answer stayed text
(had it run, <html> would carry data-pwned). A deliberately broken page checks the test can fail.

chromium missing: SKIP locally, FAIL in CI (CI=true), because CI installs it with
scripts/install_browser.sh.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from preftune.report import shapes
from preftune.report.compare import write_compare
from preftune.report.html import build_report, write_report
from preftune.report.run import load_run

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "tests" / "fixtures" / "runs"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
# figures each fixture's page draws (counted from its data; see make_fixtures.py):
# dpo_full: 9 training groups (loss, rewards, margin, accuracy, logps, kl, grad_norm, lr, lengths) + wins/ties/
#   losses + answer lengths + win rate by length + over-optimisation + data lengths = 14; dpo_ipo: the same
#   without guards = 13; rm_full: 6 training groups (loss, rewards, margin, accuracy, grad_norm, lr) + reward
#   histogram + pair lengths + reliability + reward vs length + accuracy by length + data lengths = 12;
#   sft_full: loss, ppl, grad_norm, lr = 4; metrics_only: loss, lr = 2; rl_full: 15 training groups (reward,
#   reward components, kl, kl_coef, entropy, completion length, tied groups, truncated, clip, reward std, loss,
#   grad_norm, lr, samples/s, rollout share) + reward vs KL + the guard's proxy vs judge = 17
FIGURES = {"dpo_full": 14, "dpo_ipo": 13, "rm_full": 12, "sft_full": 4, "metrics_only": 2, "rl_full": 17}


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


def rendered_text(dom: str) -> str:
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", dom.split("<body", 1)[-1], flags=re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def headline_numbers(dom: str, section: str = "headline") -> list[tuple[dict, str]]:
    """(data-* attributes, shown text) of every tagged number in a section of the dumped DOM."""
    part = re.search(rf'<section id="{section}">(.*?)</section>', dom, re.DOTALL).group(1)
    out = []
    for attrs, text in re.findall(r'<span class="num"([^>]*)>([^<]*)</span>', part):
        out.append((dict(re.findall(r'data-([\w-]+)="([^"]*)"', attrs)), html.unescape(text)))
    return out


def source_value(run_dir: Path, attrs: dict) -> float:
    """The number a tag names: a key path of RUN/eval/SRC.json, or a metrics.jsonl value at a step."""
    if attrs["src"] == "metrics":
        rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        hits = [r[attrs["key"]] for r in rows if attrs["key"] in r and float(r.get("step", -1)) == float(attrs["step"])]
        assert len(hits) == 1, attrs
        return float(hits[0])
    value = shapes.get_path(json.loads((run_dir / "eval" / f"{attrs['src']}.json").read_text()), attrs["key"])
    assert isinstance(value, (int, float)), attrs
    return float(value)


def assert_shown_equals(shown: str, value: float, where: str) -> None:
    """The shown text is the value rounded to the digits shown: |shown - value| <= half a unit in the
    last place shown."""
    d = Decimal(shown.replace("−", "-"))
    half = Decimal(5) * Decimal(10) ** (d.as_tuple().exponent - 1)
    assert abs(float(d) - value) <= float(half) * (1 + 1e-9), f"{where}: shown {shown}, file has {value}"


def check_page(chromium: str, page: Path, tmp: Path, num_figures: int) -> str:
    dom, console = render_dom(chromium, page, tmp)
    attrs, figures = drawn_state(dom)
    assert console == []
    assert len(figures) == num_figures == page.read_text().count("<figure class='plot'")
    assert all(v == "1" for v in figures.values()), figures
    assert attrs == {"data-figures": str(num_figures), "data-drawn-figures": str(num_figures),
                     "data-errors": "", "data-report-ok": "1"}  # and no data-pwned: injected markup never ran
    text = rendered_text(dom)
    assert "{'" not in text and "[{" not in text
    return dom


@pytest.mark.parametrize("run_name", list(FIGURES))
def test_each_report_draws_and_its_headline_equals_the_files(chromium, tmp_path, run_name):
    out = write_report(RUNS / run_name, tmp_path / f"{run_name}.html")
    dom = check_page(chromium, out, tmp_path, FIGURES[run_name])
    numbers = headline_numbers(dom)
    for attrs, shown in numbers:
        assert_shown_equals(shown, source_value(RUNS / run_name, attrs), f"{run_name} {attrs}")
    expected = {"dpo_full": {"win_rate", "win_rate_ci95.0", "win_rate_ci95.1", "wins", "ties", "losses", "lc_win_rate",
                             "kl_k3", "num_regressions", "num_cases"},
                "rm_full": {"accuracy", "length_baseline_accuracy", "accuracy_chosen_shorter", "ece",
                            "reward_length_corr.spearman"},
                "sft_full": {"eval/loss", "eval/ppl", "train/loss"},
                "rl_full": {"eval/reward", "eval/proxy", "train/kl", "train/tied_groups", "train/completion_length",
                            "flag.x"}}.get(run_name, set())
    assert expected <= {a["key"] for a, _ in numbers}


def test_injected_markup_in_an_answer_stays_text(chromium, tmp_path):
    out = write_report(RUNS / "dpo_full", tmp_path / "dpo.html")
    dom, _ = render_dom(chromium, out, tmp_path)
    assert "data-pwned" not in re.search(r"<html[^>]*>", dom).group(0)
    answers = rendered_text(re.search(r'<section id="answers">(.*?)</section>', dom, re.DOTALL).group(1))
    assert "<script>document.documentElement.setAttribute('data-pwned', '1')</script><img src=x" in answers


def test_the_filters_show_only_the_chosen_rows(chromium, tmp_path):
    """Choosing "model wins" in the answers' verdict box leaves exactly the win rows visible."""
    page = build_report(load_run(RUNS / "dpo_full"))
    probe = ("<script>window.addEventListener('load',function(){"
             "var s=document.querySelector(\"[data-filter='outcome']\");"
             "s.value='win';s.dispatchEvent(new Event('change'));var rows=document.getElementById('answers-table')"
             ".tBodies[0].rows,v=[];for(var i=0;i<rows.length;i++){if(!rows[i].hidden){v.push(rows[i].getAttribute("
             "'data-outcome'));}}document.documentElement.setAttribute('data-visible',v.join(','));"
             "document.documentElement.setAttribute('data-shown',document.querySelector('.shown').textContent);});</script>")
    f = tmp_path / "filtered.html"
    f.write_text(page.replace("</body>", probe + "</body>"))
    dom, console = render_dom(chromium, f, tmp_path)
    root = dict(re.findall(r'(data-[\w-]+)="([^"]*)"', re.search(r"<html([^>]*)>", dom).group(1)))
    wins = json.loads((RUNS / "dpo_full" / "eval" / "policy.json").read_text())["wins"]
    assert root["data-visible"].split(",") == ["win"] * wins and root["data-shown"] == f"{wins} of 40 shown"
    assert console == []


def test_compare_page_draws_and_its_numbers_equal_each_runs_files(chromium, tmp_path):
    dirs = [RUNS / "dpo_full", RUNS / "dpo_ipo", RUNS / "sft_full"]
    out = write_compare(dirs, tmp_path / "compare.html")
    # one overlay per metric any run logged: the 12 DPO metrics, and eval/loss, eval/ppl of the SFT run
    dom = check_page(chromium, out, tmp_path, 14)
    numbers = headline_numbers(dom)
    assert {a["run"] for a, _ in numbers} == {"0", "1", "2"}
    for attrs, shown in numbers:
        assert_shown_equals(shown, source_value(dirs[int(attrs["run"])], attrs), f"compare {attrs}")
    assert len(re.findall(r'<tr id="compare-\d+"', dom)) == 40


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


def test_the_screenshot_script_captures_the_top_of_a_report(chromium, tmp_path):
    from PIL import Image

    run = tmp_path / "run"
    shutil.copytree(RUNS / "dpo_full", run)
    out = tmp_path / "shot.png"
    cmd = [sys.executable, str(REPO / "scripts" / "report_screenshot.py"), str(run), "-o", str(out), "--height", "900"]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out) and (run / "report.html").is_file()  # written since it was missing
    img = Image.open(out).convert("RGB")
    assert img.size == (1280, 900)
    # the verdict's green band (#e6f4ea) is on screen: the headline, not a blank page, was captured
    assert img.getcolors(1 << 20) and any(c == (230, 244, 234) for _, c in img.getcolors(1 << 20))
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180, check=False)
    assert again.returncode != 0 and "exists; pass --force" in again.stderr
