"""The run report as a page: which sections a run gets, one figure per plot, warnings, escaping,
self-containment, tolerance of missing and damaged pieces, and the CLI.

The PNG renderer is a constant 1x1 image here (conftest.py); test_plots.py and the browser test
(tests/integration/test_report_browser.py) exercise the real drawing.
"""

from __future__ import annotations

import json
import math
import re

from report_testlib import (
    FULL_EVALS,
    FULL_PLOTS,
    RUN_INFO,
    RUNS,
    dpo_rows,
    make_run,
    plot_names,
    section_of,
    visible_text,
)

from preftune.cli import main
from preftune.report import html as report_html
from preftune.report import plots, shapes
from preftune.report.findings import chosen_falls_while_margin_grows, find_warnings
from preftune.report.run import load_run


def render(run_dir) -> str:
    return report_html.build_report(load_run(run_dir))


def sections_of(page: str) -> list[str]:
    return re.findall(r"<section id='([^']*)'>", page)


def test_full_dpo_run_has_its_sections_and_one_figure_per_plot_group(tmp_path):
    run = make_run(tmp_path / "r", dpo_rows(chosen_slope=5.0), evals=FULL_EVALS, data_stats={"num_pairs": 960})
    page = render(run)
    # everything but "other evaluations" (there is no eval/*.json beyond the four known ones)
    assert sections_of(page) == [s for s in report_html.SECTIONS if s != "other-evals"]
    names = plot_names(page)
    assert len(names) == len(FULL_PLOTS) == 19 and set(names) == FULL_PLOTS
    assert page.count("<figure") == page.count("<img") == 19  # every figure holds exactly one image
    assert "not available" not in page
    assert "No warnings" in page  # chosen log-prob rises: a clean run
    # the nav links every section shown, in order
    assert re.findall(r"<nav>(.*?)</nav>", page)[0].count("<a ") == len(sections_of(page))


def test_each_kind_of_run_gets_the_sections_that_concern_it(tmp_path):
    rm = render(make_run(tmp_path / "rm", dpo_rows(n=8), run_info={"stage": "rm"}, evals={"rm": FULL_EVALS["rm"]}))
    assert sections_of(rm) == ["headline", "warnings", "provenance", "training", "rm-eval", "rewards", "calibration",
                               "length-bias", "data", "config", "other-metrics", "last-values"]
    sft = render(make_run(tmp_path / "sft", [{"step": 1, "train/loss": 2.0}], run_info={"stage": "sft"}))
    assert sections_of(sft) == ["headline", "warnings", "provenance", "training", "data", "config", "last-values"]
    # a DPO run that was never judged says so where the answers would be
    dpo = render(make_run(tmp_path / "dpo", [{"step": 1, "train/loss": 2.0}], run_info={"stage": "dpo"}))
    assert "answers" in sections_of(dpo) and "not available: no eval/policy.json" in section_of(dpo, "answers")
    assert "Not judged yet" in section_of(dpo, "headline")
    # an unknown kind of run: every section, absences included
    assert sections_of(render(make_run(tmp_path / "x", [{"step": 1, "loss": 1.0}], run_info=None,
                                       config=None))) == list(report_html.SECTIONS)


def test_group_series_pairs_splits_and_keeps_unknown_metrics():
    series = plots.extract_series(dpo_rows(n=10))  # one eval row, at step 10
    known, other = plots.group_series(series)
    assert [g.name for g in known] == ["loss", "rewards", "margin", "accuracy", "logps", "kl", "grad_norm",
                                       "lr", "lengths"]
    assert [s.name for s in known[0].series] == ["train/loss", "eval/loss"]
    assert {g.name: [s.name for s in g.series] for g in other} == {
        "other:foo": ["train/foo", "eval/foo"], "other:custom_metric": ["custom_metric"]}


def test_extract_series_skips_flags_and_all_nan_and_uses_row_index_without_step():
    rows = [{"a": 1.0, "flag": True, "n": float("nan")}, {"a": 3, "n": float("nan"), "s": "text"}]
    series = plots.extract_series(rows)
    assert list(series) == ["a"]
    assert series["a"].steps == (0.0, 1.0) and series["a"].values == (1.0, 3.0)


