"""Descriptive statistics of a preference file (`preftune data stats`).

`compute_stats(records, tokenizer=None) -> dict` has these stable keys (shares are None when their
denominator is 0; every `*_counts` dict is sorted by count, then name):

- `num_rows`: int; `kinds`: {"pair"|"unpaired"|"rated": count}
- `length_units`: ["tokens"] with a tokenizer, else ["chars", "words"]
- `lengths`: {field: {unit: {"count", "min", "mean", "median", "p90", "max"}}} for the fields present:
  prompt, chosen, rejected (pairs), completion (unpaired), completions (rated, one per completion).
  p90 interpolates linearly (numpy's default).
- `close`: {"num": pairs with close=true, "num_known": pairs with close set, "share": num / num_pairs}
- `low_confidence`: {"threshold": 0.6, "num": pairs with confidence < threshold, "num_known", "share"}
- `chosen_longer`: {"unit", "num_longer", "num_shorter", "num_equal", "share": num_longer / num_pairs}
  (the length-bias signal: a share far above 0.5 means "pick the longer one" is a strong shortcut)
- `annotators`, `categories`, `sources`: {"counts": {name: rows}, "missing": rows without one}
- `attributes`: {dimension: {"chosen": n, "rejected": n, "tie": n}}
- `disagreement`: labeller disagreement on pairs that appear more than once (same prompt and the
  same two responses, in either order):
  {"num_repeated_pairs": groups of >= 2 rows, "num_rows_repeated": rows in them,
   "num_disagreeing_pairs": groups labelled both ways, "share": disagreeing / repeated groups,
   "per_annotator": {name: {"num_compared", "num_disagree", "share"}}}
  Per annotator, a row is compared with the majority of the *other* copies of its pair (rows whose
  other copies split evenly are not compared); `share` is how often that labeller went against them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from preftune.data.curate import pair_key
from preftune.data.records import PairRecord, RatedRecord, Record, UnpairedRecord, render_text

LOW_CONFIDENCE = 0.6


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile of an ascending list (numpy.percentile's default method)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def distribution(values: Sequence[float]) -> dict:
    v = sorted(values)
    if not v:
        return {"count": 0, "min": None, "mean": None, "median": None, "p90": None, "max": None}
    return {"count": len(v), "min": v[0], "mean": sum(v) / len(v), "median": percentile(v, 50),
            "p90": percentile(v, 90), "max": v[-1]}


def _fields(rec: Record) -> dict[str, list[str]]:
    out = {"prompt": [render_text(rec.prompt)]}
    if isinstance(rec, PairRecord):
        out["chosen"] = [render_text(rec.chosen)]
        out["rejected"] = [render_text(rec.rejected)]
    elif isinstance(rec, UnpairedRecord):
        out["completion"] = [render_text(rec.completion)]
    elif isinstance(rec, RatedRecord):
        out["completions"] = [render_text(c) for c in rec.completions]
    return out


def _measure(texts: list[str], tokenizer: Any) -> dict[str, list[int]]:
    if tokenizer is not None:
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        return {"tokens": [len(x) for x in ids]}
    return {"chars": [len(t) for t in texts], "words": [len(t.split()) for t in texts]}


def _share(num: int, den: int) -> float | None:
    return num / den if den else None


def _counts(values: list[str | None]) -> dict:
    counts: dict[str, int] = {}
    for v in values:
        if v is not None:
            counts[v] = counts.get(v, 0) + 1
    ordered = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return {"counts": ordered, "missing": sum(v is None for v in values)}


def labeller_disagreement(records: Sequence[Record]) -> dict:
    """The `disagreement` block of `compute_stats` (module docstring), on the pair records."""
    groups: dict[Any, list[tuple[bool, str | None]]] = {}
    for r in records:
        if isinstance(r, PairRecord):
            key, orient = pair_key(r)
            groups.setdefault(key, []).append((orient, r.annotator))
    repeated = [g for g in groups.values() if len(g) > 1]
    disagreeing = sum(1 for g in repeated if len({o for o, _ in g}) > 1)
    per: dict[str, dict[str, int]] = {}
    for g in repeated:
        num_yes = sum(o for o, _ in g)
        for orient, who in g:
            if who is None:
                continue
            others_yes = num_yes - orient
            others_no = len(g) - 1 - others_yes
            if others_yes == others_no:
                continue
            d = per.setdefault(who, {"num_compared": 0, "num_disagree": 0})
            d["num_compared"] += 1
            d["num_disagree"] += int(orient != (others_yes > others_no))
    per_annotator = {who: {**d, "share": _share(d["num_disagree"], d["num_compared"])}
                     for who, d in sorted(per.items())}
    return {"num_repeated_pairs": len(repeated), "num_rows_repeated": sum(len(g) for g in repeated),
            "num_disagreeing_pairs": disagreeing, "share": _share(disagreeing, len(repeated)),
            "per_annotator": per_annotator}


def compute_stats(records: Sequence[Record], tokenizer: Any = None) -> dict:
    """Statistics of parsed records; `tokenizer` (a Hugging Face tokenizer) switches lengths to tokens."""
    kinds: dict[str, int] = {}
    texts: dict[str, list[str]] = {}
    for r in records:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
        for name, ts in _fields(r).items():
            texts.setdefault(name, []).extend(ts)
    measured = {name: _measure(ts, tokenizer) for name, ts in texts.items()}
    lengths = {name: {unit: distribution(vals) for unit, vals in m.items()} for name, m in measured.items()}
    units = ["tokens"] if tokenizer is not None else ["chars", "words"]

    pairs = [r for r in records if isinstance(r, PairRecord)]
    n = len(pairs)
    unit = units[0]
    longer = shorter = 0
    if n:
        for c, rj in zip(measured["chosen"][unit], measured["rejected"][unit]):
            longer += c > rj
            shorter += c < rj
    attrs: dict[str, dict[str, int]] = {}
    for r in records:
        for dim, verdict in r.attributes.items():
            attrs.setdefault(dim, {"chosen": 0, "rejected": 0, "tie": 0})[verdict] += 1
    num_close = sum(r.close is True for r in pairs)
    num_low = sum(r.confidence is not None and r.confidence < LOW_CONFIDENCE for r in pairs)
    return {
        "num_rows": len(records),
        "kinds": dict(sorted(kinds.items())),
        "length_units": units,
        "lengths": lengths,
        "close": {"num": num_close, "num_known": sum(r.close is not None for r in pairs),
                  "share": _share(num_close, n)},
        "low_confidence": {"threshold": LOW_CONFIDENCE, "num": num_low,
                           "num_known": sum(r.confidence is not None for r in pairs), "share": _share(num_low, n)},
        "chosen_longer": {"unit": unit, "num_longer": longer, "num_shorter": shorter,
                          "num_equal": n - longer - shorter, "share": _share(longer, n)},
        "annotators": _counts([r.annotator for r in records]),
        "categories": _counts([r.category for r in records]),
        "sources": _counts([r.source for r in records]),
        "attributes": dict(sorted(attrs.items())),
        "disagreement": labeller_disagreement(records),
    }


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"
    return str(x)


def _top(block: dict, limit: int = 10) -> str:
    items = list(block["counts"].items())
    shown = ", ".join(f"{k} {v}" for k, v in items[:limit])
    more = f", ... {len(items) - limit} more" if len(items) > limit else ""
    missing = f" (missing on {block['missing']} rows)" if block["missing"] else ""
    return (shown + more or "none") + missing


def format_stats(s: dict, path: str = "") -> str:
    """Human-readable view of `compute_stats`'s dict."""
    out = [f"{path + ': ' if path else ''}{s['num_rows']} rows ("
           + ", ".join(f"{v} {k}" for k, v in s["kinds"].items()) + ")"]
    out.append("lengths (" + "/".join(s["length_units"]) + "):   min    mean  median     p90     max")
    for name, units in s["lengths"].items():
        for unit, d in units.items():
            out.append(f"  {name:>11} {unit:<6} " + " ".join(f"{_fmt(d[k]):>7}" for k in
                                                             ("min", "mean", "median", "p90", "max")))
    cl, lc, lo = s["close"], s["low_confidence"], s["chosen_longer"]
    out.append(f"close pairs: {cl['num']} ({_fmt(cl['share'])})    confidence < {lc['threshold']}: "
               f"{lc['num']} ({_fmt(lc['share'])}, set on {lc['num_known']})")
    out.append(f"chosen longer than rejected ({lo['unit']}): {_fmt(lo['share'])} "
               f"({lo['num_longer']} longer, {lo['num_shorter']} shorter, {lo['num_equal']} equal)")
    for key in ("annotators", "categories", "sources"):
        out.append(f"{key}: {_top(s[key])}")
    if s["attributes"]:
        out.append("attributes: " + "; ".join(
            f"{dim} " + " ".join(f"{v}={n}" for v, n in c.items()) for dim, c in s["attributes"].items()))
    d = s["disagreement"]
    line = (f"labeller disagreement: {d['num_disagreeing_pairs']} of {d['num_repeated_pairs']} repeated pairs "
            f"labelled both ways ({_fmt(d['share'])})")
    if d["per_annotator"]:
        line += "; against the other copies: " + ", ".join(
            f"{who} {v['num_disagree']}/{v['num_compared']}" for who, v in d["per_annotator"].items())
    out.append(line)
    return "\n".join(out)
