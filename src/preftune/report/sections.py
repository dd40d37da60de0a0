"""The report's detailed sections under the headline: warnings, training curves, the reward model's
evaluation, length bias, win-rate details, guards, data statistics, config, everything else.

Each function takes what it shows and returns one <section>; missing input says "not available".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from preftune.report import plots, rl_view, shapes
from preftune.report.findings import Finding
from preftune.report.fmt import (
    esc,
    figure,
    flatten,
    fmt_num,
    grid,
    is_num,
    kv_table,
    na,
    scalar_text,
    section,
    value_html,
)
from preftune.report.plots import PlotGroup, Series

NO_RM = "no eval/rm.json (run `preftune eval rm`)"
NO_POLICY = "no eval/policy.json (run `preftune eval policy`)"


def warnings_section(findings: list[Finding]) -> str:
    if not findings:
        return section("warnings", "Warnings", "<p class='ok'>No warnings: nothing suspicious was found.</p>")
    items = "".join(
        f"<div class='finding {esc(f.level)}'><b>{esc(f.level)}</b> <small>[{esc(f.source)}]</small> "
        f"{esc(f.message)}" + (f" <a href='#{esc(f.section)}'>evidence</a>" if f.section != "warnings" else "")
        + "</div>" for f in findings)
    return section("warnings", f"Warnings ({len(findings)})", items)


def curves_section(sid: str, title: str, groups: list[PlotGroup], missing: str, note: str = "",
                   extra: Sequence[str] = ()) -> str:
    """One figure per group, then `extra` figures (HTML) drawn elsewhere (e.g. RL's reward vs KL)."""
    if not groups and not extra:
        return section(sid, title, na(missing))
    return section(sid, title, note + grid([*(figure(g.name, plots.plot_group(g), g.title) for g in groups),
                                            *extra]))


# reward-vs-KL curves of an RL run: (label, reward metric); the KL is train/kl at the same step
REWARD_VS_KL = (("held-out reward (eval/reward)", "eval/reward"), ("training reward (train/reward)", "train/reward"))


def reward_vs_kl_figures(series: dict[str, Series]) -> list[str]:
    """The reward-vs-KL figure of an RL run: held-out and training reward against train/kl at the same
    steps. Step 0's held-out point gets KL 0, which holds by construction: the policy starts as its
    reference (a frozen copy or the adapter-disabled base). Empty when no KL or reward was logged."""
    kl = series.get("train/kl")
    if kl is None:
        return []
    curves = []
    for label, key in REWARD_VS_KL:
        if key in series:
            steps, xs, ys = rl_view.aligned_points(
                kl, series[key], origin=(0.0, 0.0) if key.startswith("eval/") else None)
            if steps:
                curves.append((label, steps, xs, ys))
    if not curves:
        return []
    return [figure("reward_vs_kl", rl_view.plot_reward_vs_kl(curves, "KL to the reference (train/kl, nats per token)"),
                   "reward vs KL to the reference, in step order (the over-optimisation view)")]


def last_values_section(series: dict[str, Series]) -> str:
    if not series:
        return section("last-values", "Last logged values", na("no metrics"))
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(fmt_num(s.values[-1]))}</td><td>{esc(fmt_num(s.steps[-1]))}</td>"
                   f"<td>{len(s.values)}</td></tr>" for k, s in series.items())
    return section("last-values", "Last logged values",
                   f"<table><tr><th>metric</th><th>last value</th><th>at step</th><th>points</th></tr>{rows}</table>")


def scalars(d: dict, skip: tuple[str, ...] = ()) -> str:
    """Key/value table of a dict's scalars and short numeric lists (e.g. an interval)."""
    rows = [(k, esc(scalar_text(v))) for k, v in d.items()
            if k not in skip and not isinstance(v, dict)
            and (not isinstance(v, list) or (len(v) <= 4 and all(is_num(x) for x in v)))]
    return kv_table(rows)


# ----------------------------------------------------------------------------------------------
# reward model


