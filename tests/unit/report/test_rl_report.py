"""The report of an online-RL run (`preftune train rl`): the headline's numbers equal what metrics.jsonl
holds (gain = last eval/reward - step-0 eval/reward), its verdict words, the RL curves and the
reward-vs-KL plot, and the over-optimisation guard read from eval/overoptimisation.json."""

from __future__ import annotations

import json
import math
import re

import pytest
from report_testlib import make_run, plot_names, section_of, visible_text

from preftune.eval.guards import overoptimisation_report
from preftune.report import plots, rl_view
from preftune.report.html import build_report
from preftune.report.run import load_run

RL_INFO = {"stage": "rl", "model": "tiny-llama", "seed": 0}
RL_CONFIG = "algo: grpo\nreward: gold\neval_reward: gold\nkl_coef: 0.04\nnum_generations: 4\n"
PROXY_CONFIG = "algo: ppo\nreward: py:lenrw:reward\neval_reward: gold\nkl_coef: 0.04\n"
# the data-plot names every RL page draws (a PPO run also logs value_loss)
RL_PLOTS = {"reward", "reward_components", "reward_std", "kl", "kl_coef", "entropy", "completion_length", "clip",
            "tied_groups", "truncated", "loss", "grad_norm", "lr", "samples_per_s", "rollout_share", "reward_vs_kl"}


def rl_rows(held_out: list[float], n: int = 8, ppo: bool = False, proxy: list[float] | None = None) -> list[dict]:
    """metrics.jsonl of an RL run as `train rl` writes it: one train row per step 1..n and the held-out
    evaluations at step 0 and every n / (len(held_out) - 1) steps, the last at step n."""
    every = n // (len(held_out) - 1)
    evals = {i * every: v for i, v in enumerate(held_out)}

    def ev(step: int) -> dict:
        i = step // every
        out = {"eval/completion_length": 20.0 + step, "eval/reward": evals[step]}
        return out | ({"eval/proxy": proxy[i]} if proxy else {})

    rows = [{"step": 0, **ev(0)}]
    for s in range(1, n + 1):
        row = {"step": s, "train/clip/high": 0.01 * s, "train/clip/low": 0.002 * s, "train/clip/region": 0.003 * s,
               "train/completion_length": 16.0 + 2 * s, "train/entropy": 2.0 - 0.1 * s, "train/kl": 0.01 * s,
               "train/loss": 0.05, "train/reward": 0.3 + 0.05 * s, "train/reward_std": 0.2,
               "train/rewards/gold": 0.3 + 0.05 * s, "train/rewards/rm": 1.0 + 0.1 * s,
               "train/tied_groups": [0.5, 0.25, 0.0, 0.25][s % 4], "train/truncated": 0.125,
               "train/grad_norm": 1.0, "train/lr": 1e-5, "train/kl_coef": 0.04,
               "perf/samples_per_s": 3.0, "perf/rollout_share": 0.4}
        if ppo:
            row |= {"train/value_loss": 0.5 / s, "train/clip/value": 0.1}
        rows.append(row | (ev(s) if s in evals and s != n else {}))
    rows.append({"step": n, **ev(n)})  # `train rl` logs the final evaluation as its own row
    return rows


def render(run_dir) -> str:
    return build_report(load_run(run_dir))


def metric_spans(html: str) -> dict[tuple[str, str], str]:
    """(data-key, data-step) -> shown text of every metrics.jsonl number in the HTML."""
    return {(k, st): v for k, st, v in re.findall(
        r"data-src='metrics' data-key='([^']*)' data-step='([^']*)'>([^<]*)<", html)}