def test_falling_chosen_with_growing_margin_is_detected():
    t = [i / 19 for i in range(20)]
    falling = [-100 - 30 * x for x in t]
    rising = [-100 + 30 * x for x in t]
    growing = [3 * x for x in t]
    assert chosen_falls_while_margin_grows(falling, growing)
    assert not chosen_falls_while_margin_grows(rising, growing)  # the healthy case
    assert not chosen_falls_while_margin_grows(falling, [1.0] * 20)  # margin flat: a different story
    assert not chosen_falls_while_margin_grows(falling[:3], growing[:3])  # too short to judge
    # a drift below 1% of the log-prob's size (here 0.5 of 100) is numerical noise, not a pattern
    assert not chosen_falls_while_margin_grows([-100 - 0.5 * x for x in t], growing)
    # alternating noise of +-2 around a flat line never counts as a fall
    assert not chosen_falls_while_margin_grows([-100 + 2 * (-1) ** i for i in range(20)], growing)


def test_warning_fires_in_the_report_for_the_bad_run_only(tmp_path):
    bad = load_run(make_run(tmp_path / "bad", dpo_rows(chosen_slope=-30.0)))
    found = find_warnings(bad, plots.extract_series(bad.rows))
    assert len(found) == 1 and found[0].message.startswith("train/logps/chosen falls (-100 -> -130)")
    assert "train/rewards/margin grows (0 -> 3)" in found[0].message and found[0].section == "training"
    clean = load_run(make_run(tmp_path / "clean", dpo_rows(chosen_slope=5.0)))
    assert find_warnings(clean, plots.extract_series(clean.rows)) == []
    page = report_html.build_report(bad)
    assert "Warnings (1)" in page and "No warnings" in report_html.build_report(clean)
    assert "<a href='#warnings'><b>1</b></a>: 1 warning" in section_of(page, "headline")


def test_a_trainer_flag_in_run_json_is_shown_once(tmp_path):
    info = dict(RUN_INFO, warnings=[{"step": 31, "kind": "chosen_logps_falling", "message": "chosen falls"}])
    run = load_run(make_run(tmp_path / "r", dpo_rows(chosen_slope=-30.0), run_info=info))
    got = [(f.source, f.message) for f in find_warnings(run, plots.extract_series(run.rows))]
    assert got == [("run.json", "step 31: chosen falls")]  # the report's own detector does not repeat it


def test_other_warnings_truncation_accuracy_regressions_guards_nan(tmp_path):
    info = dict(RUN_INFO, tokenization={"train": {"num_rows": 960, "num_truncated": 12, "num_dropped": 3}})
    rows = dpo_rows(chosen_slope=5.0) + [{"step": 99, "train/loss": float("nan")}]
    evals = {"rm": {"accuracy": 0.55},
             "policy": {"win_rate": 0.4, "win_rate_ci": [0.3, 0.49]},
             "regress": [{"id": "c7", "baseline_pass": True, "model_pass": False, "regressed": True}],
             "guards": {"warnings": [{"level": "warn", "message": "proxy up, judge down"}, "bare text"]}}
    run = load_run(make_run(tmp_path / "r", rows, run_info=info, evals=evals))
    found = find_warnings(run, plots.extract_series(run.rows))
    got = [(f.level, f.source, f.message) for f in found]
    assert got[:2] == [("error", "metrics.jsonl", "train/loss is NaN/inf at step 99"),
                       ("error", "eval/regress.json", "1 regression case(s) passed with the baseline and fail now: c7")]
    messages = " | ".join(f.message for f in found)
    assert "train.num_truncated: 12 rows of 960 (1.2%) truncated" in messages
    assert "train.num_dropped: 3 rows of 960 (0.3%) dropped" in messages
    assert "reward-model accuracy 0.550 is below 0.6" in messages
    assert "win-rate 95% interval [0.300, 0.490]" in messages
    assert ("warning", "eval/guards.json", "proxy up, judge down") in got
    assert ("warning", "eval/guards.json", "bare text") in got
    assert len(found) == 8
    # every "evidence" link points at a section that is on the page
    page = report_html.build_report(run)
    links = re.findall(r"<a href='#([^']*)'>evidence</a>", section_of(page, "warnings"))
    assert len(links) == 8 and set(links) <= set(sections_of(page))


