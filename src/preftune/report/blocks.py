"""The pieces every headline block is made of: the block itself and its tagged numbers (each a
`num_span` naming the file and key it came from, which the browser test checks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from preftune.report.fmt import esc, fmt_fixed, fmt_num, num_span


@dataclass
class Block:
    """One headline block: a verdict (level "good" | "neutral" | "bad" | "unknown") and its rows."""
    title: str
    level: str
    verdict: str
    notes: list[str] = field(default_factory=list)  # caveats under the verdict, HTML
    rows: list[tuple[str, str]] = field(default_factory=list)  # (label, HTML)


def n_span(v: Any, src: str, key: str, decimals: int | None = None, run: int | None = None) -> str:
    text = fmt_fixed(v, decimals) if decimals is not None and isinstance(v, float) else fmt_num(v)
    return num_span(text, src, key, run)


def metric_span(v: float, key: str, step: float) -> str:
    return f"<span class='num' data-src='metrics' data-key='{esc(key)}' data-step='{step:g}'>{esc(fmt_num(v))}</span>"
