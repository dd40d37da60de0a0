"""The run report: sections, figures, warnings, self-containment and tolerance of missing pieces.

Most tests swap the PNG renderer for a constant 1x1 PNG (the HTML structure does not depend on the
pixels, and real matplotlib rendering costs ~50 ms a figure); `test_every_plot_function_renders_a_png`
and the browser test (tests/integration/test_report_browser.py) exercise the real drawing.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
from pathlib import Path

import pytest

from preftune.cli import main
from preftune.report import html as report_html
from preftune.report import plots
from preftune.report.run import chosen_falls_while_margin_grows, find_warnings, load_run

TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


@pytest.fixture(autouse=True)
def fast_png(monkeypatch):
    monkeypatch.setattr(plots, "_render", lambda draw, size=None, dpi=None: TINY_PNG)


def dpo_rows(n: int = 40, chosen_slope: float = -30.0, margin_slope: float = 3.0) -> list[dict]:
    """Noise-free DPO-like metrics: logps/chosen = -100 + chosen_slope*t, margin = margin_slope*t."""
    rows = []
    for i in range(n):
        t = i / (n - 1)
        rows.append({"step": i + 1, "epoch": t, "train/loss": 0.69 - 0.3 * t,
                     "train/rewards/chosen": 0.1 * chosen_slope * t, "train/rewards/rejected": 0.1 * (chosen_slope * t)
                     - margin_slope * t, "train/rewards/margin": margin_slope * t,
                     "train/rewards/accuracy": 0.6 + 0.3 * t, "train/logps/chosen": -100 + chosen_slope * t,
                     "train/logps/rejected": -100 + chosen_slope * t - 10 * margin_slope * t, "train/kl": t,
                     "train/grad_norm": 1.0, "train/lr": 1e-6, "train/lengths/chosen": 50.0,
                     "train/lengths/rejected": 40.0, "train/foo": 2.0 * t})
        if (i + 1) % 10 == 0:
            rows.append({"step": i + 1, "eval/loss": 0.7 - 0.3 * t, "eval/foo": t, "custom_metric": 5.0})
    return rows


FULL_EVALS = {
    "rm": {"accuracy": 0.8, "num_pairs": 4, "ece": 0.05, "accuracy_by": {"qa": {"accuracy": 0.75, "num_pairs": 4}},
           "reliability": [{"mean_confidence": 0.3, "accuracy": 0.25, "count": 4},
                           {"mean_confidence": 0.8, "accuracy": 0.75, "count": 4}],
           "accuracy_chosen_shorter": 0.7, "accuracy_chosen_longer": 0.9, "reward_length_corr": 0.2,
           "rewards": [{"chosen": 1.0, "rejected": 0.0, "chosen_length": 10, "rejected_length": 12},
                       {"chosen": 2.0, "rejected": 0.5, "chosen_length": 20, "rejected_length": 8}]},
    "policy": {"win_rate": 0.6, "win_rate_ci": [0.51, 0.69], "lc_win_rate": 0.55, "wins": 6, "ties": 1,
               "losses": 3, "kl_k1": 0.2, "kl_k3": 0.19, "mean_length_model": 30.0},
    "regress": {"cases": [{"id": "c1", "prompt": "<script>alert(1)</script> in 5 words", "baseline_pass": True,
                           "model_pass": True, "regressed": False}]},
    "guards": {"warnings": [], "series": {"x": [1, 2, 4], "proxy": [0.1, 0.5, 0.9], "judge": [0.5, 0.6, 0.55]}},
}
# data-plot names the full run must draw: 9 known training groups, 2 unknown suffixes, 7 eval plots
FULL_PLOTS = {"loss", "rewards", "margin", "accuracy", "logps", "kl", "grad_norm", "lr", "lengths",
              "other:foo", "other:custom_metric", "reward_hist", "reliability", "reward_vs_length",
              "accuracy_by_length", "win_tie_loss", "overoptimisation"}
RUN_INFO = {"stage": "dpo", "model": "tiny-llama", "seed": 3, "git_sha": "abc123", "versions": {"preftune": "0.1.0"},
            "data": [{"path": "train.jsonl", "sha256": "00ff", "num_rows": 960}],
            "tokenization": {"train": {"num_rows": 960, "num_truncated": 0, "num_dropped": 0}},
            "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T01:00:00Z"}


def make_run(root: Path, rows: list[dict] | None, run_info: dict | None = RUN_INFO, evals: dict | None = None,
             config: str | None = "stage: dpo\nbeta: 0.1\n", data_stats: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if rows is not None:
        (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if run_info is not None:
        (root / "run.json").write_text(json.dumps(run_info))
    if config is not None:
        (root / "config.yaml").write_text(config)
    if data_stats is not None:
        (root / "data_stats.json").write_text(json.dumps(data_stats))
    for name, content in (evals or {}).items():
        (root / "eval").mkdir(exist_ok=True)
        (root / "eval" / f"{name}.json").write_text(json.dumps(content))
    return root


def plot_names(page: str) -> list[str]:
    return re.findall(r"<figure class='plot' data-plot='([^']*)'>", page)


def render(run_dir: Path) -> str:
    return report_html.build_report(load_run(run_dir))


def test_full_run_has_every_section_and_one_figure_per_plot_group(tmp_path):
    run = make_run(tmp_path / "r", dpo_rows(chosen_slope=5.0), evals=FULL_EVALS, data_stats={"num_pairs": 960})
    page = render(run)
    for sid in report_html.SECTIONS:
        assert f"<section id='{sid}'>" in page
    names = plot_names(page)
    assert len(names) == len(FULL_PLOTS) == 17 and set(names) == FULL_PLOTS
    assert page.count("<figure") == page.count("<img") == 17  # every figure holds exactly one image
    # only "other evaluations" lacks input here (no eval/*.json beyond the four known ones)
    assert page.count("not available") == 1 and "not available: no other eval/*.json files" in page
    assert "No warnings" in page  # chosen log-prob rises: a clean run


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


def test_ema_hand_values_and_limits():
    assert plots.ema([1.0, 3.0], 0.5) == pytest.approx([1.0, 1.75 / 0.75])  # (0.25 + 1.5) / (1 - 0.25)
    assert plots.ema([4.0, 5.0, 6.0], 0.0) == [4.0, 5.0, 6.0]
    assert plots.ema([2.0] * 50, 0.9) == pytest.approx([2.0] * 50)
    out = plots.ema([1.0, float("nan"), 1.0], 0.5)
    assert math.isnan(out[1]) and out[2] == pytest.approx(1.0)
    assert plots.auto_smoothing(9) == 0.0 and plots.auto_smoothing(20) == pytest.approx(0.75)
    assert plots.auto_smoothing(10_000) == 0.9
    with pytest.raises(ValueError, match="smoothing weight"):
        plots.ema([1.0], 1.0)


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
    msgs = [f.message for f in find_warnings(bad, plots.extract_series(bad.rows))]
    assert len(msgs) == 1 and msgs[0].startswith("train/logps/chosen falls (-100 -> -130)")
    assert "train/rewards/margin grows (0 -> 3)" in msgs[0]
    clean = load_run(make_run(tmp_path / "clean", dpo_rows(chosen_slope=5.0)))
    assert find_warnings(clean, plots.extract_series(clean.rows)) == []
    assert "Warnings (1)" in report_html.build_report(bad) and "No warnings" in report_html.build_report(clean)


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


def test_report_is_self_contained_and_escapes_data(tmp_path):
    evals = dict(FULL_EVALS, regress={"cases": [{"id": "x", "prompt": "see <a href='https://evil'>x</a>"}]})
    page = render(make_run(tmp_path / "r", dpo_rows(), evals=evals))
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, re.IGNORECASE)
    assert "<link" not in page and not re.search(r"<script[^>]+src", page)
    assert "&lt;a href=&#x27;https://evil&#x27;&gt;" in page and "<script>alert" not in page
    imgs = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert len(imgs) == 17 and all(s.startswith("data:image/png;base64,") for s in imgs)


def test_missing_pieces_say_not_available(tmp_path):
    only_metrics = render(make_run(tmp_path / "m", [{"step": 1, "train/loss": 1.0}], run_info=None, config=None))
    for sid, why in [("config", "no config.yaml"), ("rm-eval", "no eval/rm.json"), ("win-rate", "no eval/policy.json"),
                     ("regressions", "no eval/regress.json"), ("guards", "no eval/guards.json"),
                     ("rewards", "no eval/rm.json"), ("calibration", "no eval/rm.json"),
                     ("length-bias", "no length statistics"), ("data", "run.json records no data files")]:
        section = re.search(rf"<section id='{sid}'>(.*?)</section>", only_metrics).group(1)
        assert f"not available: {why}" in section
    assert plot_names(only_metrics) == ["loss"]
    only_info = render(make_run(tmp_path / "i", None))
    assert "not available: no metrics.jsonl" in only_info and plot_names(only_info) == []


def test_damaged_pieces_become_warnings_not_crashes(tmp_path):
    run = make_run(tmp_path / "r", dpo_rows(n=8, chosen_slope=5.0), evals={"rm": {"accuracy": 0.9}})
    with open(run / "metrics.jsonl", "a") as f:
        f.write('[1, 2]\n{"step": 9, "train/lo')  # a non-object line, then a line cut mid-write
    (run / "eval" / "policy.json").write_text("{not json")
    (run / "eval" / "rm.json").write_text(json.dumps({"accuracy": 0.9, "reliability": [{"x": 1}], "rewards": "?"}))
    page = render(run)
    assert "metrics.jsonl line 9: not a JSON object; skipped" in page
    assert "metrics.jsonl line 10: invalid JSON" in page
    assert "policy.json: unreadable" in page
    assert "not available: eval/rm.json has no reliability bins" in page


def test_not_a_run_folder_exits_1_with_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert "not a run folder (it has neither run.json nor metrics.jsonl)" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "not a directory" in capsys.readouterr().err


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


def test_every_plot_function_renders_a_png(monkeypatch):
    monkeypatch.undo()  # real matplotlib rendering
    group = plots.group_series(plots.extract_series(dpo_rows(n=12)))[0][1]
    pngs = [plots.plot_group(group), plots.plot_reward_histograms([1.0, 2.0], [0.0, 0.5]),
            plots.plot_reliability([{"mean_confidence": 0.3, "accuracy": 0.2, "count": 3}], 0.1),
            plots.plot_reward_vs_length(([10, 20], [1.0, 2.0]), ([5, 9], [0.1, 0.2]), 0.3),
            plots.plot_bars(["a", "b"], [0.5, 0.7], "t", "y"),
            plots.plot_overoptimisation([1, 2, 4], [0.1, 0.5, 0.9], [0.5, 0.6, 0.55], "N")]
    sizes = [struct.unpack(">II", p[16:24]) for p in pngs]  # PNG IHDR: width, height
    assert all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    # 6.4 x 3.4 inches at 90 dpi; the reliability diagram is 6.4 x 4.4
    assert sizes == [(576, 306), (576, 306), (576, 396), (576, 306), (576, 306), (576, 306)]


def test_evaluator_output_shapes_are_read(tmp_path):
    """The shapes preftune.eval.policy / .regress / .guards / .metrics write, not only the brief's."""
    from preftune.report import run as rd

    reg = {"regressions": [{"id": "b", "prompt": "at most 3 words", "failed_checks": ["max_words"]}],
           "cases": [{"id": "a", "model_passed": True, "baseline_passed": True},
                     {"id": "b", "model_passed": False, "baseline_passed": True, "model_failed": ["max_words"]},
                     {"id": "c", "model_passed": False, "baseline_passed": False}]}
    assert [(c["id"], c["regressed"], c["prompt"]) for c in rd.regress_cases(reg)] == [
        ("a", False, ""), ("b", True, "at most 3 words"), ("c", False, "")]
    guards = {"overoptimisation": {"x_name": "N", "series": [{"x": 1, "proxy": 0.1, "judge": 0.5},
                                                             {"x": 4, "proxy": 0.9, "judge": 0.4}],
                                   "flag": {"flagged": True, "x": 1.0}, "warnings": ["hacked after N=1"]},
              "uncertain": {"warnings": [{"level": "info", "message": "3 uncertain"}]}}
    assert rd.overopt_curves(guards) == [{"x": [1, 4], "proxy": [0.1, 0.9], "judge": [0.5, 0.4], "x_label": "N",
                                          "flag_x": 1.0, "name": "overoptimisation"}]
    assert rd.reliability_bins({"reliability": [{"lo": 0, "hi": 0.5, "n": 3, "mean_prob": 0.3,
                                                 "frac_positive": 1 / 3}]}) == [
        {"mean_confidence": 0.3, "accuracy": 1 / 3, "count": 3}]
    pol = {"win_rate_ci95": [0.2, 0.4], "length_bias": {
        "warnings": ["verdicts follow length"], "win_length": {"spearman": 0.6, "pearson": 0.5},
        "win_rate_by_length": [{"lo": -5.0, "hi": 2.0, "n": 3, "win_rate": 0.25}]}}
    assert rd.length_buckets(pol) == [("-5..+2", 0.25)]
    assert rd.corr_value(pol["length_bias"]["win_length"]) == 0.6 and rd.corr_value(0.1) == 0.1
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
    assert "win_length_corr" in page and "<td>max_words</td>" in page
