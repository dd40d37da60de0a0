"""Write one self-contained HTML report of a run folder (no network needed to view it).

The page opens with the headline (did it get better, in words and numbers), then the warnings, the
answers themselves, the regression cases, provenance, and the detailed sections. Plots are PNGs
inlined as data: URIs, CSS is inline, and the only scripts are inline: an error hook, a checker that
marks each figure `data-drawn="1"` once its image decoded (the browser test reads those marks), and
the table filters. Every section whose input is missing says "not available" instead of failing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from preftune.report import answers, headline, plots, provenance, sections
from preftune.report.findings import find_warnings
from preftune.report.fmt import esc
from preftune.report.run import KNOWN_EVALS, RunData, load_run

CSS = """
body{font-family:system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:0 auto;max-width:1200px;padding:0 1.2em 3em;
color:#1d2330;line-height:1.4}
h1{margin:.5em 0 .1em;font-size:1.7em}h2{border-bottom:2px solid #dde3ec;padding-bottom:.2em;margin-top:1.6em}
h3{margin:.9em 0 .3em}h4{margin:.4em 0 .2em;font-size:.95em}
.sub{color:#556;margin:0 0 .8em}
table{border-collapse:collapse;margin:.4em 0;font-size:.9em}td,th{border:1px solid #dde3ec;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f3f6fa;font-weight:600}
table.kv>tbody>tr>th,table.kv>tr>th{white-space:nowrap}
code{font-size:.9em;background:#f3f6fa;padding:0 .2em;border-radius:3px;word-break:break-all}
.grid{display:flex;flex-wrap:wrap;gap:.8em}figure.plot{margin:0;border:1px solid #dde3ec;padding:.3em;background:#fff;
box-sizing:border-box;width:calc(50% - .4em);min-width:320px}figure.plot img{display:block;width:100%;height:auto}
figcaption{font-size:.8em;color:#556}.tables{display:flex;flex-wrap:wrap;gap:1.2em}
.na{color:#7a8394;font-style:italic}\
nav{position:sticky;top:0;background:#fff;padding:.4em 0;border-bottom:1px solid #dde3ec;
z-index:2}nav a{margin-right:.9em;font-size:.85em}
.finding{padding:.45em .8em;margin:.3em 0;border-left:5px solid}.finding.error{background:#fdecea;border-color:#d93025}
.finding.warning{background:#fff6e0;border-color:#f0a500}.finding.info{background:#e8f1fd;border-color:#1a73e8}
.ok{background:#e6f4ea;border-left:5px solid #1e8e3e;padding:.45em .8em}
#headline .block{border:1px solid #dde3ec;border-radius:6px;padding:.2em 1em .6em;margin:.6em 0;background:#fbfcfe}
#headline table.headline{font-size:1em}#headline table.headline th{width:16em}
.verdict{font-size:1.15em;font-weight:600;padding:.5em .8em;border-radius:4px;margin:.5em 0}
.verdict.good{background:#e6f4ea;color:#0d5c22}.verdict.bad{background:#fdecea;color:#8c1d13}
.verdict.neutral{background:#fff6e0;color:#6b4a00}.verdict.unknown{background:#eef1f5;color:#445}
.caveat{margin:.2em 0 .4em;padding:.3em .8em;border-left:4px solid #f0a500;background:#fffaf0}
.ci{color:#445}.warn-count{font-size:1.05em}.okay{color:#1e8e3e}
.filters{margin:.5em 0;display:flex;gap:1.2em;align-items:center;flex-wrap:wrap}.shown{color:#556;font-size:.9em}
table.answers{width:100%;table-layout:fixed}table.answers td{overflow-wrap:anywhere}
table.answers .text{white-space:pre-wrap;max-height:16em;overflow:auto;font-size:.92em}
table.answers th:first-child{width:6.5em}table.answers th.c-n{width:2.5em}table.answers th.c-cat{width:8em}
table.answers th.c-v{width:7em}table.answers th.c-s{width:13em}
.badge{display:inline-block;padding:0 .45em;border-radius:3px;font-size:.85em;white-space:nowrap}
.badge.win,.badge.fixed{background:#e6f4ea;color:#0d5c22}.badge.loss,.badge.regressed{background:#fdecea;color:#8c1d13}
.badge.tie,.badge.pass,.badge.fail,.badge.unjudged,.badge.unknown{background:#eef1f5;color:#445}
tr.case-regressed td{background:#fdecea}.pass{color:#1e8e3e;font-weight:600}.fail{color:#b3261e;font-weight:600}
table.attrs{font-size:.8em;margin:.2em 0}table.attrs td,table.attrs th{padding:0 .3em}
ol.items{margin:0;padding-left:1.4em}tr:target td{outline:2px solid #1a73e8}
"""

# Errors are collected from the first script on; the browser test reads them from <html>'s attributes.
ERROR_HOOK = ("window.__report_errors=[];window.addEventListener('error',function(e){"
              "window.__report_errors.push(String(e.message||(e.target&&e.target.tagName)||e.type));},true);")
DRAW_CHECK = """window.addEventListener('load',function(){var figs=document.querySelectorAll('figure.plot'),n=0;
figs.forEach(function(f){var img=f.querySelector('img'),svg=f.querySelector('svg'),ok=false;
if(img){ok=img.complete&&img.naturalWidth>0;}else if(svg){var b=svg.getBBox();ok=b.width>0&&b.height>0;}
f.setAttribute('data-drawn',ok?'1':'0');if(ok){n++;}});var r=document.documentElement;
window.__report_ok=(n===figs.length&&window.__report_errors.length===0);
r.setAttribute('data-figures',String(figs.length));r.setAttribute('data-drawn-figures',String(n));
r.setAttribute('data-errors',window.__report_errors.join(' | '));\
r.setAttribute('data-report-ok',window.__report_ok?'1':'0');});"""
# Table filters: each .filters box names its table; a row stays visible when it matches every choice.
# A link to a hidden row (e.g. #answer-7) clears the filters so its target shows.
FILTERS = """document.querySelectorAll('.filters').forEach(function(f){\
var t=document.getElementById(f.getAttribute('data-table'));
if(!t){return;}var sels=f.querySelectorAll('select'),rows=t.tBodies[0].rows;
function apply(){var n=0;for(var i=0;i<rows.length;i++){var ok=true;sels.forEach(function(s){
if(s.value&&rows[i].getAttribute('data-'+s.getAttribute('data-filter'))!==s.value){ok=false;}});
rows[i].hidden=!ok;if(ok){n++;}}f.querySelector('.shown').textContent=n+' of '+rows.length+' shown';}
sels.forEach(function(s){s.addEventListener('change',apply);});
window.addEventListener('hashchange',function(){var el=document.getElementById(location.hash.slice(1));
if(el&&el.hidden&&t.contains(el)){sels.forEach(function(s){s.value='';});apply();el.scrollIntoView();}});apply();});"""

SECTION_TITLES = {
    "headline": "headline", "warnings": "warnings", "answers": "answers", "regressions": "regressions",
    "provenance": "provenance", "training": "training", "win-rate": "win rate", "rm-eval": "reward model",
    "rewards": "rewards", "calibration": "calibration", "length-bias": "length bias", "guards": "guards",
    "data": "data", "config": "config", "other-metrics": "other metrics", "last-values": "last values",
    "other-evals": "other evals"}
SECTIONS = tuple(SECTION_TITLES)
ALWAYS = ("headline", "warnings", "provenance", "training", "data", "config", "last-values")
# sections shown even without their input for a stage, because their absence is news
EXPECTED = {"dpo": ("answers", "regressions", "win-rate"), "policy": ("answers", "regressions", "win-rate"),
            "rm": ("rm-eval", "rewards", "calibration", "length-bias"), "sft": (),
            **{s: ("guards",) for s in headline.RL_STAGES}}  # RL: the guard's absence says why


def page(title: str, nav: Sequence[str], body: str) -> str:
    """The HTML document around a report body (nav: section ids, in order)."""
    from preftune import __version__

    links = "".join(f"<a href='#{s}'>{esc(SECTION_TITLES.get(s, s))}</a>" for s in nav)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{CSS}</style><script>{ERROR_HOOK}</script></head><body>"
            f"<nav>{links}</nav>{body}<footer><p class='na'>written by preftune {esc(__version__)}; one file, "
            f"no network needed</p></footer><script>{FILTERS}</script><script>{DRAW_CHECK}</script></body></html>\n")


def subtitle(run: RunData) -> str:
    bits = [esc(run.stage.upper()) if run.stage else "run", f"<code>{esc(run.model)}</code>" if run.model else ""]
    ended = run.info.get("ended") or run.info.get("end_time")
    if isinstance(ended, str):
        bits.append(esc(ended.replace("T", " ")))
    return " · ".join(b for b in bits if b)


def build_report(run: RunData, out_dir: Path | None = None, related: Sequence[RunData] = ()) -> str:
    """The whole page as one string. `out_dir` is the folder the page will be written to (links to
    other reports are relative to it); `related` are runs to link (e.g. the reward model used)."""
    series = plots.extract_series(run.rows)
    known, other = plots.group_series(series)
    rm, pol, reg = run.evals.get("rm"), run.evals.get("policy"), run.evals.get("regress")
    findings = find_warnings(run, series)
    blocks = headline.blocks_for(run.stage, run.evals, series, run.config)
    rl = run.stage in headline.RL_STAGES
    if rl:
        known = plots.rl_order(known)
    note = ("<p>Faint lines are raw values; solid lines an exponential moving average (weight in the "
            "legend). Dashed: eval split.</p>")
    no_metrics = "no metrics.jsonl, or no numeric metrics in it" if not run.rows else "no known training metrics"
    built = {
        "headline": lambda: headline.render_headline(f"preftune report: {run.path.name}", subtitle(run), blocks,
                                                     findings),
        "warnings": lambda: sections.warnings_section(findings),
        "answers": lambda: answers.answers_section(pol),
        "regressions": lambda: answers.regressions_section(reg),
        "provenance": lambda: provenance.provenance_section(run, out_dir, list(related)),
        "training": lambda: sections.curves_section("training", "Training curves", known, no_metrics, note,
                                                    sections.reward_vs_kl_figures(series) if rl else ()),
        "win-rate": lambda: sections.win_rate_section(pol),
        "rm-eval": lambda: sections.rm_eval_section(rm),
        "rewards": lambda: sections.rewards_section(rm),
        "calibration": lambda: sections.calibration_section(rm),
        "length-bias": lambda: sections.length_bias_section(rm, pol),
        "guards": lambda: sections.guards_section(run.evals.get("guards"), run.evals.get("overoptimisation"),
                                                  rl_config=run.config if rl else None),
        "data": lambda: sections.data_stats_section(run.data_stats),
        "config": lambda: sections.config_section(run.config, run.config_text),
        "other-metrics": lambda: sections.curves_section("other-metrics", "Other metrics", other,
                                                         "no metrics beyond the known ones"),
        "last-values": lambda: sections.last_values_section(series),
        "other-evals": lambda: sections.other_evals_section(run.evals, KNOWN_EVALS),
    }
    shown = [s for s in SECTIONS if _shown(s, run, bool(other))]
    body = "".join(built[s]() for s in shown)
    return page(f"preftune report: {run.path.name}", shown, body)


def _shown(sid: str, run: RunData, has_other_metrics: bool) -> bool:
    """Whether a section belongs on this run's page: always, expected for its stage, or has input."""
    if run.stage not in EXPECTED:
        return True  # an unknown kind of run: show everything, absences included
    if sid in ALWAYS or sid in EXPECTED.get(run.stage, ()):
        return True
    has = {"answers": "policy", "regressions": "regress", "win-rate": "policy", "rm-eval": "rm", "rewards": "rm",
           "calibration": "rm"}
    if sid == "guards":
        return "guards" in run.evals or "overoptimisation" in run.evals
    if sid in has:
        return has[sid] in run.evals
    if sid == "length-bias":
        return "rm" in run.evals or "policy" in run.evals
    if sid == "other-metrics":
        return has_other_metrics
    return sid == "other-evals" and any(k not in KNOWN_EVALS for k in run.evals)


def write_page(target: Path, text: str) -> Path:
    """Write to a temporary file and rename, so a failure never leaves half a page behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target


def check_target(target: Path, own: Path | None, force: bool) -> None:
    if target.is_dir():
        raise ValueError(f"{target}: is a directory; give a file path for the report")
    if target.exists() and (own is None or target.resolve() != own.resolve()) and not force:
        raise ValueError(f"{target}: already exists; pass --force to overwrite it")


def write_report(run_dir: str | Path, out: str | Path | None = None, force: bool = False,
                 related: Sequence[str | Path] = ()) -> Path:
    """Write the report of `run_dir` to `out` (default RUN/report.html) and return its path.

    RUN/report.html belongs to the tool and is always rewritten; any other existing file is only
    replaced with force=True. `related`: run folders to link from the provenance section.
    """
    run = load_run(run_dir)
    own = run.path / "report.html"
    target = Path(out) if out is not None else own
    check_target(target, own, force)
    rel = [load_run(r) for r in related]
    return write_page(target, build_report(run, target.parent, rel))
