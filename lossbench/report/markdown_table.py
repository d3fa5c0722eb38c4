"""The Markdown table of report.md and the texts of its cells: escaped labels, p-values, a mean with its interval,
a difference with its interval, durations."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from lossbench.analysis.measures import Measure
from lossbench.analysis.stats import PairedTest


def cell_text(text: str) -> str:
    """Text safe inside a Markdown table cell (labels contain '|')."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: Sequence[str] | None = None) -> list[str]:
    """A GitHub-flavoured Markdown table; `align` holds 'l' or 'r' per column (default: first left, rest right)."""
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(cell_text(h) for h in headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def p_text(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def mean_ci(m: Measure, row: pd.Series) -> str:
    """`98.79 [97.74, 99.85]`: the mean over seeds and its 95% t-interval (cut at the metric's range)."""
    mean, low, high = row[f"{m.name}_mean"], row[f"{m.name}_ci_low"], row[f"{m.name}_ci_high"]
    if missing(low):
        return m.show(mean)
    return f"{m.show(mean)} [{m.show(m.clip(low))}, {m.show(m.clip(high))}]"


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def diff_text(m: Measure, t: PairedTest) -> tuple[str, str]:
    """Δ and its interval in display units; the interval is cut at the largest possible difference."""
    if missing(t.mean_diff):
        return "—", "—"
    if t.low is None or t.high is None or not t.tested:
        return m.show(t.mean_diff, signed=True), "—"
    span = m.bounds[1] - m.bounds[0] if m.bounds else math.inf
    low, high = max(t.low, -span), min(t.high, span)
    return m.show(t.mean_diff, signed=True), f"[{m.show(low, signed=True)}, {m.show(high, signed=True)}]"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.1f} s"
    if seconds < 7200:
        return f"{seconds:,.0f} s ({seconds / 60:.1f} min)"
    return f"{seconds:,.0f} s ({seconds / 3600:.1f} h)"