def test_report_is_self_contained_and_escapes_data(tmp_path):
    evals = dict(FULL_EVALS, regress={"cases": [{"id": "x<i>", "prompt": "see <a href='https://evil'>x</a>",
                                                 "model_response": "<script>alert(2)</script>"}]})
    page = render(make_run(tmp_path / "r", dpo_rows(), evals=evals))
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, re.IGNORECASE)
    assert "<link" not in page and not re.search(r"<script[^>]+src", page)
    assert "&lt;a href=&#x27;https://evil&#x27;&gt;" in page and "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section_of(page, "answers")
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in section_of(page, "regressions")
    assert "id='regress-x_i_'" in page  # an id built from data keeps only safe characters
    imgs = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert len(imgs) == 19 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert page.count("<script>") == 3  # error hook, filters, draw check: all inline


def test_no_cell_holds_a_python_repr(tmp_path):
    stats = {"lengths": {"chosen": {"chars": {"count": 104, "min": 17, "mean": 63.17307692307692, "median": 60.0,
                                              "p90": 89.39999999999998, "max": 140}}},
             "nested": [{"a": [{"b": 1}], "c": {"d": [1, 2]}}], "empty": [],
             "deep": {"a": {"b": {"c": {"d": {"e": 1}}}}}}
    cfg = "loss: sigmoid\nlora:\n  enabled: true\n  target_modules: [q_proj, v_proj]\nheads: [{name: a}]\n"
    evals = dict(FULL_EVALS, extra={"rows": [{"x": {"y": [{"z": 1}]}}], "mapping": {"k": {"v": [1, {"w": 2}]}}})
    page = render(make_run(tmp_path / "r", dpo_rows(n=8), evals=evals, config=cfg, data_stats=stats))
    text = visible_text(page)
    assert "{'" not in text and "[{" not in text and "{\"" not in text
    assert "63.17307692307692" not in text and "63.17" in text and "89.4" in text  # rounded to 4 digits
    assert "q_proj, v_proj" in section_of(page, "config")


def test_missing_pieces_say_not_available(tmp_path):
    only_metrics = render(make_run(tmp_path / "m", [{"step": 1, "train/loss": 1.0}], run_info=None, config=None))
    for sid, why in [("config", "no config.yaml"), ("rm-eval", "no eval/rm.json"), ("win-rate", "no eval/policy.json"),
                     ("answers", "no eval/policy.json"), ("regressions", "no eval/regress.json"),
                     ("guards", "no eval/guards.json"), ("rewards", "no eval/rm.json"),
                     ("calibration", "no eval/rm.json"),
                     ("length-bias", "no length statistics"), ("data", "no data_stats.json")]:
        assert f"not available: {why}" in section_of(only_metrics, sid)
    assert "run.json is missing" in section_of(only_metrics, "provenance")
    assert plot_names(only_metrics) == ["loss"]
    only_info = render(make_run(tmp_path / "i", None))
    assert "not available: no metrics.jsonl" in only_info and plot_names(only_info) == []


def test_damaged_pieces_become_warnings_not_crashes(tmp_path):
    run = make_run(tmp_path / "r", dpo_rows(n=8, chosen_slope=5.0), evals={"rm": {"accuracy": 0.9}})
    with open(run / "metrics.jsonl", "a") as f:
        f.write('[1, 2]\n{"step": 9, "train/lo')  # a non-object line, then a line cut mid-write
    (run / "eval" / "policy.json").write_text("{not json")
    (run / "eval" / "rm.json").write_text(json.dumps({"accuracy": 0.9, "reliability": [{"x": 1}], "rewards": "?"}))
    (run / "eval" / "regress.json").write_text('"just a string"')
    (run / "config.yaml").write_text("a: [unclosed\n")
    page = render(run)
    assert "metrics.jsonl line 9: not a JSON object; skipped" in page
    assert "metrics.jsonl line 10: invalid JSON" in page
    assert "eval/policy.json: unreadable" in page
    assert "eval/regress.json: not a JSON object" in page
    assert "config.yaml: unreadable" in page
    assert "not available: eval/rm.json has no reliability bins" in page


