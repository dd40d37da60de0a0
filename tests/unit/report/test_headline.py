"""The headline: the verdict rules, the numbers it shows (rounded to their precision and tagged with
the JSON key they came from), and which blocks each kind of run gets."""

from __future__ import annotations

import re

from report_testlib import visible_text

from preftune.report import headline, plots
from preftune.report.findings import Finding


def spans(html: str) -> dict[str, str]:
    """data-key -> shown text of every tagged number."""
    return {k: v for k, v in re.findall(r"data-key='([^']*)'[^>]*>([^<]*)<", html)}


def render(block: headline.Block) -> str:
    return headline.render_block(block)


POL = {"win_rate": 0.6484375, "win_rate_ci95": [0.5703125, 0.71875], "num_prompts": 64, "wins": 38, "ties": 7,
       "losses": 19, "lc_win_rate": 0.61234, "kl_k1": 0.05123, "kl_k3": 0.041789, "judge": "gold",
       "mean_length_model": 171.234, "mean_length_baseline": 148.9}


def test_policy_verdict_follows_the_interval():
    assert headline.policy_verdict(POL)[0] == "good"
    assert headline.policy_verdict(POL)[1] == ("Better than the baseline: the win rate's 95% interval "
                                               "[0.570, 0.719] is above 0.5.")
    assert headline.policy_verdict({"win_rate_ci95": [0.31, 0.49], "num_prompts": 64})[0] == "bad"
    assert headline.policy_verdict({"win_rate_ci95": [0.45, 0.6], "num_prompts": 64}) == (
        "neutral", "Not shown better than the baseline: the win rate's 95% interval [0.450, 0.600] contains 0.5.")
    # an interval touching 0.5 is not above it
    assert headline.policy_verdict({"win_rate_ci95": [0.5, 0.7]})[0] == "neutral"
    assert headline.policy_verdict({"win_rate": 0.7})[0] == "unknown"
    assert headline.policy_verdict({"win_rate_ci95": [float("nan"), 0.7]})[0] == "unknown"


def test_policy_numbers_are_rounded_to_the_interval_and_tagged():
    reg = {"num_cases": 45, "model_passed": 40, "baseline_passed": 41, "num_regressions": 1,
           "cases": [{"id": "limit 3", "baseline_passed": True, "model_passed": False}]}
    html = render(headline.policy_block(POL, reg, {"policy": POL}))
    got = spans(html)
    assert got["win_rate"] == "0.648" and got["win_rate_ci95.0"] == "0.570" and got["win_rate_ci95.1"] == "0.719"
    assert got["lc_win_rate"] == "0.612" and got["kl_k3"] == "0.0418" and got["kl_k1"] == "0.0512"
    assert (got["wins"], got["ties"], got["losses"], got["num_prompts"]) == ("38", "7", "19", "64")
    assert got["num_regressions"] == "1" and got["num_cases"] == "45" and got["model_passed"] == "40"
    assert got["mean_length_model"] == "171.2"
    assert "<a href='#regress-limit_3'>limit 3</a>" in html
    assert "1 regression case(s) that the baseline passes now fail" in html
    assert "alignment tax" not in html  # not measured: not shown
    # with 8 prompts and a zero-width interval the precision comes from the prompt count: se = 0.18
    few = spans(render(headline.policy_block({"win_rate": 0.5, "win_rate_ci95": [0.5, 0.5], "num_prompts": 8},
                                             None, {})))
    assert few["win_rate"] == "0.50"


def test_policy_caveats_and_absent_pieces():
    lengthy = dict(POL, lc_win_rate=0.48)
    html = render(headline.policy_block(lengthy, None, {"tax": {"alignment_tax": 0.021}}))
    assert "The length-controlled win rate (0.480) is not above 0.5" in html
    assert "regressions</th><td><span class='na'>not measured (run <code>preftune eval regress</code>)" in html
    assert spans(html)["alignment_tax"] == "0.021"
    no_kl = render(headline.policy_block(dict(POL, kl_k1=None, kl_k3=None), None, {}))
    assert "not measured (the two tokenizers differ" in no_kl


