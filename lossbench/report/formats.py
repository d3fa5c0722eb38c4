"""The report for machines and papers: summary.csv (one row per cell, seeds aggregated), report.json (everything
the Markdown says, as numbers) and a LaTeX leaderboard. Stored units throughout CSV and JSON (accuracies as
fractions, NLL in nats, times in seconds, memory in MiB); the LaTeX table uses the Markdown's display units."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from lossbench.report.aggregate import SourceAnalysis
from lossbench.report.markdown import LEADERBOARD_COLUMNS
from lossbench.report.measures import Measure, measure
from lossbench.report.results import Results
from lossbench.report.stats import PairedTest

JSON_SCHEMA = 1


def summary_frame(analyses: list[SourceAnalysis]) -> pd.DataFrame:
    """Every source's per-cell summary in one table with a leading `source` column."""
    frames = []
    for a in analyses:
        frame = a.summary.drop(columns=[c for c in a.summary.columns if c.endswith("_n")])
        frame.insert(0, "source", a.source.name)
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    out["rank"] = out["rank"].astype("Int64")
    return out


def summary_csv(analyses: list[SourceAnalysis]) -> str:
    """summary.csv: source, rank, label, axes, seed counts, then <metric>_mean/_std/_ci_low/_ci_high."""
    return summary_frame(analyses).to_csv(index=False, lineterminator="\n")


def _clean(value: Any) -> Any:
    """JSON-safe value: NaN and pandas NA become null, numpy scalars plain numbers."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _test(t: PairedTest | None) -> dict[str, Any] | None:
    if t is None:
        return None
    return {k: _clean(v) for k, v in (("n", t.n), ("mean_diff", t.mean_diff), ("ci_low", t.low),
                                      ("ci_high", t.high), ("t", t.t), ("p", t.p), ("reason", t.reason))}


def report_json(analyses: list[SourceAnalysis], results: Results) -> str:
    """report.json: per source the cell summaries, diverged/failed seeds, comparisons, main effects, pivots."""
    m = analyses[0].metric
    sources = []
    for a in analyses:
        cells = [{k: _clean(v) for k, v in row.items() if not k.endswith("_n")}
                 for row in a.summary.to_dict(orient="records")]
        for cell in cells:
            cell["rank"] = None if cell["rank"] is None else int(cell["rank"])
        unranked = [{k: _clean(r[k]) for k in ("label", "seed", "status", "diverged_epoch", "error", "id")}
                    for _, r in a.unranked.iterrows()]
        comparisons = [{"label": c.label, "baseline": c.baseline, **(_test(c.test) or {}),
                        "p_holm": _clean(c.p_holm), "verdict": c.verdict,
                        "holm_confidence": _clean(c.confidence),
                        "holm_ci_low": _clean(c.adjusted.low) if c.adjusted else None,
                        "holm_ci_high": _clean(c.adjusted.high) if c.adjusted else None} for c in a.comparisons]
        effects = {axis: [{"level": e.level, "cells": e.cells, "mean": _clean(e.mean), "reference": e.reference,
                           "delta": _clean(e.delta), "diff": _test(e.diff)} for e in effs]
                   for axis, effs in a.effects.items()}
        pivots = [{"rows": p.rows, "columns": p.columns,
                   "values": {str(i): {str(c): _clean(p.table.loc[i, c]) for c in p.table.columns}
                              for i in p.table.index}} for p in a.pivots]
        sources.append({"name": a.source.name, "suite": a.source.suite, "dataset": a.source.dataset,
                        "dirs": [str(d) for d in a.source.dirs], "baseline": a.baseline,
                        "baseline_note": a.baseline_note, "cells": cells, "unranked": unranked,
                        "comparisons": comparisons, "main_effects": effects, "pivots": pivots})
    doc = {"schema": JSON_SCHEMA, "metric": m.name, "higher_is_better": m.higher_is_better, "confidence": 0.95,
           "sources": sources, "warnings": results.warnings}
    return json.dumps(doc, indent=1) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "|": r"\textbar{}", "−": "--", "±": r"$\pm$", "×": r"$\times$"}


def latex_escape(text: str) -> str:
    """Text safe in LaTeX body text."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def _bold(text: str) -> str:
    return f"\\textbf{{{text}}}"


