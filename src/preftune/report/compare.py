"""`preftune report --compare RUN_A RUN_B [...] -o compare.html`: runs side by side on one page.

The headline numbers of every run in one table (with each run's verdict), the config keys that
differ, the training curves overlaid (one colour per run), and the same prompts' answers from each
run next to the shared baseline's. Reads run folders only, like the single-run report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from preftune.report import answers, headline, plots, shapes
from preftune.report.findings import find_warnings
from preftune.report.fmt import (
    esc,
    figure,
    flatten,
    fmt_fixed,
    fmt_num,
    grid,
    na,
    num_span,
    scalar_text,
    section,
)
from preftune.report.html import check_target, page, write_page
from preftune.report.provenance import report_link
from preftune.report.run import RunData, load_run, run_labels

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _cell(run: RunData, i: int, src: str, key: str, decimals: int | None = None, sig: int = 4) -> str:
    v = shapes.get_path(run.evals.get(src), key)
    if not shapes.is_num(v):
        return "<span class='na'>—</span>"
    text = fmt_fixed(v, decimals) if decimals is not None and isinstance(v, float) else fmt_num(v, sig)
    return num_span(text, src, key, run=i)


def _win_rate_cell(run: RunData, i: int) -> str:
    pol = run.evals.get("policy")
    if shapes.num(pol, "win_rate") is None:
        return "<span class='na'>not judged</span>"
    d = headline.win_rate_decimals(pol)
    key = shapes.interval_key(pol)
    ci = f" [{_cell(run, i, 'policy', key + '.0', d)}, {_cell(run, i, 'policy', key + '.1', d)}]" if key else ""
    return f"<b>{_cell(run, i, 'policy', 'win_rate', d)}</b>{ci}"


def _verdict_cell(run: RunData, series: dict) -> str:
    blocks = headline.blocks_for(run.stage, run.evals, series, run.config)
    return "".join(f"<p class='verdict {esc(b.level)}'>{b.verdict}</p>" for b in blocks[:2])


def _last(series: dict, key: str, i: int) -> str:
    s = series.get(key)
    if s is None or not s.values:
        return "<span class='na'>—</span>"
    return (f"<span class='num' data-run='{i}' data-src='metrics' data-key='{esc(key)}' "
            f"data-step='{s.steps[-1]:g}'>{esc(fmt_num(s.values[-1]))}</span>")


def headline_table(runs: list[RunData], labels: list[str], out_dir: Path) -> str:
    series = [plots.extract_series(r.rows) for r in runs]
    pol_d = [headline.win_rate_decimals(r.evals.get("policy")) for r in runs]

    def row(label: str, cells: list[str]) -> str:
        return f"<tr><th>{esc(label)}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"

    def cfg(key: str) -> list[str]:
        return [esc(scalar_text(shapes.get_path(r.config, key))) if shapes.get_path(r.config, key) is not None
                else "<span class='na'>—</span>" for r in runs]

    rows = [row("report", [report_link(r.path, out_dir, "open") for r in runs]),
            row("stage", [esc(r.stage or "?") for r in runs]), row("model", [esc(r.model or "?") for r in runs]),
            row("loss", cfg("loss")), row("beta", cfg("beta")),
            row("verdict", [_verdict_cell(r, s) for r, s in zip(runs, series)])]
    if any("policy" in r.evals for r in runs):
        rows += [row("win rate [95% interval]", [_win_rate_cell(r, i) for i, r in enumerate(runs)]),
                 row("wins / ties / losses", [" / ".join(_cell(r, i, "policy", k) for k in ("wins", "ties", "losses"))
                                              for i, r in enumerate(runs)]),
                 row("length-controlled win rate", [_cell(r, i, "policy", "lc_win_rate", pol_d[i])
                                                    for i, r in enumerate(runs)]),
                 row("KL(model ‖ baseline), k3", [_cell(r, i, "policy", "kl_k3", sig=3) for i, r in enumerate(runs)]),
                 row("regressions / cases", [f"{_cell(r, i, 'regress', 'num_regressions')} / "
                                             f"{_cell(r, i, 'regress', 'num_cases')}" for i, r in enumerate(runs)])]
    if any("rm" in r.evals for r in runs):
        rows += [row("RM accuracy", [_cell(r, i, "rm", "accuracy", sig=3) for i, r in enumerate(runs)]),
                 row("“longer wins” baseline", [_cell(r, i, "rm", "length_baseline_accuracy", sig=3)
                                                for i, r in enumerate(runs)]),
                 row("ECE", [_cell(r, i, "rm", "ece", sig=3) for i, r in enumerate(runs)])]
    for key in ("train/loss", "eval/loss"):
        if any(key in s for s in series):
            rows.append(row(f"last {key}", [_last(s, key, i) for i, s in enumerate(series)]))
    counts = [len(find_warnings(r, s)) for r, s in zip(runs, series)]
    rows.append(row("warnings", [esc(str(n)) for n in counts]))
    head = "<tr><th></th>" + "".join(f"<th>{LETTERS[i]}: {esc(lab)}</th>" for i, lab in enumerate(labels)) + "</tr>"
    return f"<table class='compare'>{head}{''.join(rows)}</table>"


def config_diff(runs: list[RunData], labels: list[str]) -> str:
    flat = [dict(flatten(r.config)) for r in runs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    missing = object()
    differ = [k for k in keys if len({repr(f.get(k, missing)) for f in flat}) > 1 and k not in ("out",)]
    if not differ:
        return section("config", "Config differences", "<p>The resolved configs are identical (apart from "
                       "the output folder).</p>" if any(flat) else na("no config.yaml in these runs"))
    head = "<tr><th>key</th>" + "".join(f"<th>{LETTERS[i]}</th>" for i in range(len(runs))) + "</tr>"
    body = "".join(f"<tr><td><code>{esc(k)}</code></td>" + "".join(
        f"<td>{esc(scalar_text(f[k])) if k in f else '<span class=na>absent</span>'}</td>" for f in flat) + "</tr>"
        for k in differ)
    return section("config", "Config differences", f"<table>{head}{body}</table>")


def overlay_section(runs: list[RunData], labels: list[str]) -> str:
    series = [plots.extract_series(r.rows) for r in runs]
    known_order = [s for _, _, _, suffixes in plots.KNOWN_GROUPS for s in suffixes]
    names = list(dict.fromkeys(k for s in series for k in s))
    names.sort(key=lambda k: (known_order.index(plots.split_metric(k)[1]) if plots.split_metric(k)[1] in known_order
                              else len(known_order), k))
    figs = []
    for name in names:
        with_it = [(f"{LETTERS[i]}: {labels[i]}", s[name]) for i, s in enumerate(series) if name in s]
        figs.append(figure(f"compare:{name}", plots.plot_overlay(with_it, name, plots.split_metric(name)[1]),
                           f"{name}, one colour per run"))
    if not figs:
        return section("training", "Training curves, overlaid", na("no numeric metrics in these runs"))
    return section("training", "Training curves, overlaid",
                   "<p>Faint: raw values; solid: moving average; dashed: eval split.</p>" + grid(figs))


def answers_compare(runs: list[RunData], labels: list[str]) -> str:
    title = "The same prompts, answered by each run"
    per_run = [_by_prompt(shapes.policy_samples(r.evals.get("policy"))) for r in runs]
    prompts = list(dict.fromkeys(p for m in per_run for p in m))
    judged = [i for i, m in enumerate(per_run) if m]
    if len(judged) == 0:
        return section("answers", title, na("none of these runs has samples in eval/policy.json"))
    shared = [p for p in prompts if all(p in per_run[i] for i in judged)]
    rows, agrees = [], []
    for k, p in enumerate(prompts):
        got = [per_run[i].get(p) for i in range(len(runs))]
        first = next(s for s in got if s is not None)
        outcomes = {s["outcome"] for s in got if s is not None}
        agree = "same" if len(outcomes) == 1 and all(got[i] is not None for i in judged) else "differ"
        agrees.append(agree)
        base = esc(first["baseline"])
        cells = "".join(_run_answer(s, first["baseline"]) for s in got)
        rows.append(f"<tr id='compare-{k}' data-agree='{agree}' data-category='{esc(first['category'] or '')}'>"
                    f"<td><a href='#compare-{k}'>{k}</a></td><td><div class='text'>{esc(first['prompt'])}</div></td>"
                    f"<td><div class='text'>{base}</div></td>{cells}</tr>")
    head = ("<tr><th class='c-n'>#</th><th>prompt</th><th>baseline</th>"
            + "".join(f"<th>{LETTERS[i]}: {esc(labels[i])}</th>" for i in range(len(runs))) + "</tr>")
    facets = [("agree", "verdicts", [(v, lab, agrees.count(v)) for v, lab in (("differ", "runs disagree"),
                                                                               ("same", "runs agree"))]),
              ("category", "category", _categories(per_run))]
    intro = (f"<p>{len(prompts)} prompts, {len(shared)} of them judged in every run. Each run's answer with its "
             "verdict against the baseline (shown once, from the first run that has the prompt).</p>")
    table = f"<table class='answers' id='compare-table'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    return section("answers", title, intro + answers.filters("compare-table", facets, len(rows)) + table)


def _by_prompt(samples: list[dict]) -> dict[tuple[str, int], dict]:
    """Samples keyed by (prompt text, occurrence): a prompt asked twice is two rows, and runs evaluated
    on the same prompts file line up whatever ids they carry."""
    seen: dict[str, int] = {}
    out = {}
    for s in samples:
        k = seen.get(s["prompt"], 0)
        seen[s["prompt"]] = k + 1
        out[(s["prompt"], k)] = s
    return out


def _categories(per_run: list[dict]) -> list[tuple[str, str, int]]:
    cats: dict[str, str | None] = {}
    for m in per_run:
        for p, s in m.items():
            cats.setdefault(p, s["category"])
    counts: dict[str, int] = {}
    for c in cats.values():
        if c:
            counts[c] = counts.get(c, 0) + 1
    return [(c, c, n) for c, n in sorted(counts.items())]


def _run_answer(s: dict | None, baseline: str) -> str:
    if s is None:
        return "<td><span class='na'>(not asked in this run)</span></td>"
    other = "" if s["baseline"] == baseline else (
        f"<div class='na'>this run's baseline answered differently:</div><div class='text'>{esc(s['baseline'])}</div>")
    score = f" <small>{esc(fmt_num(s['score_model'], 3))}</small>" if s["score_model"] is not None else ""
    return (f"<td><span class='badge {s['outcome']}'>{esc(answers.OUTCOME_LABEL[s['outcome']])}</span>{score}"
            f"<div class='text'>{esc(s['model'])}</div>{other}</td>")


def build_compare(runs: Sequence[RunData], out_dir: Path) -> str:
    runs = list(runs)
    labels = run_labels(runs)
    legend = "".join(f"<li><b>{LETTERS[i]}</b>: <code>{esc(r.path)}</code></li>" for i, r in enumerate(runs))
    body = (f"<section id='headline'><h1>preftune: {' vs '.join(esc(lab) for lab in labels)}</h1>"
            f"<ul class='sub'>{legend}</ul>{headline_table(runs, labels, out_dir)}</section>"
            + config_diff(runs, labels) + overlay_section(runs, labels) + answers_compare(runs, labels))
    return page(f"preftune compare: {' vs '.join(labels)}", ["headline", "config", "training", "answers"], body)


def write_compare(run_dirs: Sequence[str | Path], out: str | Path | None, force: bool = False) -> Path:
    """Write the comparison page of 2+ run folders to `out` (never overwritten without force)."""
    if out is None:
        raise ValueError("--compare needs -o FILE (where to write the comparison page)")
    if len(run_dirs) < 2:
        raise ValueError(f"--compare needs at least two run folders, got {len(run_dirs)}")
    if len(run_dirs) > len(LETTERS):
        raise ValueError(f"--compare takes at most {len(LETTERS)} runs, got {len(run_dirs)}")
    target = Path(out)
    check_target(target, None, force)
    runs = [load_run(d) for d in run_dirs]
    return write_page(target, build_compare(runs, target.parent))
