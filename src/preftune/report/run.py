"""Read a run folder (DESIGN.md section 4) and find what the report must warn about.

Reads config.yaml, run.json, metrics.jsonl, eval/*.json and data_stats.json; every piece may be
missing or damaged, and what could not be read is listed (`RunData.problems`), never silently dropped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preftune.report import plots
from preftune.report.plots import Series

LOW_ACCURACY = 0.6  # a preference accuracy below this at the end of training or in eval is flagged
KNOWN_EVALS = ("rm", "policy", "regress", "guards")


@dataclass
class RunData:
    """Everything the report reads from a run folder; None/empty where a file is absent."""
    path: Path
    run_info: dict | None = None
    config_text: str | None = None
    rows: list[dict] = field(default_factory=list)  # metrics.jsonl, one dict per logged step
    evals: dict[str, Any] = field(default_factory=dict)  # eval/NAME.json -> parsed content by NAME
    data_stats: dict | None = None
    problems: list[str] = field(default_factory=list)  # unreadable pieces, shown as warnings


@dataclass(frozen=True)
class Finding:
    """One highlighted warning. level: "error" | "warning" | "info"."""
    level: str
    source: str
    message: str


def _read_json(path: Path, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problems.append(f"{path.name}: unreadable ({e}); its section is left out")
        return None


def load_run(run_dir: str | Path) -> RunData:
    """Read a run folder. Raises ValueError when it has neither run.json nor metrics.jsonl."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"{path}: not a directory (expected a run folder made by `preftune train ...`)")
    if not (path / "run.json").is_file() and not (path / "metrics.jsonl").is_file():
        raise ValueError(f"{path}: not a run folder (it has neither run.json nor metrics.jsonl)")
    run = RunData(path=path)
    if (path / "run.json").is_file():
        info = _read_json(path / "run.json", run.problems)
        run.run_info = info if isinstance(info, dict) else None
    if (path / "config.yaml").is_file():
        run.config_text = (path / "config.yaml").read_text(encoding="utf-8", errors="replace")
    if (path / "metrics.jsonl").is_file():
        with open(path / "metrics.jsonl", encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    # typically the last line of a run killed mid-write; say so instead of failing
                    run.problems.append(f"metrics.jsonl line {lineno}: invalid JSON ({e.msg}); skipped")
                    continue
                if not isinstance(row, dict):
                    run.problems.append(f"metrics.jsonl line {lineno}: not a JSON object; skipped")
                    continue
                run.rows.append(row)
    for p in sorted((path / "eval").glob("*.json")) if (path / "eval").is_dir() else []:
        content = _read_json(p, run.problems)
        if content is not None:
            run.evals[p.stem] = content
    stats_path = path / "data_stats.json"
    stats = _read_json(stats_path, run.problems) if stats_path.is_file() else run.evals.pop("data_stats", None)
    run.data_stats = stats if isinstance(stats, dict) else None
    return run


# ----------------------------------------------------------------------------------------------
# warnings


def _mean_var(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    return m, (sum((x - m) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0)


def _trend(values: list[float]) -> tuple[float, float]:
    """(mean of the last quarter - mean of the first quarter, its standard error); quarters have at
    least 2 points. Comparing windows rather than endpoints keeps one noisy step from deciding."""
    k = max(2, len(values) // 4)
    m0, v0 = _mean_var(values[:k])
    m1, v1 = _mean_var(values[-k:])
    return m1 - m0, math.sqrt(v0 / k + v1 / k)


def _aligned(a: Series, b: Series) -> tuple[list[float], list[float]]:
    bmap = {x: y for x, y in zip(b.steps, b.values) if math.isfinite(y)}
    pairs = [(y, bmap[x]) for x, y in zip(a.steps, a.values) if x in bmap and math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def chosen_falls_while_margin_grows(chosen: list[float], margin: list[float]) -> bool:
    """True when the chosen log-prob falls and the reward margin grows, both beyond 2 standard
    errors (and the chosen drop beyond 1% of its starting size, to ignore numerically tiny drift).

    This is the DPO failure where the margin is won by pushing both completions down, rejected
    faster: the policy moves probability mass off the data it was told to prefer.
    chosen, margin: aligned per-step values, length N >= 4.
    """
    if len(chosen) < 4 or len(chosen) != len(margin):
        return False
    d_chosen, se_chosen = _trend(chosen)
    d_margin, se_margin = _trend(margin)
    start = abs(sum(chosen[:2]) / 2)
    return d_chosen < -max(2 * se_chosen, 0.01 * start) and d_margin > 2 * se_margin and d_margin > 0


def _pick(series: dict[str, Series], *names: str) -> Series | None:
    return next((series[n] for n in names if n in series), None)


def _metric_findings(series: dict[str, Series]) -> list[Finding]:
    out = []
    chosen = _pick(series, "train/logps/chosen", "train/rewards/chosen")
    margin = _pick(series, "train/rewards/margin", "train/margin")
    if chosen is not None and margin is not None:
        c, m = _aligned(chosen, margin)
        if chosen_falls_while_margin_grows(c, m):
            out.append(Finding("warning", "metrics.jsonl", (
                f"{chosen.name} falls ({c[0]:.4g} -> {c[-1]:.4g}) while {margin.name} grows "
                f"({m[0]:.4g} -> {m[-1]:.4g}): the margin is won by lowering the chosen completions' "
                "likelihood too. Consider a larger beta, an SFT term on chosen (RPO), or fewer epochs.")))
    for s in series.values():
        if plots.split_metric(s.name)[1] == "loss":
            bad = [x for x, y in zip(s.steps, s.values) if not math.isfinite(y)]
            if bad:
                out.append(Finding("error", "metrics.jsonl", f"{s.name} is NaN/inf at step {bad[0]:g}"
                                   + (f" and {len(bad) - 1} later steps" if len(bad) > 1 else "")))
    acc = _pick(series, "eval/rewards/accuracy", "eval/accuracy", "train/rewards/accuracy", "train/accuracy")
    if acc is not None:
        finite = [v for v in acc.values if math.isfinite(v)]
        tail = finite[-max(1, len(finite) // 4):]
        if tail and sum(tail) / len(tail) < LOW_ACCURACY:
            out.append(Finding("warning", "metrics.jsonl", f"{acc.name} ends at {sum(tail) / len(tail):.3f} "
                               f"(mean of the last {len(tail)} logged steps), below {LOW_ACCURACY}"))
    return out


def _walk_counts(obj: Any, prefix: str = "") -> list[tuple[str, str, int, Any]]:
    """(path, key, count, sibling row count) for every num_truncated/num_dropped in nested dicts."""
    out = []
    if isinstance(obj, dict):
        total = next((obj[k] for k in ("num_rows", "num_pairs", "num_examples") if k in obj), None)
        for k, v in obj.items():
            if k in ("num_truncated", "num_dropped") and isinstance(v, int) and not isinstance(v, bool):
                out.append((prefix, k, v, total))
            elif isinstance(v, dict):
                out.extend(_walk_counts(v, f"{prefix}{k}."))
    return out


def find_warnings(run: RunData, series: dict[str, Series]) -> list[Finding]:
    """All warnings for the top of the report, errors first."""
    found = [Finding("warning", "report", p) for p in run.problems]
    for name, content in run.evals.items():
        found.extend(eval_warnings(content, f"eval/{name}.json"))
    found.extend(_metric_findings(series))
    for where, key, n, total in _walk_counts(run.run_info or {}):
        if n > 0:
            share = f" of {total} ({100 * n / total:.1f}%)" if isinstance(total, int) and total > 0 else ""
            what = "truncated to fit max_length" if key == "num_truncated" else "dropped"
            found.append(Finding("warning", "run.json", f"{where}{key}: {n} rows{share} {what}"))
    rm = run.evals.get("rm")
    if isinstance(rm, dict) and isinstance(rm.get("accuracy"), (int, float)) and rm["accuracy"] < LOW_ACCURACY:
        found.append(Finding("warning", "eval/rm.json",
                             f"reward-model accuracy {rm['accuracy']:.3f} is below {LOW_ACCURACY}"))
    pol = run.evals.get("policy")
    ci = next((pol[k] for k in ("win_rate_ci", "win_rate_ci95") if k in pol), None) if isinstance(pol, dict) else None
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and isinstance(ci[1], (int, float)) and ci[1] < 0.5:
        found.append(Finding("warning", "eval/policy.json",
                             f"the model loses to the baseline: win-rate 95% interval "
                             f"[{ci[0]:.3f}, {ci[1]:.3f}] is below 0.5"))
    regressed = [c for c in regress_cases(run.evals.get("regress")) if c.get("regressed")]
    if regressed:
        found.append(Finding("error", "eval/regress.json", f"{len(regressed)} regression case(s) passed "
                             f"with the baseline and fail now: {', '.join(str(c.get('id')) for c in regressed[:10])}"))
    rank = {"error": 0, "warning": 1, "info": 2}
    return sorted(found, key=lambda f: rank[f.level])


def eval_warnings(obj: Any, source: str, depth: int = 0) -> list[Finding]:
    """Every `warnings` list inside an evaluator's JSON (guards nest them per report, e.g.
    policy.json's length_bias.warnings); items are sentences or {level, message} dicts."""
    out: list[Finding] = []
    if not isinstance(obj, dict) or depth > 3:
        return out
    listed = obj.get("warnings")
    for w in listed if isinstance(listed, list) else []:
        w = w if isinstance(w, dict) else {"message": str(w)}
        level = str(w.get("level", "warning")).lower()
        level = {"warn": "warning", "critical": "error"}.get(level, level)
        out.append(Finding(level if level in ("error", "warning", "info") else "warning", source,
                           str(w.get("message", w))))
    for k, v in obj.items():
        if k != "warnings" and isinstance(v, dict):
            out.extend(eval_warnings(v, source, depth + 1))
    return out


def _first(c: dict, *keys: str) -> Any:
    return next((c[k] for k in keys if k in c), None)


def regress_cases(reg: Any) -> list[dict]:
    """Cases of eval/regress.json as {id, prompt, baseline_pass, model_pass, regressed, failed}.

    Accepts {"cases": [...], "regressions": [...]} as `preftune eval regress` writes it (cases carry
    model_passed/baseline_passed; prompts and failed checks live in `regressions`) or a bare list of
    cases with baseline_pass/model_pass/regressed. `regressed` is derived when absent.
    """
    cases = reg.get("cases") if isinstance(reg, dict) else reg
    extra = {r.get("id"): r for r in (reg.get("regressions") or [] if isinstance(reg, dict) else [])
             if isinstance(r, dict)}
    out = []
    for c in cases if isinstance(cases, list) else []:
        if not isinstance(c, dict):
            continue
        more = extra.get(c.get("id"), {})
        base, model = _first(c, "baseline_pass", "baseline_passed"), _first(c, "model_pass", "model_passed")
        regressed = c.get("regressed", bool(base) and model is False)
        out.append({"id": c.get("id"), "prompt": _first(c, "prompt") or _first(more, "prompt") or "",
                    "baseline_pass": base, "model_pass": model, "regressed": bool(regressed),
                    "failed": _first(c, "model_failed") or _first(more, "failed_checks") or []})
    return out


# ----------------------------------------------------------------------------------------------
# evaluator outputs -> the shapes the plots need (each tolerates the brief's and the evaluators' names)


def reward_lists(rm: Any) -> tuple[list[float], list[float], list[float] | None, list[float] | None]:
    """(chosen rewards, rejected rewards, chosen lengths, rejected lengths) from eval/rm.json's
    `rewards`: either {"chosen": [...], "rejected": [...], "chosen_lengths"/"lengths": ...} or a list of
    per-pair {"chosen", "rejected", "chosen_length", "rejected_length"}. Empty lists when absent."""
    r = rm.get("rewards") if isinstance(rm, dict) else None
    if isinstance(r, list):
        pairs = [p for p in r if isinstance(p, dict)]
        r = {"chosen": [p.get("chosen") for p in pairs], "rejected": [p.get("rejected") for p in pairs],
             "chosen_lengths": [p.get("chosen_length") for p in pairs],
             "rejected_lengths": [p.get("rejected_length") for p in pairs]}
    if not isinstance(r, dict):
        return [], [], None, None
    lengths = r.get("lengths") if isinstance(r.get("lengths"), dict) else {}

    def nums(v: Any) -> list[float] | None:
        ok = isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        return [float(x) for x in v] if ok else None

    chosen, rejected = nums(r.get("chosen")) or [], nums(r.get("rejected")) or []
    return (chosen, rejected, nums(r.get("chosen_lengths", lengths.get("chosen"))),
            nums(r.get("rejected_lengths", lengths.get("rejected"))))


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def reliability_bins(rm: Any) -> list[dict]:
    """eval/rm.json's reliability table as [{mean_confidence, accuracy, count}], [] when absent.
    Accepts preftune.eval.metrics' names too (mean_prob, frac_positive, n)."""
    bins = rm.get("reliability") if isinstance(rm, dict) else None
    out = []
    for b in bins if isinstance(bins, list) else []:
        if not isinstance(b, dict):
            return []
        conf, acc = _first(b, "mean_confidence", "mean_prob"), _first(b, "accuracy", "frac_positive")
        if not (_is_num(conf) and _is_num(acc)):
            return []
        out.append({"mean_confidence": float(conf), "accuracy": float(acc), "count": _first(b, "count", "n")})
    return out


def corr_value(v: Any) -> float | None:
    """A correlation given as a number or as {"spearman", "pearson", ...} (Spearman preferred)."""
    if isinstance(v, dict):
        v = _first(v, "spearman", "pearson")
    return float(v) if _is_num(v) else None


def length_buckets(pol: Any) -> list[tuple[str, float]]:
    """(bucket label, win rate) from eval/policy.json's win_rate_by_length (top level or under
    length_bias): a dict label -> rate (or -> {win_rate}) or a list of {lo, hi, n, win_rate}."""
    if not isinstance(pol, dict):
        return []
    b = pol.get("win_rate_by_length")
    if b is None and isinstance(pol.get("length_bias"), dict):
        b = pol["length_bias"].get("win_rate_by_length")
    items: list[tuple[str, Any]] = []
    if isinstance(b, dict):
        items = [(str(k), v.get("win_rate") if isinstance(v, dict) else v) for k, v in b.items()]
    elif isinstance(b, list):
        items = [(f"{x.get('lo', 0):+.0f}..{x.get('hi', 0):+.0f}" if _is_num(x.get("lo")) else str(i),
                  x.get("win_rate")) for i, x in enumerate(b) if isinstance(x, dict)]
    return [(k, float(v)) for k, v in items if _is_num(v)]


def _as_curve(obj: dict) -> dict | None:
    cols = {k: obj.get(k) for k in ("x", "proxy", "judge")}
    pts = obj.get("series")
    if not all(isinstance(v, list) for v in cols.values()) and isinstance(pts, list) and pts and all(
            isinstance(p, dict) and all(_is_num(p.get(k)) for k in cols) for p in pts):
        cols = {k: [p[k] for p in pts] for k in cols}  # the evaluators' list of points
    if not all(isinstance(v, list) and v and all(_is_num(x) for x in v) for v in cols.values()):
        return None
    if not len(cols["x"]) == len(cols["proxy"]) == len(cols["judge"]):
        return None
    flag = obj.get("flag")
    flag_x = flag.get("x") if isinstance(flag, dict) and flag.get("flagged") and _is_num(flag.get("x")) else None
    return {**cols, "x_label": str(_first(obj, "x_name", "x_label", "xlabel") or "optimisation pressure"),
            "flag_x": flag_x, "name": obj.get("name")}


def overopt_curves(guards: Any) -> list[dict]:
    """Every proxy-vs-judge curve in eval/guards.json, as {name, x, proxy, judge, x_label, flag_x}.

    A curve is a dict with equal-length `x`/`proxy`/`judge` lists, or with `series` as a list of
    {x, proxy, judge} points (preftune.eval.guards.overoptimisation_report), at any nesting depth <= 3.
    """
    found: list[dict] = []

    def visit(obj: Any, path: str, depth: int) -> None:
        if depth > 3:
            return
        if isinstance(obj, list):
            for i, item in enumerate(obj):
                visit(item, f"{path}{i}", depth + 1)
            return
        if not isinstance(obj, dict):
            return
        curve = _as_curve(obj)
        if curve is not None:
            found.append({**curve, "name": str(curve["name"] or path)})
            return
        for k, v in obj.items():
            if k not in ("warnings", "flag"):
                visit(v, f"{path}.{k}" if path else str(k), depth + 1)

    visit(guards, "", 0)
    return found