def rm_eval_section(rm: Any) -> str:
    title = "Reward-model evaluation"
    if not isinstance(rm, dict):
        return section("rm-eval", title, na(NO_RM))
    body = scalars(rm, skip=("rewards", "reliability", "accuracy_by", "head_accuracy"))
    by = rm.get("accuracy_by")
    if isinstance(by, dict) and any(isinstance(v, dict) and v for v in by.values()):
        tables = []
        for group, table in by.items():
            if not isinstance(table, dict) or not table:
                continue
            if all(isinstance(v, dict) for v in table.values()):
                rows = sorted(table.items(), key=lambda kv: -_count(kv[1]))
                cells = "".join(f"<tr><td>{esc(k)}</td><td>{esc(fmt_num(shapes.num(v, 'accuracy'), 3))}</td>"
                                f"<td>{esc(fmt_num(shapes.first(v, 'n', 'num_pairs')))}</td></tr>" for k, v in rows)
                tables.append(f"<div><h4>by {esc(group)}</h4><table><tr><th>{esc(group)}</th><th>accuracy</th>"
                              f"<th>pairs</th></tr>{cells}</table></div>")
            else:
                tables.append(f"<div><h4>{esc(group)}</h4>{value_html(table)}</div>")
        body += "<h3>Accuracy by group</h3><div class='tables'>" + "".join(tables) + "</div>"
    if isinstance(rm.get("head_accuracy"), dict):
        body += "<h3>Accuracy of each head</h3>" + value_html(rm["head_accuracy"])
    return section("rm-eval", title, body)


def _count(d: dict) -> float:
    n = shapes.num(d, "n", "num_pairs")
    return n if n is not None and math.isfinite(n) else 0.0


def rewards_section(rm: Any) -> str:
    chosen, rejected, c_len, r_len = shapes.reward_lists(rm)
    if not chosen or not rejected:
        why = "eval/rm.json has no per-pair rewards" if isinstance(rm, dict) else NO_RM
        return section("rewards", "Reward distributions", na(why))
    figs = [figure("reward_hist", plots.plot_reward_histograms(chosen, rejected), "chosen vs rejected rewards")]
    if c_len and r_len:
        figs.append(figure("rm_length_hist", plots.plot_histograms(
            [("chosen", c_len), ("rejected", r_len)], "Lengths of the evaluated pairs", "characters",
            colors=[plots.COLORS["chosen"], plots.COLORS["rejected"]]), "lengths of chosen vs rejected responses"))
    return section("rewards", "Reward distributions", grid(figs))


def calibration_section(rm: Any) -> str:
    bins = shapes.reliability_bins(rm)
    if not bins:
        why = "eval/rm.json has no reliability bins" if isinstance(rm, dict) else NO_RM
        return section("calibration", "Calibration", na(why))
    fig = figure("reliability", plots.plot_reliability(bins, shapes.num(rm, "ece")), "reliability diagram")
    rows = "".join(f"<tr><td>{esc(fmt_num(b['mean_confidence'], 3))}</td><td>{esc(fmt_num(b['accuracy'], 3))}</td>"
                   f"<td>{esc(fmt_num(b['count']))}</td></tr>" for b in bins)
    table = f"<table><tr><th>mean confidence</th><th>observed accuracy</th><th>count</th></tr>{rows}</table>"
    return section("calibration", "Calibration", grid([fig]) + table)


def length_bias_section(rm: Any, pol: Any) -> str:
    parts = []
    chosen, rejected, c_len, r_len = shapes.reward_lists(rm)
    rl_corr = shapes.corr_value(rm.get("reward_length_corr")) if isinstance(rm, dict) else None
    if c_len and r_len and len(c_len) == len(chosen) and len(r_len) == len(rejected):
        parts.append(figure("reward_vs_length", plots.plot_reward_vs_length(
            (c_len, chosen), (r_len, rejected), rl_corr), "reward vs length"))
    shorter, longer = shapes.num(rm, "accuracy_chosen_shorter"), shapes.num(rm, "accuracy_chosen_longer")
    if shorter is not None and longer is not None:
        parts.append(figure("accuracy_by_length", plots.plot_bars(
            ["chosen shorter", "chosen longer"], [shorter, longer], "RM accuracy by which completion is longer",
            "accuracy", colors=["#1f77b4", "#ff7f0e"], ylim=(0, 1.05)), "accuracy: chosen shorter vs longer"))
    buckets = shapes.length_buckets(pol)
    if buckets:
        parts.append(figure("win_rate_by_length", plots.plot_bars(
            [k for k, _ in buckets], [v for _, v in buckets], "Win rate by length bucket", "win rate",
            ylim=(0, 1.05)), "win rate by length bucket (model - baseline length)"))
    table: list[tuple[str, Any]] = [("reward_length_corr", rl_corr)] if rl_corr is not None else []
    table += [(k, shapes.num(rm, k)) for k in ("accuracy_chosen_shorter", "accuracy_chosen_longer",
                                                "length_baseline_accuracy") if shapes.num(rm, k) is not None]
    if isinstance(pol, dict):
        table += [(k, v) for k, v in pol.items() if "length" in k and is_num(v)]
        for key in ("length_bias", "reward_length_bias"):
            lb = pol.get(key) if isinstance(pol.get(key), dict) else {}
            table += [(f"{k}_corr", shapes.corr_value(v)) for k, v in lb.items() if shapes.corr_value(v) is not None]
    if not parts and not table:
        return section("length-bias", "Length bias", na("no length statistics in eval/rm.json or eval/policy.json"))
    return section("length-bias", "Length bias", kv_table((k, esc(fmt_num(v))) for k, v in table) + grid(parts))