def _best_shown(values: pd.Series, x: Measure) -> str | None:
    """The best value of a column as displayed (ties at the displayed precision are all best); None when the
    direction is unknown or the column is empty."""
    values = values.dropna()
    if x.higher_is_better is None or values.empty:
        return None
    return x.show(values.max() if x.higher_is_better else values.min())


def _shown(value: float, x: Measure, best: str | None) -> str:
    text = x.show(value)
    return _bold(text) if best is not None and text == best else text


def leaderboard_latex(analyses: list[SourceAnalysis]) -> str:
    """One booktabs table per source: rank, one column per grid axis that varies, the metric's mean ± 95% CI
    half-width, seeds, and the secondary leaderboard columns in display units; the best mean of each column is
    bold. Axes with a single level are named in the caption instead."""
    parts = []
    for a in analyses:
        m = a.metric
        extra = [measure(c) for c in LEADERBOARD_COLUMNS if c != m.name and f"{c}_mean" in a.summary.columns]
        axes = [ax for ax in a.axes if len(a.levels.get(ax, [])) > 1] or [a.axes[0]]
        fixed = [f"{latex_escape(ax)} {latex_escape(a.levels[ax][0])}" for ax in a.axes
                 if ax not in axes and len(a.levels.get(ax, [])) == 1]
        ranked = a.ranked()
        best = {x.name: _best_shown(ranked[f"{x.name}_mean"], x) for x in [m, *extra]}
        head = ["\\#", *[latex_escape(ax.capitalize()) for ax in axes], latex_escape(m.heading), "Seeds",
                *[latex_escape(x.heading) for x in extra]]
        caption = (f"{latex_escape(a.source.suite)} on {latex_escape(a.source.dataset)}: cells ranked by "
                   f"{latex_escape(m.heading)}, mean $\\pm$ half-width of the 95\\% t-interval over seeds; the "
                   "best mean of each column in bold.")
        if fixed:
            caption += " Every cell: " + "; ".join(fixed) + "."
        if a.baseline is not None:
            caption += f" Baseline: {latex_escape(a.baseline)}."
        lines = [
            "\\begin{table}[t]", "\\centering", "\\small", f"\\caption{{{caption}}}",
            "\\begin{tabular}{r" + "l" * len(axes) + "r" * (2 + len(extra)) + "}", "\\toprule",
            " & ".join(head) + " \\\\", "\\midrule",
        ]
        for _, row in ranked.iterrows():
            mean, low, high = row[f"{m.name}_mean"], row[f"{m.name}_ci_low"], row[f"{m.name}_ci_high"]
            shown = _shown(mean, m, best[m.name])
            value = shown if pd.isna(low) else f"{shown} $\\pm$ {m.show((high - low) / 2)}"
            seeds = f"{int(row['n_done'])}/{int(row['n_seeds'])}" if row["n_done"] != row["n_seeds"] else str(
                int(row["n_done"]))
            others = [_shown(row[f"{x.name}_mean"], x, best[x.name]) for x in extra]
            cells = [str(int(row["rank"])), *[latex_escape(str(row[ax])) for ax in axes], value, seeds, *others]
            lines.append(" & ".join(cells) + " \\\\")
        if a.max_seeds <= 1:
            lines.append("\\midrule")
            lines.append(f"\\multicolumn{{{3 + len(axes) + len(extra)}}}{{l}}{{One seed per cell: no confidence "
                         "intervals.}} \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
        parts.append("\n".join(lines))
    return "\n".join(parts)
