"""Write one self-contained HTML report of a run folder (no network needed to view it).

Plots are PNGs inlined as data: URIs, CSS is inline, and the only script is a small inline checker
that marks each figure `data-drawn="1"` once its image decoded (the browser test reads those marks).
Every section whose input is missing says "not available" instead of failing.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

from preftune.report import plots
from preftune.report import run as rd
from preftune.report.plots import PlotGroup
from preftune.report.run import Finding, RunData

# ----------------------------------------------------------------------------------------------
# HTML pieces

CSS = """
body{font-family:system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:0 auto;max-width:1150px;padding:0 1.2em 3em;
color:#1d2330;line-height:1.4}
h1{margin:.6em 0 .2em}h2{border-bottom:2px solid #dde3ec;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0;font-size:.9em}td,th{border:1px solid #dde3ec;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f3f6fa}
pre{background:#f6f8fa;padding:.8em;overflow:auto;max-height:28em;font-size:.85em;border:1px solid #dde3ec}
.grid{display:flex;flex-wrap:wrap;gap:.8em}figure.plot{margin:0;border:1px solid #dde3ec;padding:.3em;background:#fff;
box-sizing:border-box;width:calc(50% - .4em);min-width:320px}figure.plot img{display:block;width:100%;height:auto}figcaption{font-size:.8em;color:#556}
.na{color:#7a8394;font-style:italic}nav a{margin-right:.9em;font-size:.9em}
.finding{padding:.45em .8em;margin:.3em 0;border-left:5px solid}.finding.error{background:#fdecea;border-color:#d93025}
.finding.warning{background:#fff6e0;border-color:#f0a500}.finding.info{background:#e8f1fd;border-color:#1a73e8}
.ok{background:#e6f4ea;border-left:5px solid #1e8e3e;padding:.45em .8em}
tr.regressed td{background:#fdecea}
"""

# Marks each figure drawn once its image decoded (or its svg has a box) and sets window.__report_ok;
# the browser test asserts on these marks in the dumped DOM. Errors are counted from the first script.
ERROR_HOOK = ("window.__report_errors=[];window.addEventListener('error',function(e){"
              "window.__report_errors.push(String(e.message||(e.target&&e.target.tagName)||e.type));},true);")
DRAW_CHECK = """window.addEventListener('load',function(){var figs=document.querySelectorAll('figure.plot'),n=0;
figs.forEach(function(f){var img=f.querySelector('img'),svg=f.querySelector('svg'),ok=false;
if(img){ok=img.complete&&img.naturalWidth>0;}else if(svg){var b=svg.getBBox();ok=b.width>0&&b.height>0;}
f.setAttribute('data-drawn',ok?'1':'0');if(ok){n++;}});var r=document.documentElement;
window.__report_ok=(n===figs.length&&window.__report_errors.length===0);
r.setAttribute('data-figures',String(figs.length));r.setAttribute('data-drawn-figures',String(n));
r.setAttribute('data-errors',window.__report_errors.join(' | '));r.setAttribute('data-report-ok',window.__report_ok?'1':'0');});"""


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v):
        shown = ", ".join(_fmt(x) for x in v[:20])
        return f"[{shown}{f', … ({len(v) - 20} more)' if len(v) > 20 else ''}]"
    return str(v)


def _value_html(v: Any, depth: int = 0) -> str:
    """Generic renderer: dicts become key/value tables, lists of dicts become tables, scalars text."""
    if isinstance(v, dict) and depth < 3:
        rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_value_html(x, depth + 1)}</td></tr>" for k, x in v.items())
        return f"<table>{rows}</table>"
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v) and depth < 3:
        cols = list(dict.fromkeys(k for x in v for k in x))
        head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{_value_html(x.get(c), depth + 1)}</td>" for c in cols) + "</tr>"
                       for x in v[:200])
        more = f"<p class='na'>… {len(v) - 200} more rows</p>" if len(v) > 200 else ""
        return f"<table><tr>{head}</tr>{body}</table>{more}"
    return _esc(_fmt(v) if not isinstance(v, (dict, list)) or depth >= 3 else json.dumps(v)[:300])


def _na(what: str) -> str:
    return f"<p class='na'>not available: {_esc(what)}</p>"


def _figure(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f"<figure class='plot' data-plot='{_esc(name)}'><img alt='{_esc(caption)}' "
            f"src='data:image/png;base64,{data}'><figcaption>{_esc(caption)}</figcaption></figure>")


def _section(sid: str, title: str, body: str) -> str:
    return f"<section id='{sid}'><h2>{_esc(title)}</h2>{body}</section>"


def _get(d: Any, *keys: str) -> Any:
    return next((d[k] for k in keys if isinstance(d, dict) and d.get(k) is not None), None)


# ----------------------------------------------------------------------------------------------
# sections


def _config_dict(run: RunData) -> dict:
    if not run.config_text:
        return {}
    import yaml

    try:
        cfg = yaml.safe_load(run.config_text)
    except yaml.YAMLError:
        return {}  # the raw text is still shown in the config section
    return cfg if isinstance(cfg, dict) else {}


def _paths(data: Any) -> str | None:
    """Data file paths from run.json's `data`: a list of {path, ...}, a dict path -> {sha256, ...}
    (what train/run.py writes), a dict split -> {path, ...}, or a plain string."""
    if isinstance(data, dict):
        found = [str(_get(v, "path") or k) for k, v in data.items()]
    elif isinstance(data, list):
        found = [str(_get(x, "path") or "") if isinstance(x, dict) else str(x) for x in data]
    else:
        found = [str(data)] if data else []
    return ", ".join(p for p in found if p) or None


NOT_RECORDED = "<span class='na'>not recorded</span>"


def _header(run: RunData) -> str:
    info, cfg = run.run_info or {}, _config_dict(run)
    model = _get(info, "model", "model_name") or _get(cfg, "model")
    if isinstance(model, dict):
        model = _get(model, "name", "path", "alias") or json.dumps(model)
    git = _get(info, "git_sha", "git")
    if isinstance(git, dict):
        git = f"{_get(git, 'sha', 'commit')}{' (dirty)' if git.get('dirty') else ''}"
    versions = _get(info, "versions")
    if isinstance(versions, dict):
        versions = ", ".join(f"{k} {v}" for k, v in versions.items())
    rows = [("run folder", str(run.path)), ("stage", _get(info, "stage") or _get(cfg, "stage")),
            ("model", model), ("reference", _get(info, "ref_model", "reference_model")),
            ("data", _paths(_get(info, "data")) or _paths(_get(cfg, "data"))), ("seed", _get(info, "seed")),
            ("started", _get(info, "start_time", "started_at", "started")),
            ("ended", _get(info, "end_time", "ended_at", "ended")), ("git sha", git), ("versions", versions)]
    if isinstance(info.get("argv"), list):
        rows.append(("command", " ".join(str(a) for a in info["argv"])))
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(_fmt(v)) if v is not None else NOT_RECORDED}</td></tr>"
                   for k, v in rows)
    return (f"<header><h1>preftune report: {_esc(run.path.name)}</h1><table>{body}</table></header>"
            + ("" if run.run_info else _na("run.json is missing, so the header is incomplete")))


def _warnings(findings: list[Finding]) -> str:
    if not findings:
        return _section("warnings", "Warnings", "<p class='ok'>No warnings: nothing suspicious was found.</p>")
    items = "".join(f"<div class='finding {f.level}'><b>{_esc(f.level)}</b> "
                    f"<small>[{_esc(f.source)}]</small> {_esc(f.message)}</div>" for f in findings)
    return _section("warnings", f"Warnings ({len(findings)})", items)


def _config(run: RunData) -> str:
    if run.config_text:
        return _section("config", "Resolved config", f"<pre>{_esc(run.config_text)}</pre>")
    cfg = _get(run.run_info, "config")
    body = f"<pre>{_esc(json.dumps(cfg, indent=2))}</pre>" if cfg else _na("no config.yaml in the run folder")
    return _section("config", "Resolved config", body)


def _data(run: RunData) -> str:
    info = run.run_info or {}
    prov = _get(info, "data")
    tok = _get(info, "tokenization", "tokenisation", "tokenize")
    body = "<h3>Provenance</h3>" + (_value_html(prov) if prov else _na("run.json records no data files"))
    body += "<h3>Tokenisation</h3>" + (_value_html(tok) if tok else _na("run.json records no tokenisation report"))
    body += "<h3>Data statistics</h3>" + (_value_html(run.data_stats) if run.data_stats
                                          else _na("no data_stats.json (write it with `preftune data stats --json`)"))
    return _section("data", "Data provenance and statistics", body)


def _curves(sid: str, title: str, groups: list[PlotGroup], missing: str, note: str = "") -> str:
    if not groups:
        return _section(sid, title, _na(missing))
    figs = "".join(_figure(g.name, plots.plot_group(g), g.title) for g in groups)
    return _section(sid, title, f"{note}<div class='grid'>{figs}</div>")


def _last_values(series: dict[str, plots.Series]) -> str:
    rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(_fmt(s.values[-1]))}</td><td>{_esc(_fmt(s.steps[-1]))}</td>"
                   f"<td>{len(s.values)}</td></tr>" for k, s in series.items())
    return f"<table><tr><th>metric</th><th>last value</th><th>at step</th><th>points</th></tr>{rows}</table>"


def _scalars(d: dict, skip: tuple[str, ...] = ()) -> str:
    """Key/value table of a dict's scalars and short numeric lists (e.g. a CI); long lists are plotted."""
    def shown(k: str, v: Any) -> bool:
        if k in skip or isinstance(v, dict):
            return False
        return not isinstance(v, list) or len(v) <= 4 and all(isinstance(x, (int, float)) for x in v)

    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(_fmt(v))}</td></tr>" for k, v in d.items() if shown(k, v))
    return f"<table>{rows}</table>" if rows else ""


NO_RM = "no eval/rm.json (run `preftune eval rm`)"


def _rm_eval(rm: Any) -> str:
    if not isinstance(rm, dict):
        return _section("rm-eval", "Reward-model evaluation", _na(NO_RM))
    body = _scalars(rm, skip=("rewards", "reliability", "accuracy_by"))
    by = rm.get("accuracy_by")
    if isinstance(by, dict) and by:
        body += "<h3>Accuracy by group</h3>" + _value_html(by)
    return _section("rm-eval", "Reward-model evaluation", body)


def _rewards(rm: Any) -> str:
    chosen, rejected, _, _ = rd.reward_lists(rm)
    if not chosen or not rejected:
        why = "eval/rm.json has no per-pair rewards" if isinstance(rm, dict) else NO_RM
        return _section("rewards", "Reward distributions", _na(why))
    return _section("rewards", "Reward distributions", _figure(
        "reward_hist", plots.plot_reward_histograms(chosen, rejected), "chosen vs rejected rewards"))


def _calibration(rm: Any) -> str:
    bins = rd.reliability_bins(rm)
    if not bins:
        why = "eval/rm.json has no reliability bins" if isinstance(rm, dict) else NO_RM
        return _section("calibration", "Calibration", _na(why))
    ece = rm.get("ece") if isinstance(rm.get("ece"), (int, float)) else None
    fig = _figure("reliability", plots.plot_reliability(bins, ece), "reliability diagram")
    return _section("calibration", "Calibration", fig + _value_html(bins))


def _num(d: Any, key: str) -> float | None:
    v = d.get(key) if isinstance(d, dict) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _length_bias(rm: Any, pol: Any) -> str:
    parts = []
    chosen, rejected, c_len, r_len = rd.reward_lists(rm)
    rl_corr = rd.corr_value(rm.get("reward_length_corr")) if isinstance(rm, dict) else None
    if c_len and r_len and len(c_len) == len(chosen) and len(r_len) == len(rejected):
        parts.append(_figure("reward_vs_length", plots.plot_reward_vs_length(
            (c_len, chosen), (r_len, rejected), rl_corr), "reward vs length"))
    shorter, longer = _num(rm, "accuracy_chosen_shorter"), _num(rm, "accuracy_chosen_longer")
    if shorter is not None and longer is not None:
        parts.append(_figure("accuracy_by_length", plots.plot_bars(
            ["chosen shorter", "chosen longer"], [shorter, longer], "RM accuracy by which completion is longer",
            "accuracy", colors=["#1f77b4", "#ff7f0e"], ylim=(0, 1.05)), "accuracy: chosen shorter vs longer"))
    buckets = rd.length_buckets(pol)
    if buckets:
        parts.append(_figure("win_rate_by_length", plots.plot_bars(
            [k for k, _ in buckets], [v for _, v in buckets], "Win rate by length bucket", "win rate",
            ylim=(0, 1.05)), "win rate by length bucket (model - baseline length)"))
    table: dict[str, Any] = {"reward_length_corr": rl_corr} if rl_corr is not None else {}
    for k in ("accuracy_chosen_shorter", "accuracy_chosen_longer"):
        if _num(rm, k) is not None:
            table[k] = _num(rm, k)
    if isinstance(pol, dict):
        table.update({k: v for k, v in pol.items() if "length" in k and isinstance(v, (int, float))})
        lb = pol.get("length_bias") if isinstance(pol.get("length_bias"), dict) else {}
        table.update({f"{k}_corr": rd.corr_value(v) for k, v in lb.items() if rd.corr_value(v) is not None})
    if not parts and not table:
        return _section("length-bias", "Length bias", _na("no length statistics in eval/rm.json or eval/policy.json"))
    return _section("length-bias", "Length bias", _scalars(table) + f"<div class='grid'>{''.join(parts)}</div>")


def _win_rate(pol: Any) -> str:
    if not isinstance(pol, dict):
        return _section("win-rate", "Win rate against the baseline",
                        _na("no eval/policy.json (run `preftune eval policy`)"))
    body = _scalars(pol, skip=("win_rate_by_length",))
    if isinstance(pol.get("samples"), list):
        body += f"<p>{len(pol['samples'])} judged samples are stored in eval/policy.json.</p>"
    counts = [_num(pol, k) for k in ("wins", "ties", "losses")]
    if all(c is not None for c in counts):
        body += _figure("win_tie_loss", plots.plot_bars(["wins", "ties", "losses"], counts, "Judged outcomes",
                                                        "count", colors=["#2ca02c", "#9a9a9a", "#d62728"]),
                        "wins / ties / losses against the baseline")
    return _section("win-rate", "Win rate against the baseline", body)


def _regressions(reg: Any) -> str:
    cases = rd.regress_cases(reg)
    if not cases:
        return _section("regressions", "Regression suite", _na("no eval/regress.json (run `preftune eval regress`)"))
    cases = sorted(cases, key=lambda c: not c["regressed"])  # regressed cases first
    num_regressed = sum(c["regressed"] for c in cases)
    rows = "".join(
        f"<tr class='{'regressed' if c['regressed'] else ''}'><td>{_esc(c['id'])}</td>"
        f"<td>{_esc(str(c['prompt'])[:200])}</td><td>{_esc(_fmt(c['baseline_pass']))}</td>"
        f"<td>{_esc(_fmt(c['model_pass']))}</td><td>{_esc(_fmt(c['regressed']))}</td>"
        f"<td>{_esc('; '.join(str(f) for f in c['failed'])[:300])}</td></tr>" for c in cases)
    head = ("<tr><th>id</th><th>prompt</th><th>baseline passes</th><th>model passes</th><th>regressed</th>"
            "<th>model's failed checks</th></tr>")
    summary = f"<p>{num_regressed} of {len(cases)} cases regressed.</p>"
    return _section("regressions", "Regression suite", f"{summary}<table>{head}{rows}</table>")


def _guards(guards: Any) -> str:
    if not isinstance(guards, dict):
        return _section("guards", "Guards: over-optimisation", _na("no eval/guards.json"))
    curves = rd.overopt_curves(guards)
    generic = ("", "series", "overoptimisation", "over_optimisation")
    names = ["overoptimisation" + ("" if c["name"] in generic else f":{c['name']}") for c in curves]
    if len(set(names)) < len(names):  # keep data-plot names unique
        names = [f"{n}:{i}" for i, n in enumerate(names)]
    figs = "".join(_figure(n, plots.plot_overoptimisation(c["x"], c["proxy"], c["judge"], c["x_label"], c["flag_x"]),
                           f"proxy vs judge along {c['x_label']}") for n, c in zip(names, curves))
    body = f"<div class='grid'>{figs}</div>" if figs else _na("eval/guards.json has no proxy/judge series")
    return _section("guards", "Guards: over-optimisation", body + _value_html(_without_series(guards)))


def _without_series(obj: Any) -> Any:
    """guards.json minus the plotted series and the warnings (shown at the top)."""
    if isinstance(obj, dict):
        return {k: _without_series(v) for k, v in obj.items() if k not in ("warnings", "series", "x", "proxy", "judge")}
    return obj


def _other_evals(run: RunData) -> str:
    other = {k: v for k, v in run.evals.items() if k not in rd.KNOWN_EVALS}
    if not other:
        return _section("other-evals", "Other evaluations", _na("no other eval/*.json files"))
    return _section("other-evals", "Other evaluations",
                    "".join(f"<h3>eval/{_esc(k)}.json</h3>{_value_html(v)}" for k, v in other.items()))


SECTIONS = ("warnings", "config", "data", "training", "rm-eval", "rewards", "calibration", "length-bias",
            "win-rate", "regressions", "guards", "other-metrics", "last-values", "other-evals")


def build_report(run: RunData) -> str:
    """The whole page as one string; sections in SECTIONS order after the header."""
    series = plots.extract_series(run.rows)
    known, other = plots.group_series(series)
    rm, pol = run.evals.get("rm"), run.evals.get("policy")
    note = ("<p>Faint lines are raw values; solid lines an exponential moving average (weight in the "
            "legend). Dashed: eval split.</p>")
    no_metrics = "no metrics.jsonl, or no numeric metrics in it" if not run.rows else "no known training metrics"
    body = [
        _header(run), _warnings(rd.find_warnings(run, series)), _config(run), _data(run),
        _curves("training", "Training curves", known, no_metrics, note), _rm_eval(rm), _rewards(rm),
        _calibration(rm), _length_bias(rm, pol), _win_rate(pol), _regressions(run.evals.get("regress")),
        _guards(run.evals.get("guards")),
        _curves("other-metrics", "Other metrics", other, "no metrics beyond the known ones"),
        _section("last-values", "Last logged values", _last_values(series) if series else _na("no metrics")),
        _other_evals(run),
    ]
    nav = "".join(f"<a href='#{s}'>{s}</a>" for s in SECTIONS)
    from preftune import __version__

    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>preftune report: {_esc(run.path.name)}</title><style>{CSS}</style>"
            f"<script>{ERROR_HOOK}</script></head><body><nav>{nav}</nav>{''.join(body)}"
            f"<footer><p class='na'>written by preftune {_esc(__version__)}</p></footer>"
            f"<script>{DRAW_CHECK}</script></body></html>\n")


def write_report(run_dir: str | Path, out: str | Path | None = None, force: bool = False) -> Path:
    """Write the report of `run_dir` to `out` (default RUN/report.html) and return its path.

    RUN/report.html belongs to the tool and is always rewritten; any other existing file is only
    replaced with force=True. The page is written to a temporary file and renamed, so a failure
    never leaves half a report behind.
    """
    run = rd.load_run(run_dir)
    own = run.path / "report.html"
    target = Path(out) if out is not None else own
    if target.exists() and target.resolve() != own.resolve() and not force:
        raise ValueError(f"{target}: already exists; pass --force to overwrite it")
    if target.is_dir():
        raise ValueError(f"{target}: is a directory; give a file path for the report")
    page = build_report(run)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, target)
    return target