POLICY_SKIP = ("samples", "win_rate_by_length", "length_bias", "reward_length_bias", "uncertain_responses", "warnings")


def win_rate_section(pol: Any) -> str:
    title = "Win rate against the baseline: details"
    if not isinstance(pol, dict):
        return section("win-rate", title, na(NO_POLICY))
    figs = []
    counts = [shapes.num(pol, k) for k in ("wins", "ties", "losses")]
    if all(c is not None for c in counts):
        figs.append(figure("win_tie_loss", plots.plot_bars(["wins", "ties", "losses"], counts, "Judged outcomes",
                                                           "count", colors=["#2ca02c", "#9a9a9a", "#d62728"]),
                           "wins / ties / losses against the baseline"))
    samples = shapes.policy_samples(pol)
    if samples:
        figs.append(figure("answer_length_hist", plots.plot_histograms(
            [("baseline", [len(s["baseline"]) for s in samples]), ("tuned model", [len(s["model"]) for s in samples])],
            "Lengths of the sampled answers", "characters", colors=["#7f7f7f", "#1f77b4"]),
            "answer lengths: baseline vs tuned model"))
    body = scalars(pol, skip=POLICY_SKIP) + grid(figs)
    unc = pol.get("uncertain_responses")
    if isinstance(unc, dict) and unc.get("indices"):
        links = ", ".join(f"<a href='#answer-{int(i)}'>{int(i)}</a>" for i in unc["indices"][:30] if is_num(i))
        body += f"<p>Responses whose reward the ensemble disagrees on: {links}</p>"
    return section("win-rate", title, body)


def guards_section(guards: Any, overopt: Any = None, rl_config: dict | None = None) -> str:
    """eval/guards.json's over-optimisation curves and, for an RL run, eval/overoptimisation.json (the
    guard `train rl` runs on its evaluations: the proxy = the training reward on the held-out prompts,
    the judge = eval_reward, along the steps, the flagged step marked). rl_config: the RL run's config
    (its reward specs label the curves; when None the run is not RL)."""
    title = "Guards: over-optimisation"
    parts = []
    if isinstance(overopt, dict) or rl_config is not None:
        parts.append(_rl_guard(overopt, rl_config or {}))
    if isinstance(guards, dict):
        parts.append(("<h3>eval/guards.json</h3>" if parts else "") + _guards_json(guards))
    if not parts:
        return section("guards", title, na("no eval/guards.json"))
    return section("guards", title, "".join(parts))


def _rl_guard(over: Any, cfg: dict) -> str:
    head = "<h3>During training: the training reward (proxy) against the held-out judge</h3>"
    if not isinstance(over, dict):
        same = cfg.get("reward") is not None and cfg.get("reward") == cfg.get("eval_reward", "gold")
        why = ("the training reward is the held-out judge (reward = eval_reward), so there is no proxy to check; "
               "train with another --reward and eval_reward=gold" if same else
               "no eval/overoptimisation.json (`train rl` writes it when its reward differs from eval_reward and "
               "the run was evaluated at least twice)")
        return head + na(why)
    curves = shapes.overopt_curves(over)
    proxy_spec, judge_spec = cfg.get("reward"), cfg.get("eval_reward")
    labels = ""
    if isinstance(proxy_spec, str) or isinstance(judge_spec, str):
        labels = (f"<p>proxy: <code>{esc(proxy_spec or '?')}</code> (the training reward, eval/proxy); judge: "
                  f"<code>{esc(judge_spec or '?')}</code> (eval_reward, eval/reward), both on the held-out "
                  "prompts.</p>")
    figs = [figure("overoptimisation:rl" if i == 0 else f"overoptimisation:rl:{i}",
                   plots.plot_overoptimisation(c["x"], c["proxy"], c["judge"], c["x_label"], c["flag_x"]),
                   f"proxy vs held-out judge along {c['x_label']}") for i, c in enumerate(curves)]
    flag = over.get("flag") if isinstance(over.get("flag"), dict) else {}
    xname = str(over.get("x_name") or "step")
    if flag.get("flagged") is True and is_num(flag.get("x")):
        gain = (f": after it the proxy rose by {fmt_num(flag['proxy_gain'])} while the judge fell by "
                f"{fmt_num(flag['judge_drop'])}" if is_num(flag.get("proxy_gain")) and is_num(flag.get("judge_drop"))
                else "")
        verdict = (f"<p class='verdict bad'>Flagged: stop at or before {esc(xname)} {esc(fmt_num(flag['x']))}"
                   f"{esc(gain)}.</p>")
    elif flag.get("flagged") is False:
        verdict = ("<p class='verdict good'>Not flagged: the proxy never kept rising while the judge kept "
                   "falling.</p>")
    else:
        verdict = "<p class='verdict unknown'>eval/overoptimisation.json has no usable flag.</p>"
    table = ""
    if curves:  # the points in numbers too, the flagged one highlighted
        c = curves[0]
        mark = c["flag_x"]
        cells = "".join(f"<tr{' class=case-regressed' if mark is not None and x == mark else ''}><td>{esc(fmt_num(x))}"
                        f"</td><td>{esc(fmt_num(p))}</td><td>{esc(fmt_num(j))}</td></tr>"
                        for x, p, j in zip(c["x"], c["proxy"], c["judge"]))
        table = (f"<table><tr><th>{esc(xname)}</th><th>proxy</th><th>judge</th></tr>{cells}</table>")
    body = grid(figs) or na("eval/overoptimisation.json has no proxy/judge series")
    return head + verdict + labels + body + table