def test_nan_inf_and_huge_values_are_shown_as_such(tmp_path):
    nan, inf = float("nan"), float("inf")
    evals = {"policy": {"win_rate": nan, "win_rate_ci95": [nan, 1e308], "wins": "x", "ties": 1, "losses": 2,
                        "lc_win_rate": inf, "kl_k3": 1e308, "num_prompts": 3,
                        "samples": [{"prompt": "p", "model": "m", "baseline": "b", "verdict": nan, "score_model": inf},
                                    "not a sample", {"prompt": {"odd": 1}, "model": ["x"], "verdict": 7}]},
             "rm": {"accuracy": 1e308, "num_pairs": nan, "ece": -inf, "reward_length_corr": {"spearman": nan},
                    "rewards": {"chosen": [1.0, inf, 1e308], "rejected": [nan, 0.0, -1e308]},
                    "reliability": [{"mean_prob": nan, "frac_positive": 0.5}]},
             "regress": {"cases": {"not": "a list"}, "num_regressions": "x", "regressions": 5}}
    rows = [{"step": 1, "train/loss": 1e308}, {"step": 2, "train/loss": -inf}, {"step": 3, "train/loss": 0.5}]
    page = render(make_run(tmp_path / "r", rows, evals=evals))
    head = visible_text(section_of(page, "headline"))
    assert "NaN" in head and "+inf" in head and "1e+308" in head
    assert "Cannot say: eval/policy.json has no usable win-rate interval" in head
    samples = shapes.policy_samples(evals["policy"])
    assert [s["outcome"] for s in samples] == ["unjudged", "unjudged"]  # NaN and 7 are no verdicts
    assert "train/loss is NaN/inf at step 2" in page
    assert "not available: eval/regress.json has no readable cases" in page


def test_not_a_run_folder_exits_1_with_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert "not a run folder (it has neither run.json nor metrics.jsonl)" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "not a directory" in capsys.readouterr().err
    assert main(["report"]) == 1
    assert "needs a RUN folder (or --compare" in capsys.readouterr().err


def test_cli_writes_default_path_and_refuses_to_overwrite_other_files(tmp_path, capsys):
    run = make_run(tmp_path / "r", dpo_rows(n=8))
    for _ in range(2):  # RUN/report.html belongs to the tool: rewritten without --force
        assert main(["report", str(run)]) == 0
        assert capsys.readouterr().out.strip() == str(run / "report.html")
    other = tmp_path / "mine.html"
    other.write_text("keep me")
    assert main(["report", str(run), "-o", str(other)]) == 1
    assert "mine.html: already exists; pass --force" in capsys.readouterr().err
    assert other.read_text() == "keep me"
    assert main(["report", str(run), "-o", str(other), "--force"]) == 0
    assert other.read_text().startswith("<!DOCTYPE html>")
    assert not list(tmp_path.glob(".*.tmp*"))  # no temporary file left behind


def test_cli_related_runs_are_linked_relative_to_the_page(tmp_path, capsys):
    rm = make_run(tmp_path / "runs" / "rm", dpo_rows(n=4), run_info={"stage": "rm", "model": "minilm-l6"},
                  evals={"rm": {"accuracy": 0.9431, "length_baseline_accuracy": 0.5}})
    dpo = make_run(tmp_path / "runs" / "dpo", dpo_rows(n=4))
    assert main(["report", str(rm)]) == 0
    assert main(["report", str(dpo), "--related", str(rm)]) == 0
    prov = section_of((dpo / "report.html").read_text(), "provenance")
    assert "<a href='../rm/report.html'>" in prov and "held-out accuracy 0.943" in prov and "minilm-l6" in prov
    out = tmp_path / "elsewhere" / "page.html"
    assert main(["report", str(dpo), "--related", str(rm), "-o", str(out)]) == 0
    assert "<a href='../runs/rm/report.html'>" in out.read_text()
    capsys.readouterr()