def test_reward_model_verdict_against_the_length_baseline():
    good = {"accuracy": 0.943, "num_pairs": 512, "num_ties": 12, "length_baseline_accuracy": 0.5,
            "accuracy_chosen_shorter": 0.91, "num_chosen_shorter": 240, "accuracy_chosen_longer": 0.97,
            "num_chosen_longer": 248, "ece": 0.04512, "reward_length_corr": {"pearson": 0.2, "spearman": 0.1234}}
    b = headline.rm_block(good)
    assert b.level == "good" and "better than the “longer wins” baseline (0.500)" in b.verdict
    # Wilson interval of 471.5/500 (0.943 x 500 decided pairs): [0.919, 0.960]
    assert "[0.919, 0.960]" in b.verdict
    got = spans(render(b))
    assert got["accuracy"] == "0.943" and got["num_ties"] == "12" and got["ece"] == "0.0451"
    assert got["reward_length_corr.spearman"] == "0.123" and got["num_chosen_shorter"] == "240"
    neutral = headline.rm_block({"accuracy": 0.55, "num_pairs": 40, "length_baseline_accuracy": 0.5})
    assert neutral.level == "neutral" and "contains it" in neutral.verdict
    bad = headline.rm_block({"accuracy": 0.3, "num_pairs": 100, "length_baseline_accuracy": 0.6})
    assert bad.level == "bad"
    chance = headline.rm_block({"accuracy": 0.8, "num_pairs": 100})
    assert chance.level == "good" and (
        "than chance (0.500): its accuracy's 95% interval [0.711, 0.867]" in chance.verdict)
    biased = headline.rm_block(dict(good, accuracy_chosen_shorter=0.42))
    assert any("It prefers longer answers" in n and "0.420" in n for n in biased.notes)
    assert headline.rm_block({"accuracy": "?"}).level == "unknown"


def test_sft_headline_reads_the_held_out_loss():
    def series(rows):
        return plots.extract_series(rows)

    falling = series([{"step": 10, "eval/loss": 2.5, "eval/ppl": 12.18}, {"step": 20, "eval/loss": 1.75,
                                                                           "eval/ppl": 5.75}])
    b = headline.training_block(falling, "sft")
    assert b.level == "good" and b.verdict == "The held-out loss fell from 2.5 to 1.75."
    html = render(b)
    assert "data-key='eval/loss' data-step='10'>2.5<" in html and "data-key='eval/ppl' data-step='20'>5.75<" in html
    assert headline.training_block(series([{"step": 1, "eval/loss": 1.0}, {"step": 2, "eval/loss": 1.2}]),
                                   "sft").level == "bad"
    only_train = headline.training_block(
        series([{"step": 1, "train/loss": 2.0}, {"step": 2, "train/loss": 1.0}]), "sft")
    assert only_train.level == "neutral" and "says nothing about generalisation" in only_train.verdict
    assert headline.training_block({}, "sft").level == "unknown"


def test_which_blocks_each_run_gets():
    def titles(stage, evals):
        return [b.title for b in headline.blocks_for(stage, evals, {})]

    assert titles("dpo", {"policy": POL}) == ["Policy against its baseline"]
    assert titles("dpo", {}) == ["Policy against its baseline"]  # "not judged yet"
    assert titles("rm", {"rm": {"accuracy": 0.9}}) == ["Reward model on held-out pairs"]
    assert titles("sft", {}) == ["SFT training"]
    assert titles("sft", {"policy": POL}) == ["Policy against its baseline", "SFT training"]
    assert titles(None, {}) == ["TRAINING training"]


def test_warnings_are_counted_and_linked():
    found = [Finding("error", "eval/regress.json", "x"), Finding("warning", "run.json", "y"),
             Finding("warning", "metrics.jsonl", "z")]
    html = headline.render_headline("t", "s", [], found)
    assert "Warnings: <a href='#warnings'><b>3</b></a>: 1 error, 2 warnings" in html
    assert "none" in visible_text(headline.render_headline("t", "s", [], []))
