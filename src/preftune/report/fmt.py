"""Text and HTML pieces of the report: escaping, numbers rounded to their precision, nested tables.

Every value a reader sees goes through here: strings are HTML-escaped, floats are rounded (to the
precision their uncertainty supports where it is known, else to 4 significant digits), NaN and
infinities are spelled out, and dicts/lists become nested tables, so no cell ever holds a Python repr.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable
from typing import Any

# lists of more scalars than this are cut (with a count of the rest); tables of more rows likewise
MAX_LIST = 20
MAX_ROWS = 200
MAX_DEPTH = 4


def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def fmt_num(x: Any, sig: int = 4) -> str:
    """A number for reading: ints as they are, floats to `sig` significant digits without an
    exponent between 1e-3 and 1e6, NaN/inf spelled out. Not a number: its plain text."""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if not isinstance(x, float):
        return "—" if x is None else str(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    a = abs(x)
    if x == 0 or (1e-3 <= a < 10 ** sig):
        return f"{x:.{sig}g}" if x != 0 else "0"
    if 10 ** sig <= a < 1e6:
        return f"{x:.0f}"
    return f"{x:.{sig}g}".replace("e+0", "e+").replace("e-0", "e-")


def decimals_for(se: float | None, default: int = 3) -> int:
    """Decimals that show a statistic to the precision its standard error supports: the uncertainty
    to two significant digits and the value to the same place (the Particle Data Group's rule),
    clamped to [1, 6]. Unknown or zero uncertainty: `default`."""
    if se is None or not math.isfinite(se) or se <= 0:
        return default
    return min(6, max(1, -math.floor(math.log10(se)) + 1))


def fmt_fixed(x: Any, decimals: int) -> str:
    """A float to a fixed number of decimals (NaN/inf and huge values as fmt_num shows them)."""
    if not is_num(x):
        return fmt_num(x)
    x = float(x)
    if not math.isfinite(x) or abs(x) >= 1e6:
        return fmt_num(x)
    return f"{x:.{decimals}f}"


def proportion_se(p: float, n: int) -> float | None:
    """Standard error of a proportion p over n trials; at p = 0 or 1 the largest one (p = 1/2), so a
    perfect score is not printed to spurious precision."""
    if n <= 0 or not math.isfinite(p):
        return None
    var = p * (1 - p) if 0 < p < 1 else 0.25
    return math.sqrt(var / n)


def wilson_interval(successes: float, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (Wilson 1927; Newcombe 1998, method 3). Written here
    rather than imported because it is one formula and the report depends on nothing heavier than
    matplotlib; tests check it against Newcombe's worked example and statsmodels."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def num_span(text: str, src: str | None = None, key: str | None = None, run: int | None = None) -> str:
    """A number as shown, tagged with where it came from (the browser test reads the tags and checks
    the shown text against the JSON it names): src = eval file stem or "metrics", key = dotted path."""
    attrs = ""
    if run is not None:
        attrs += f" data-run='{run}'"
    if src is not None:
        attrs += f" data-src='{esc(src)}'"
    if key is not None:
        attrs += f" data-key='{esc(key)}'"
    return f"<span class='num'{attrs}>{esc(text)}</span>"


def scalar_text(v: Any) -> str:
    """A scalar (or a short list of scalars) as text; anything else as a count, never a repr."""
    if isinstance(v, (list, tuple)) and not v:
        return "(empty)"
    if isinstance(v, (list, tuple)) and all(is_num(x) or isinstance(x, str) or x is None for x in v):
        shown = ", ".join(fmt_num(x) for x in v[:MAX_LIST])
        more = f", … ({len(v) - MAX_LIST} more)" if len(v) > MAX_LIST else ""
        return f"{shown}{more}"
    if isinstance(v, dict):
        return f"({len(v)} fields)"
    if isinstance(v, (list, tuple)):
        return f"({len(v)} items)"
    return fmt_num(v)


def value_html(v: Any, depth: int = 0) -> str:
    """Any JSON value as HTML: dicts become key/value tables, lists of dicts tables with one column
    per key, lists of scalars comma lists, scalars rounded text; nested up to MAX_DEPTH."""
    if isinstance(v, dict) and depth < MAX_DEPTH:
        if not v:
            return "<span class='na'>(empty)</span>"
        rows = "".join(f"<tr><th>{esc(k)}</th><td>{value_html(x, depth + 1)}</td></tr>" for k, x in v.items())
        return f"<table class='kv'>{rows}</table>"
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v) and depth < MAX_DEPTH:
        cols = list(dict.fromkeys(k for x in v for k in x))
        head = "".join(f"<th>{esc(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{value_html(x.get(c), depth + 1)}</td>" for c in cols) + "</tr>"
                       for x in v[:MAX_ROWS])
        more = f"<p class='na'>… {len(v) - MAX_ROWS} more rows</p>" if len(v) > MAX_ROWS else ""
        return f"<table><tr>{head}</tr>{body}</table>{more}"
    if isinstance(v, list) and any(isinstance(x, (dict, list)) for x in v) and depth < MAX_DEPTH:
        items = "".join(f"<li>{value_html(x, depth + 1)}</li>" for x in v[:MAX_LIST])
        more = f"<li class='na'>… {len(v) - MAX_LIST} more</li>" if len(v) > MAX_LIST else ""
        return f"<ol class='items'>{items}{more}</ol>"
    if v is None:
        return "<span class='na'>—</span>"
    return esc(scalar_text(v))


def kv_table(rows: Iterable[tuple[str, str]], cls: str = "kv") -> str:
    """Rows of (label, HTML already escaped) as a two-column table."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class='{cls}'>{body}</table>" if body else ""


def flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """A nested dict as (dotted key, leaf value) rows; lists stay leaves."""
    if not isinstance(d, dict):
        return [(prefix, d)] if prefix else []
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.extend(flatten(v, key) if isinstance(v, dict) and v else [(key, v)])
    return out


def na(what: str) -> str:
    return f"<p class='na'>not available: {esc(what)}</p>"


def section(sid: str, title: str, body: str) -> str:
    return f"<section id='{esc(sid)}'><h2>{esc(title)}</h2>{body}</section>"


def figure(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f"<figure class='plot' data-plot='{esc(name)}'><img alt='{esc(caption)}' "
            f"src='data:image/png;base64,{data}'><figcaption>{esc(caption)}</figcaption></figure>")


def grid(figures: Iterable[str]) -> str:
    inner = "".join(figures)
    return f"<div class='grid'>{inner}</div>" if inner else ""


def text_of(value: Any) -> str:
    """A prompt or response as plain text: a string as is, chat messages as `role: content` lines
    (one user message as its content alone), anything else as a short description, never a repr."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "content" in value:
        value = [value]
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        if len(value) == 1 and value[0].get("role", "user") in ("user", "assistant"):
            return text_of(value[0].get("content", ""))
        return "\n".join(f"{m.get('role', '?')}: {text_of(m.get('content', ''))}" for m in value)
    if value is None:
        return ""
    return scalar_text(value)


def short_sha(sha: Any, n: int = 12) -> str:
    s = str(sha)
    return f"<code title='{esc(s)}'>{esc(s[:n])}</code>" if s else ""
