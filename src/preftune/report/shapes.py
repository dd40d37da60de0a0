"""Evaluator outputs -> the shapes the report draws. Each reader tolerates damaged input (wrong types,
missing keys, NaN, 1e308): it returns what it can read and never raises on the file's content.

Pure functions of parsed JSON; nothing here reads files or draws.
"""

from __future__ import annotations

import math
from typing import Any

from preftune.report.fmt import is_num, text_of

OUTCOMES = {1.0: "win", 0.5: "tie", 0.0: "loss"}


def first(c: Any, *keys: str) -> Any:
    return next((c[k] for k in keys if isinstance(c, dict) and c.get(k) is not None), None)


def num(d: Any, *keys: str) -> float | None:
    """The first of `keys` in `d` that holds a number, as a float (NaN/inf kept: the report shows
    them as such); None when none does."""
    v = first(d, *keys)
    return float(v) if is_num(v) else None


def get_path(d: Any, path: str) -> Any:
    """`"win_rate_ci95.0"` -> d["win_rate_ci95"][0]; None where the path does not exist."""
    for part in path.split("."):
        if isinstance(d, dict):
            d = d.get(part)
        elif isinstance(d, list) and part.isdigit() and int(part) < len(d):
            d = d[int(part)]
        else:
            return None
    return d


def interval(d: Any, *keys: str) -> tuple[float, float] | None:
    v = first(d, *keys)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(is_num(x) for x in v):
        return float(v[0]), float(v[1])
    return None


def finite(xs: Any) -> list[float]:
    """The finite numbers of a list, as floats (anything else left out)."""
    return [float(x) for x in xs if is_num(x) and math.isfinite(x)] if isinstance(xs, list) else []


def interval_key(pol: Any) -> str | None:
    return next((k for k in ("win_rate_ci95", "win_rate_ci") if interval(pol, k) is not None), None)


# ----------------------------------------------------------------------------------------------
# eval/policy.json


def policy_samples(pol: Any) -> list[dict]:
    """eval/policy.json's `samples` as [{index, id, category, prompt, model, baseline, verdict, outcome,
    score_model, score_baseline, gold_model, gold_baseline}]: texts rendered, verdict a float or None,
    outcome "win" | "tie" | "loss" | "unjudged" from the model's side, gold_* {attribute: score}."""
    samples = pol.get("samples") if isinstance(pol, dict) else None
    out = []
    for i, s in enumerate(samples if isinstance(samples, list) else []):
        if not isinstance(s, dict):
            continue
        v = num(s, "verdict")
        out.append({"index": i, "id": str(s["id"]) if s.get("id") is not None else None,
                    "category": str(s["category"]) if s.get("category") is not None else None,
                    "prompt": text_of(s.get("prompt")), "model": text_of(s.get("model")),
                    "baseline": text_of(s.get("baseline")), "verdict": v,
                    "outcome": OUTCOMES.get(v, "unjudged") if v is not None else "unjudged",
                    "score_model": num(s, "score_model"), "score_baseline": num(s, "score_baseline"),
                    "gold_model": _scores(s.get("gold_model")), "gold_baseline": _scores(s.get("gold_baseline"))})
    return out


def _scores(d: Any) -> dict[str, float | None]:
    if not isinstance(d, dict):
        return {}
    return {str(k): (float(v) if is_num(v) else None) for k, v in d.items() if is_num(v) or v is None}


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
        items = [(f"{x['lo']:+.0f}..{x['hi']:+.0f}" if is_num(x.get("lo")) and is_num(x.get("hi"))
                  and math.isfinite(x["lo"]) and math.isfinite(x["hi"]) else str(i), x.get("win_rate"))
                 for i, x in enumerate(b) if isinstance(x, dict)]
    return [(k, float(v)) for k, v in items if is_num(v) and math.isfinite(v)]


def corr_value(v: Any) -> float | None:
    """A correlation given as a number or as {"spearman", "pearson", ...} (Spearman preferred)."""
    if isinstance(v, dict):
        v = first(v, "spearman", "pearson")
    return float(v) if is_num(v) else None


# ----------------------------------------------------------------------------------------------
# eval/regress.json


