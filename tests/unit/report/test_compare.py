"""`preftune report --compare`: runs side by side (headline table, config differences, overlaid
curves, the same prompts' answers)."""

from __future__ import annotations

import re

from report_testlib import RUNS, dpo_rows, make_run, plot_names, section_of, visible_text

from preftune.cli import main
from preftune.report import shapes
from preftune.report.compare import build_compare
from preftune.report.run import load_run, run_labels


def test_compare_of_the_two_dpo_fixtures(tmp_path):
    runs = [load_run(RUNS / "dpo_full"), load_run(RUNS / "dpo_ipo")]
    page = build_compare(runs, tmp_path)
    head = section_of(page, "headline")
    # every number is tagged with its run and key: run 0's win rate and run 1's
    assert re.search(r"data-run='0' data-src='policy' data-key='win_rate'>0.675<", head)
    assert re.search(r"data-run='1' data-src='policy' data-key='win_rate'>0.562<", head)
    assert "Better than the baseline" in head and "Not shown better than the baseline" in head
    diff = visible_text(section_of(page, "config"))
    assert "loss sigmoid ipo" in " ".join(diff.split()) and "reference adapter cache" in " ".join(diff.split())
    assert "beta" not in diff  # equal in both runs: not a difference
    # one overlay per metric, both runs on it
    names = plot_names(page)
    assert names[0] == "compare:train/loss" and len(names) == len(set(names)) == 12
    answers = section_of(page, "answers")
    assert "40 prompts, 40 of them judged in every run" in answers
    rows = re.findall(r"<tr id='compare-(\d+)' data-agree='(\w+)'", answers)
    assert len(rows) == 40
    # the same prompt's verdicts: rows marked "same" show one outcome in both runs
    s0, s1 = (shapes.policy_samples(r.evals["policy"]) for r in runs)
    assert [a == "same" for _, a in rows] == [x["outcome"] == y["outcome"] for x, y in zip(s0, s1)]
    assert "&lt;script&gt;" in answers and "<script>document.documentElement" not in page


def test_prompts_only_some_runs_saw_are_marked(tmp_path):
    pol_a = {"win_rate": 0.5, "samples": [{"prompt": "p1", "model": "a1", "baseline": "b1", "verdict": 1.0},
                                          {"prompt": "p2", "model": "a2", "baseline": "b2", "verdict": 0.5}]}
    pol_b = {"win_rate": 0.5, "samples": [{"prompt": "p2", "model": "c2", "baseline": "other", "verdict": 0.5}]}
    a = make_run(tmp_path / "x" / "dpo", dpo_rows(n=4), evals={"policy": pol_a})
    b = make_run(tmp_path / "y" / "dpo", dpo_rows(n=4), evals={"policy": pol_b})
    runs = [load_run(a), load_run(b)]
    assert run_labels(runs) == ["x/dpo", "y/dpo"]
    answers = section_of(build_compare(runs, tmp_path), "answers")
    assert "2 prompts, 1 of them judged in every run" in answers
    assert "(not asked in this run)" in answers and "this run's baseline answered differently" in answers


def test_compare_cli_errors_and_output(tmp_path, capsys):
    a, b = str(RUNS / "dpo_full"), str(RUNS / "sft_full")
    assert main(["report", "--compare", a, b]) == 1
    assert "--compare needs -o FILE" in capsys.readouterr().err
    assert main(["report", "--compare", a, "-o", str(tmp_path / "c.html")]) == 1
    assert "at least two run folders, got 1" in capsys.readouterr().err
    assert main(["report", a, "--compare", b, "-o", str(tmp_path / "c.html")]) == 1
    assert "give the runs to compare after --compare only" in capsys.readouterr().err
    out = tmp_path / "c.html"
    assert main(["report", "--compare", a, b, "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert main(["report", "--compare", a, b, "-o", str(out)]) == 1  # never overwritten without --force
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["report", "--compare", a, b, "-o", str(out), "--force"]) == 0
    page = out.read_text()
    assert "last eval/loss" in page and "not judged" in page  # the SFT run has no policy evaluation