def from_file(run_dir, key: str) -> list[tuple[float, float]]:
    """(step, value) of a metric as metrics.jsonl holds it."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [(float(r["step"]), float(r[key])) for r in rows if key in r]


def close(shown: str, value: float) -> bool:
    """The shown text is the value to the digits shown (4 significant digits)."""
    return math.isclose(float(shown.replace("−", "-").replace("+", "")), value, rel_tol=5e-4, abs_tol=1e-12)


def test_headline_numbers_equal_metrics_jsonl_and_the_gain_is_last_minus_step_0(tmp_path):
    run = make_run(tmp_path / "rise", rl_rows([0.40, 0.45, 0.52]), run_info=RL_INFO, config=RL_CONFIG)
    page = render(run)
    head = section_of(page, "headline")
    ev = from_file(run, "eval/reward")
    start, end = ev[0], ev[-1]
    assert start == (0.0, 0.40) and end == (8.0, 0.52)
    gain = end[1] - start[1]  # 0.12, by hand
    assert math.isclose(gain, 0.12)
    got = metric_spans(head)
    assert close(got[("eval/reward", "0")], start[1]) and close(got[("eval/reward", "8")], end[1])
    shown_gain = re.search(r"<span class='derived' data-of='eval/reward'>([^<]*)<", head).group(1)
    assert shown_gain == "+0.12" and close(shown_gain, gain)
    # final KL and its coefficient: the last train row's values
    kl = from_file(run, "train/kl")[-1]
    assert kl == (8.0, 0.08) and close(got[("train/kl", "8")], kl[1]) and got[("train/kl_coef", "8")] == "0.04"
    # mean completion length, start -> end, on the training and the held-out prompts
    tl, el = from_file(run, "train/completion_length"), from_file(run, "eval/completion_length")
    assert got[("train/completion_length", "1")] == "18" and close(got[("train/completion_length", "8")], tl[-1][1])
    assert close(got[("eval/completion_length", "0")], el[0][1]) and close(got[("eval/completion_length", "8")],
                                                                           el[-1][1])
    # tied-group share: the mean over the logged steps (0.25 by hand: two cycles of 0.25, 0, 0.25, 0.5)
    tied = [v for _, v in from_file(run, "train/tied_groups")]
    mean = re.search(r"<span class='derived' data-of='train/tied_groups'>([^<]*)<", head).group(1)
    assert math.isclose(sum(tied) / len(tied), 0.25) and mean == "0.25"
    assert close(got[("train/tied_groups", "8")], tied[-1])
    # the training reward, first -> last logged
    tr = from_file(run, "train/reward")
    assert close(got[("train/reward", "1")], tr[0][1]) and close(got[("train/reward", "8")], tr[-1][1])


@pytest.mark.parametrize(("held_out", "word", "level", "gain"), [
    ([0.40, 0.45, 0.52], "rose", "good", "+0.12"),
    ([0.40, 0.38, 0.31], "fell", "bad", "−0.09"),
    ([0.40, 0.47, 0.40], "did not rise", "neutral", "0"),
])
def test_verdict_words_follow_the_gain(tmp_path, held_out, word, level, gain):
    run = make_run(tmp_path / word.replace(" ", "_"), rl_rows(held_out), run_info=RL_INFO, config=RL_CONFIG)
    head = section_of(render(run), "headline")
    verdict = re.search(r"<p class='verdict ([a-z]+)'>([^<]*)", head)
    assert verdict.group(1) == level
    assert verdict.group(2).startswith(f"The held-out reward {word}: 0.4 at step 0 → {held_out[-1]:g} at step 8 "
                                       f"({gain}), scored by gold.")
    b = rl_view.rl_block(plots.extract_series(rl_rows(held_out)), {}, {"eval_reward": "gold", "algo": "grpo"})
    assert (b.level, b.title) == (level, "Online RL (GRPO): held-out reward")


def test_gain_word_needs_more_than_float_noise():
    assert rl_view.gain_word(0.0, 0.4) == "did not rise"
    assert rl_view.gain_word(1e-13, 0.4) == "did not rise"  # the same mean, recomputed
    assert rl_view.gain_word(1e-6, 0.4) == "rose" and rl_view.gain_word(-1e-6, 0.4) == "fell"


def test_the_start_is_the_step_0_evaluation_and_the_end_the_highest_step():
    rows = [{"step": 4, "eval/reward": 0.9}, {"step": 0, "eval/reward": 0.2}, {"step": 2, "eval/reward": 0.5}]
    g = rl_view.heldout_gain(plots.extract_series(rows))
    assert g["start"] == (0.0, 0.2) and g["end"] == (4.0, 0.9) and math.isclose(g["gain"], 0.7)
    # no step-0 evaluation: the first one, and the verdict says so
    level, text = rl_view.rl_verdict(plots.extract_series([{"step": 2, "eval/reward": 0.5},
                                                            {"step": 6, "eval/reward": 0.25}]))
    assert level == "bad" and "step 2 (the first evaluation; none at step 0)" in text and "(−0.25)" in text
    assert rl_view.heldout_gain(plots.extract_series([{"step": 0, "eval/reward": 0.5}])) is None


def test_every_rl_plot_is_drawn_in_the_training_section_reward_first(tmp_path):
    run = make_run(tmp_path / "ppo", rl_rows([0.4, 0.5], ppo=True), run_info=RL_INFO, config=RL_CONFIG)
    page = render(run)
    training = section_of(page, "training")
    names = plot_names(training)
    assert set(names) == RL_PLOTS | {"value_loss"}
    assert names[:3] == ["reward", "reward_components", "kl"] and names[-1] == "reward_vs_kl"
    assert "other-metrics" not in page  # every metric `train rl` logs has its plot
    known, other = plots.group_series(plots.extract_series(rl_rows([0.4, 0.5], ppo=True)))
    groups = {g.name: [s.name for s in g.series] for g in known}
    assert other == []
    assert groups["reward"] == ["eval/reward", "train/reward"]
    assert groups["reward_components"] == ["train/rewards/gold", "train/rewards/rm"]
    assert groups["clip"] == ["train/clip/high", "train/clip/low", "train/clip/region", "train/clip/value"]
    assert groups["samples_per_s"] == ["perf/samples_per_s"] and groups["value_loss"] == ["train/value_loss"]
    # a DPO run's rewards/chosen etc. stay in their own plots, not in the RL components
    dpo = {g.name for g in plots.group_series(plots.extract_series(
        [{"step": 1, "train/rewards/chosen": 1.0, "train/rewards/margin": 0.5}]))[0]}
    assert dpo == {"rewards", "margin"}


def test_reward_vs_kl_pairs_each_reward_with_the_kl_of_its_step():
    kl = plots.Series("train/kl", (1.0, 2.0, 4.0, 4.0), (0.1, 0.2, 0.4, 9.9))
    ev = plots.Series("eval/reward", (0.0, 2.0, 3.0, 4.0), (0.3, 0.35, 0.36, 0.5))
    # step 3 has no KL; step 4's first KL is used; step 0 gets KL 0 only when asked (the RL reference start)
    assert rl_view.aligned_points(kl, ev) == ([2.0, 4.0], [0.2, 0.4], [0.35, 0.5])
    assert rl_view.aligned_points(kl, ev, origin=(0.0, 0.0)) == ([0.0, 2.0, 4.0], [0.0, 0.2, 0.4], [0.3, 0.35, 0.5])
    nan = plots.Series("train/reward", (1.0, 2.0), (float("nan"), 0.7))
    assert rl_view.aligned_points(kl, nan) == ([2.0], [0.2], [0.7])


def guarded_run(tmp_path, name="hacked"):
    """An RL run whose proxy rises while the held-out judge falls after step 4, with the guard's file
    written by the same function `train rl` calls."""
    proxy, judge = [1.0, 1.2, 1.5, 1.9], [0.40, 0.48, 0.41, 0.30]
    rows = rl_rows(judge, n=12, proxy=proxy)
    evals_rows = [r for r in rows if "eval/proxy" in r]
    over = overoptimisation_report([r["step"] for r in evals_rows], [r["eval/proxy"] for r in evals_rows],
                                   [r["eval/reward"] for r in evals_rows], x_name="step")
    assert over["flag"]["flagged"] and over["flag"]["x"] == 4.0  # the premise: flagged at step 4
    return make_run(tmp_path / name, rows, run_info=RL_INFO, config=PROXY_CONFIG, evals={"overoptimisation": over})


def test_the_guard_names_its_step_in_the_headline_and_its_section(tmp_path):
    run = guarded_run(tmp_path)
    page = render(run)
    head = section_of(page, "headline")
    assert re.search(r"stop at or before step <span class='num' data-src='overoptimisation' data-key='flag.x'>4<", head)
    assert "<a href='#guards'>" in head
    over = json.loads((run / "eval" / "overoptimisation.json").read_text())
    spans = dict(re.findall(r"data-src='overoptimisation' data-key='([^']*)'>([^<]*)<", head))
    assert close(spans["flag.proxy_gain"], over["flag"]["proxy_gain"]) and close(spans["flag.judge_drop"],
                                                                                 over["flag"]["judge_drop"])
    assert "The over-optimisation guard flags step 4" in head  # the caveat under the verdict
    guards = section_of(page, "guards")
    assert plot_names(guards) == ["overoptimisation:rl"]
    assert "Flagged: stop at or before step 4" in visible_text(guards)
    assert "<tr class=case-regressed><td>4</td>" in guards  # the flagged point is marked in the table
    assert "py:lenrw:reward" in guards and "gold" in guards
    # the guard's warning is counted and links to the guards section, not to "other evaluations"
    warnings = section_of(page, "warnings")
    assert "over-optimisation: after step=4" in warnings and "href='#guards'" in warnings
    assert "other-evals" not in page
    # and the held-out reward fell overall: 0.40 -> 0.30
    assert "The held-out reward fell" in head and "(−0.1)" in head


def test_an_unflagged_guard_and_a_run_with_no_proxy_say_so(tmp_path):
    rows = rl_rows([0.4, 0.5, 0.6], proxy=[1.0, 1.1, 1.2])
    ev = [r for r in rows if "eval/proxy" in r]
    over = overoptimisation_report([r["step"] for r in ev], [r["eval/proxy"] for r in ev],
                                   [r["eval/reward"] for r in ev])
    page = render(make_run(tmp_path / "ok", rows, run_info=RL_INFO, config=PROXY_CONFIG,
                           evals={"overoptimisation": over}))
    assert "not flagged</span>: the proxy and the held-out judge did not diverge over 3 evaluations" in page
    assert "Not flagged" in section_of(page, "guards")
    # reward = eval_reward: the guard cannot run, and both the headline and its section say why
    gold = render(make_run(tmp_path / "gold", rl_rows([0.4, 0.5]), run_info=RL_INFO, config=RL_CONFIG))
    assert "not run: the training reward (<code>gold</code>) is the held-out judge" in section_of(gold, "headline")
    assert "the training reward is the held-out judge" in section_of(gold, "guards")


def test_without_held_out_prompts_the_headline_cannot_say(tmp_path):
    rows = [r for r in rl_rows([0.4, 0.5]) if "train/reward" in r]
    rows = [{k: v for k, v in r.items() if not k.startswith("eval/")} for r in rows]
    head = section_of(render(make_run(tmp_path / "noeval", rows, run_info=RL_INFO, config=RL_CONFIG)), "headline")
    assert "<p class='verdict unknown'>Cannot say: no held-out reward was logged" in head
    assert "the training reward went from 0.35 to 0.7, which is the quantity being optimised" in head


def test_policy_json_keeps_its_block_under_the_rl_one(tmp_path):
    pol = {"win_rate": 0.6, "win_rate_ci95": [0.52, 0.68], "num_prompts": 128, "wins": 70, "ties": 14, "losses": 44}
    page = render(make_run(tmp_path / "judged", rl_rows([0.4, 0.5]), run_info=RL_INFO, config=RL_CONFIG,
                           evals={"policy": pol}))
    head = section_of(page, "headline")
    titles = re.findall(r"<h3>([^<]*)</h3>", head)
    assert titles == ["Online RL (GRPO): held-out reward", "Policy against its baseline"]
    assert "Better than the baseline" in head and "Not judged yet" not in head
    assert "a mean without an interval" not in head  # eval policy's interval is on the page
    # not judged: no "not judged" block for an RL run, a pointer to `eval policy` instead
    bare = section_of(render(make_run(tmp_path / "bare", rl_rows([0.4, 0.5]), run_info=RL_INFO, config=RL_CONFIG)),
                      "headline")
    assert "Not judged yet" not in bare and "preftune eval policy RUN" in bare


def test_most_groups_tied_is_a_warning(tmp_path):
    rows = [r | {"train/tied_groups": 1.0} if "train/tied_groups" in r else r for r in rl_rows([0.4, 0.4])]
    page = render(make_run(tmp_path / "tied", rows, run_info=RL_INFO, config=RL_CONFIG))
    assert "train/tied_groups averages 1 over 8 logged steps" in section_of(page, "warnings")
    assert "Most groups tie (mean share 1)" in section_of(page, "headline")
    calm = render(make_run(tmp_path / "calm", rl_rows([0.4, 0.5]), run_info=RL_INFO, config=RL_CONFIG))
    assert "tied_groups averages" not in calm


def test_rl_page_has_no_python_repr_and_escapes_the_specs(tmp_path):
    cfg = "algo: grpo\nreward: \"py:<script>x</script>:f\"\neval_reward: gold\n"
    run = guarded_run(tmp_path, "escaped")
    (run / "config.yaml").write_text(cfg)
    page = render(run)
    text = visible_text(page)
    assert "{'" not in text and "[{" not in text
    assert "<script>x</script>" not in page and "py:&lt;script&gt;x&lt;/script&gt;:f" in page
    assert [s for s in re.findall(r"<section id='([^']*)'>", page)] == [
        "headline", "warnings", "provenance", "training", "guards", "data", "config", "last-values"]


@pytest.mark.filterwarnings("error::RuntimeWarning", "error::UserWarning")
def test_reward_vs_kl_draws_a_real_png_and_skips_what_cannot_be_drawn(monkeypatch):
    import io

    from PIL import Image

    monkeypatch.undo()  # conftest's stand-in renderer off: matplotlib draws
    png = rl_view.plot_reward_vs_kl([("held-out", [0.0, 2.0, 4.0], [0.0, 0.02, 0.05], [0.3, 0.4, 0.35]),
                                   ("training", [1.0, 2.0, 3.0], [0.01, float("nan"), 1e308], [0.2, 0.3, 0.4])])
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size == (576, 306) and img.mode == "P"  # 6.4 x 3.4 in at 90 dpi, palette


def test_a_rise_the_guard_flags_is_not_a_clean_win_and_the_best_evaluation_is_shown(tmp_path):
    proxy, judge = [1.0, 1.2, 1.5, 1.9], [0.40, 0.55, 0.50, 0.45]
    rows = rl_rows(judge, n=12, proxy=proxy)
    ev = [r for r in rows if "eval/proxy" in r]
    over = overoptimisation_report([r["step"] for r in ev], [r["eval/proxy"] for r in ev],
                                   [r["eval/reward"] for r in ev])
    assert over["flag"]["x"] == 4.0
    run = make_run(tmp_path / "peaked", rows, run_info=RL_INFO, config=PROXY_CONFIG, evals={"overoptimisation": over})
    head = section_of(render(run), "headline")
    verdict = re.search(r"<p class='verdict ([a-z]+)'>([^<]*)", head)
    assert verdict.group(1) == "neutral" and verdict.group(2).startswith("The held-out reward rose: 0.4 at step 0 → "
                                                                         "0.45 at step 12 (+0.05)")
    best = max(from_file(run, "eval/reward"), key=lambda p: p[1])
    assert best == (4.0, 0.55)
    assert ("best held-out evaluation</th><td><span class='num' data-src='metrics' data-key='eval/reward' "
            "data-step='4'>0.55</span> at step 4") in head
    # the unflagged rising run has no such row: its last evaluation is its best
    assert "best held-out evaluation" not in section_of(render(make_run(
        tmp_path / "rising", rl_rows([0.40, 0.45, 0.52]), run_info=RL_INFO, config=RL_CONFIG)), "headline")