def _guards_json(guards: dict) -> str:
    curves = shapes.overopt_curves(guards)
    generic = ("", "series", "overoptimisation", "over_optimisation")
    names = ["overoptimisation" + ("" if c["name"] in generic else f":{c['name']}") for c in curves]
    if len(set(names)) < len(names):  # keep data-plot names unique
        names = [f"{n}:{i}" for i, n in enumerate(names)]
    figs = [figure(n, plots.plot_overoptimisation(c["x"], c["proxy"], c["judge"], c["x_label"], c["flag_x"]),
                   f"proxy vs judge along {c['x_label']}") for n, c in zip(names, curves)]
    body = grid(figs) or na("eval/guards.json has no proxy/judge series")
    return body + value_html(_without_series(guards))


def _without_series(obj: Any) -> Any:
    """guards.json minus the plotted series and the warnings (shown at the top)."""
    if isinstance(obj, dict):
        return {k: _without_series(v) for k, v in obj.items() if k not in ("warnings", "series", "x", "proxy", "judge")}
    return obj


# ----------------------------------------------------------------------------------------------
# data statistics and config


def _length_rows(lengths: Any) -> list[tuple[str, str, dict]]:
    """(field, unit, {count, min, mean, median, p90, max}) of data_stats' `lengths` (all numbers)."""
    out = []
    for fld, units in lengths.items() if isinstance(lengths, dict) else []:
        for unit, d in units.items() if isinstance(units, dict) else []:
            keys = ("min", "mean", "median", "p90", "max")
            if isinstance(d, dict) and all(is_num(d.get(k)) for k in keys):
                out.append((str(fld), str(unit), d))
    return out


def data_stats_section(stats: Any) -> str:
    title = "Data statistics"
    if not isinstance(stats, dict):
        return section("data", title, na("no data_stats.json (write it with `preftune data stats --json`)"))
    body, rest = "", dict(stats)
    rows = _length_rows(rest.get("lengths"))
    if rows:
        rest.pop("lengths")
        cols = ("count", "min", "mean", "median", "p90", "max")
        cells = "".join(f"<tr><td>{esc(f)}</td><td>{esc(u)}</td>"
                        + "".join(f"<td>{esc(fmt_num(d.get(c)))}</td>" for c in cols) + "</tr>" for f, u, d in rows)
        body += ("<h3>Lengths</h3><table><tr><th>field</th><th>unit</th>" + "".join(f"<th>{c}</th>" for c in cols)
                 + f"</tr>{cells}</table>")
        unit = rows[0][1]
        figs = [figure(f"data_lengths:{unit}", plots.plot_ranges([(f, d) for f, u, d in rows if u == unit],
                                                                 "Length distributions", unit),
                       f"length distributions ({unit})")]
        body += grid(figs)
    body += "<h3>Counts and shares</h3>" + value_html(rest)
    return section("data", title, body)


def config_section(run_config: dict, text: str | None) -> str:
    if not run_config:
        why = "config.yaml could not be parsed" if text else "no config.yaml in the run folder"
        return section("config", "Resolved config", na(why))
    rows = [(k, value_html(v) if isinstance(v, (list, dict)) and v else esc(scalar_text(v) if v != "" else "''"))
            for k, v in flatten(run_config)]
    return section("config", "Resolved config", kv_table(rows, "kv config"))


def other_evals_section(evals: dict, known: tuple[str, ...]) -> str:
    other = {k: v for k, v in evals.items() if k not in known}
    if not other:
        return section("other-evals", "Other evaluations", na("no other eval/*.json files"))
    return section("other-evals", "Other evaluations",
                   "".join(f"<h3>eval/{esc(k)}.json</h3>{value_html(v)}" for k, v in other.items()))