def test_evaluator_output_shapes_are_read(tmp_path):
    """The shapes preftune.eval.policy / .regress / .guards / .metrics write, not only the brief's."""
    reg = {"regressions": [{"id": "b", "prompt": "at most 3 words", "failed_checks": ["max_words"],
                            "model_response": "far too many words", "baseline_response": "ok"}],
           "cases": [{"id": "a", "model_passed": True, "baseline_passed": True},
                     {"id": "b", "model_passed": False, "baseline_passed": True, "model_failed": ["max_words"]},
                     {"id": "c", "model_passed": False, "baseline_passed": False}]}
    got = shapes.regress_cases(reg)
    assert [(c["id"], c["regressed"], c["prompt"]) for c in got] == [
        ("a", False, ""), ("b", True, "at most 3 words"), ("c", False, "")]
    assert got[1]["model_response"] == "far too many words" and got[0]["model_response"] is None
    guards = {"overoptimisation": {"x_name": "N", "series": [{"x": 1, "proxy": 0.1, "judge": 0.5},
                                                             {"x": 4, "proxy": 0.9, "judge": 0.4}],
                                   "flag": {"flagged": True, "x": 1.0}, "warnings": ["hacked after N=1"]},
              "uncertain": {"warnings": [{"level": "info", "message": "3 uncertain"}]}}
    assert shapes.overopt_curves(guards) == [{"x": [1, 4], "proxy": [0.1, 0.9], "judge": [0.5, 0.4], "x_label": "N",
                                              "flag_x": 1.0, "name": "overoptimisation"}]
    assert shapes.reliability_bins({"reliability": [{"lo": 0, "hi": 0.5, "n": 3, "mean_prob": 0.3,
                                                     "frac_positive": 1 / 3}]}) == [
        {"mean_confidence": 0.3, "accuracy": 1 / 3, "count": 3}]
    pol = {"win_rate_ci95": [0.2, 0.4], "length_bias": {
        "warnings": ["verdicts follow length"], "win_length": {"spearman": 0.6, "pearson": 0.5},
        "win_rate_by_length": [{"lo": -5.0, "hi": 2.0, "n": 3, "win_rate": 0.25}]}}
    assert shapes.length_buckets(pol) == [("-5..+2", 0.25)]
    assert shapes.corr_value(pol["length_bias"]["win_length"]) == 0.6 and shapes.corr_value(0.1) == 0.1
    run = load_run(make_run(tmp_path / "r", dpo_rows(n=8, chosen_slope=5.0),
                            evals={"regress": reg, "guards": guards, "policy": pol}))
    got = {(f.level, f.source, f.message) for f in find_warnings(run, plots.extract_series(run.rows))}
    assert got == {("error", "eval/regress.json", "1 regression case(s) passed with the baseline and fail now: b"),
                   ("warning", "eval/guards.json", "hacked after N=1"), ("info", "eval/guards.json", "3 uncertain"),
                   ("warning", "eval/policy.json", "verdicts follow length"),
                   ("warning", "eval/policy.json", ("the model loses to the baseline: win-rate 95% interval "
                                                   "[0.200, 0.400] is below 0.5"))}
    page = report_html.build_report(run)
    assert set(plot_names(page)) >= {"overoptimisation", "win_rate_by_length"}
    assert "win_length_corr" in page and "max_words" in section_of(page, "regressions")


def test_the_fixture_runs_render_without_problems():
    """Every committed fixture run loads cleanly (nothing unreadable) and renders."""
    for name in ("dpo_full", "dpo_ipo", "rm_full", "sft_full", "metrics_only"):
        run = load_run(RUNS / name)
        assert run.problems == [], name
        assert report_html.build_report(run).startswith("<!DOCTYPE html>")
    assert math.isclose(load_run(RUNS / "dpo_full").evals["policy"]["win_rate"], 0.675)