def regress_cases(reg: Any) -> list[dict]:
    """Cases of eval/regress.json as {id, prompt, category, baseline_pass, model_pass, regressed,
    failed, model_response, baseline_response}.

    Accepts {"cases": [...], "regressions": [...]} as `preftune eval regress` writes it (prompts and
    responses on each case, or for older files only on the `regressions`) or a bare list of cases
    with baseline_pass/model_pass/regressed. `regressed` is derived when absent.
    """
    cases = reg.get("cases") if isinstance(reg, dict) else reg
    listed = reg.get("regressions") if isinstance(reg, dict) else None
    extra = {r.get("id"): r for r in (listed if isinstance(listed, list) else []) if isinstance(r, dict)}
    out = []
    for c in cases if isinstance(cases, list) else []:
        if not isinstance(c, dict):
            continue
        more = extra.get(c.get("id"), {})
        base, model = first(c, "baseline_pass", "baseline_passed"), first(c, "model_pass", "model_passed")
        regressed = c.get("regressed", bool(base) and model is False)
        failed = first(c, "model_failed") or first(more, "failed_checks") or []
        out.append({"id": str(c.get("id")), "prompt": text_of(first(c, "prompt") or first(more, "prompt") or ""),
                    "category": str(c["category"]) if c.get("category") is not None else None,
                    "baseline_pass": base if isinstance(base, bool) else None,
                    "model_pass": model if isinstance(model, bool) else None, "regressed": regressed is True,
                    "failed": [text_of(f) for f in failed] if isinstance(failed, list) else [text_of(failed)],
                    "baseline_failed": [text_of(f) for f in c.get("baseline_failed") or []
                                        ] if isinstance(c.get("baseline_failed"), list) else [],
                    "model_response": _opt_text(first(c, "model_response") or first(more, "model_response")),
                    "baseline_response": _opt_text(first(c, "baseline_response")
                                                   or first(more, "baseline_response"))})
    return out


def _opt_text(v: Any) -> str | None:
    return None if v is None else text_of(v)


# ----------------------------------------------------------------------------------------------
# eval/rm.json


def reward_lists(rm: Any) -> tuple[list[float], list[float], list[float] | None, list[float] | None]:
    """(chosen rewards, rejected rewards, chosen lengths, rejected lengths) from eval/rm.json's
    `rewards`: either {"chosen": [...], "rejected": [...], "chosen_lengths"/"lengths": ...} or a list of
    per-pair {"chosen", "rejected", "chosen_length", "rejected_length"}. Empty lists when absent;
    a list holding a non-number is not used."""
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
        ok = isinstance(v, list) and v and all(is_num(x) for x in v)
        return [float(x) for x in v] if ok else None

    chosen, rejected = nums(r.get("chosen")) or [], nums(r.get("rejected")) or []
    return (chosen, rejected, nums(r.get("chosen_lengths", lengths.get("chosen"))),
            nums(r.get("rejected_lengths", lengths.get("rejected"))))


def reliability_bins(rm: Any) -> list[dict]:
    """eval/rm.json's reliability table as [{mean_confidence, accuracy, count}], [] when absent or
    damaged. Accepts preftune.eval.metrics' names too (mean_prob, frac_positive, n)."""
    bins = rm.get("reliability") if isinstance(rm, dict) else None
    out = []
    for b in bins if isinstance(bins, list) else []:
        if not isinstance(b, dict):
            return []
        conf, acc = first(b, "mean_confidence", "mean_prob"), first(b, "accuracy", "frac_positive")
        if not (is_num(conf) and is_num(acc) and math.isfinite(conf) and math.isfinite(acc)):
            return []
        count = first(b, "count", "n")
        out.append({"mean_confidence": float(conf), "accuracy": float(acc),
                    "count": count if is_num(count) else None})
    return out


# ----------------------------------------------------------------------------------------------
# eval/guards.json


def _as_curve(obj: dict) -> dict | None:
    cols = {k: obj.get(k) for k in ("x", "proxy", "judge")}
    pts = obj.get("series")
    if not all(isinstance(v, list) for v in cols.values()) and isinstance(pts, list) and pts and all(
            isinstance(p, dict) and all(is_num(p.get(k)) for k in cols) for p in pts):
        cols = {k: [p[k] for p in pts] for k in cols}  # the evaluators' list of points
    if not all(isinstance(v, list) and v and all(is_num(x) for x in v) for v in cols.values()):
        return None
    if not len(cols["x"]) == len(cols["proxy"]) == len(cols["judge"]):
        return None
    flag = obj.get("flag")
    flag_x = flag.get("x") if isinstance(flag, dict) and flag.get("flagged") and is_num(flag.get("x")) else None
    return {**cols, "x_label": str(first(obj, "x_name", "x_label", "xlabel") or "optimisation pressure"),
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
