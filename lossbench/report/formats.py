"""The report for machines and papers: summary.csv (one row per cell, seeds aggregated), report.json (everything
the Markdown says, as numbers) and a LaTeX leaderboard. Stored units throughout CSV and JSON (accuracies as
fractions, NLL in nats, times in seconds, memory in MiB); the LaTeX table uses the Markdown's display units."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from lossbench.analysis.measures import Measure, measure
from lossbench.analysis.stats import PairedTest
from lossbench.report.aggregate import SourceAnalysis
from lossbench.report.results import Results

JSON_SCHEMA = 1


#: Counts that are the same for every seed of a cell by construction: summary.csv gives their mean, no interval.
CONSTANTS = ("model_params", "loss_params", "epochs_run", "knn_k")


def summary_frame(analyses: list[SourceAnalysis]) -> pd.DataFrame:
    """Every source's per-cell summary in one table with a leading `source` column. Intervals are cut at each
    metric's possible range, as in the report; constants (CONSTANTS) keep their mean alone."""
    frames = []
    for a in analyses:
        frame = a.summary.drop(columns=[c for c in a.summary.columns if c.endswith("_n")])
        frame = frame.drop(columns=[f"{c}_{k}" for c in CONSTANTS for k in ("std", "ci_low", "ci_high")
                                    if f"{c}_{k}" in frame.columns])
        for column in frame.columns:
            for end in ("_ci_low", "_ci_high"):
                if column.endswith(end):
                    m = measure(column[: -len(end)])
                    if m.bounds is not None:
                        frame[column] = frame[column].clip(lower=m.bounds[0], upper=m.bounds[1])
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
    """report.json: per source the cell summaries, diverged/failed seeds, comparisons, main effects, pivots and,
    for a tuned source, its tuning (protocol, chosen values, edge-of-range warnings, budget verdicts)."""
    from lossbench.report import tuning
    from lossbench.report.tuning_files import load_study

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
        study = load_study(a, results)
        sources.append({"name": a.source.name, "suite": a.source.suite, "dataset": a.source.dataset,
                        "dirs": [str(d) for d in a.source.dirs], "baseline": a.baseline,
                        "baseline_note": a.baseline_note, "cells": cells, "unranked": unranked,
                        "comparisons": comparisons, "main_effects": effects, "pivots": pivots,
                        "tuning": None if study is None else tuning.as_dict(study)})
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


#: The LaTeX table's columns by default, after the cell's axes and the ranking metric with its interval.
LATEX_DEFAULT_COLUMNS = ("ece",)


def latex_columns(requested: str | None, available: list[str]) -> list[str]:
    """The extra LaTeX columns: LATEX_DEFAULT_COLUMNS, or `--columns a,b,c` checked against the metrics the
    results have (ReportError with a did-you-mean for an unknown one)."""
    from lossbench.errors import ReportError, did_you_mean

    if requested is None:
        return [c for c in LATEX_DEFAULT_COLUMNS if c in available]
    names = [c.strip() for c in requested.split(",") if c.strip()]
    for name in names:
        if name not in available:
            raise ReportError(message=f"--columns: no cell has the metric '{name}'", value=name, allowed=available,
                              suggestion=did_you_mean(name, available))
    return names


def _bold_label(ranked: pd.DataFrame, x: Measure) -> str | None:
    """The label of the cell to set in bold in column `x`: the best mean, and only when its 95% interval leaves
    out the runner-up's mean (a lead the seeds support). None for timing and memory (not quality: they depend on
    the machine and its load), an unknown direction, or fewer than two seeds."""
    if x.name in TIMING_MEASURES or x.higher_is_better is None or f"{x.name}_ci_low" not in ranked:
        return None
    values = ranked.dropna(subset=[f"{x.name}_mean"]).sort_values(f"{x.name}_mean",
                                                                   ascending=not x.higher_is_better)
    if len(values) < 2:
        return None
    best, second = values.iloc[0], values.iloc[1]
    edge = best[f"{x.name}_ci_low"] if x.higher_is_better else best[f"{x.name}_ci_high"]
    if pd.isna(edge):
        return None
    ahead = edge > second[f"{x.name}_mean"] if x.higher_is_better else edge < second[f"{x.name}_mean"]
    return str(best["label"]) if ahead else None


def _with_interval(row: pd.Series, x: Measure, bold: bool) -> str:
    mean, low, high = row[f"{x.name}_mean"], row.get(f"{x.name}_ci_low"), row.get(f"{x.name}_ci_high")
    shown = _bold(x.show(mean)) if bold else x.show(mean)
    if low is None or pd.isna(low):
        return shown
    return f"{shown} $\\pm$ {x.show((high - low) / 2)}"


def leaderboard_latex(analyses: list[SourceAnalysis], columns: str | None = None,
                      results: Results | None = None) -> str:
    """One booktabs table per source, narrow enough for a paper column by default: rank, one column per grid axis
    that varies, the ranking metric's mean ± half-width of its 95% t-interval, seeds and ECE; `columns` (comma
    separated metric names) chooses the columns after the metric instead. A mean is bold only where the best
    cell's interval leaves out the runner-up's mean, and never for times or memory; time columns measured on a
    loaded machine carry a dagger. Axes with a single level are named in the caption instead."""
    parts = []
    for a in analyses:
        m = a.metric
        available = [c[: -len("_mean")] for c in a.summary.columns if c.endswith("_mean")]
        extra = [measure(c) for c in latex_columns(columns, available) if c != m.name]
        axes = [ax for ax in a.axes if len(a.levels.get(ax, [])) > 1] or [a.axes[0]]
        fixed = [f"{latex_escape(ax)} {latex_escape(a.levels[ax][0])}" for ax in a.axes
                 if ax not in axes and len(a.levels.get(ax, [])) == 1]
        ranked = a.ranked()
        bold = {x.name: _bold_label(ranked, x) for x in [m, *extra]}
        loaded = _loaded_labels(a, results)
        head = ["\\#", *[latex_escape(ax.capitalize()) for ax in axes], latex_escape(m.heading), "Seeds",
                *[latex_escape(x.heading) for x in extra]]
        caption = (f"{latex_escape(a.source.suite)} on {latex_escape(a.source.dataset)}: cells ranked by "
                   f"{latex_escape(m.heading)}, mean $\\pm$ half-width of the 95\\% t-interval over seeds. Bold: "
                   "the best mean of a column where its interval leaves out the runner-up's mean.")
        if fixed:
            caption += " Every cell: " + "; ".join(fixed) + "."
        if a.baseline is not None:
            caption += f" Baseline: {latex_escape(a.baseline)}."
        timed = [x for x in extra if x.name in TIMING_MEASURES]
        if timed and loaded:
            caption += (" $^\\dagger$: measured while the machine's load exceeded its cores; such times are "
                        "inflated by waiting and do not compare.")
        lines = [
            "\\begin{table}[t]", "\\centering", "\\small", f"\\caption{{{caption}}}",
            "\\begin{tabular}{r" + "l" * len(axes) + "r" * (2 + len(extra)) + "}", "\\toprule",
            " & ".join(head) + " \\\\", "\\midrule",
        ]
        for _, row in ranked.iterrows():
            value = _with_interval(row, m, bold[m.name] == row["label"])
            seeds = f"{int(row['n_done'])}/{int(row['n_seeds'])}" if row["n_done"] != row["n_seeds"] else str(
                int(row["n_done"]))
            others = []
            for x in extra:
                text = x.show(row[f"{x.name}_mean"])
                if bold[x.name] == row["label"]:
                    text = _bold(text)
                if x.name in TIMING_MEASURES and row["label"] in loaded:
                    text += "$^\\dagger$"
                others.append(text)
            cells = [str(int(row["rank"])), *[latex_escape(str(row[ax])) for ax in axes], value, seeds, *others]
            lines.append(" & ".join(cells) + " \\\\")
        if a.max_seeds <= 1:
            lines.append("\\midrule")
            lines.append(f"\\multicolumn{{{3 + len(axes) + len(extra)}}}{{l}}{{One seed per cell: no confidence "
                         "intervals.}} \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
        parts.append("\n".join(lines))
    return "\n".join(parts)


#: Measures of the machine rather than of the method: never bold, flagged when measured under load.
TIMING_MEASURES = ("epoch_s", "img_per_s", "train_time_s", "eval_time_s", "cell_s", "overhead_s", "peak_mem_mb")


def _loaded_labels(a: SourceAnalysis, results: Results | None) -> set[str]:
    """Labels of cells with a done seed that ran while the load average exceeded the usable cores."""
    if results is None:
        return set()
    done = a.rows[a.rows["status"] == "done"]
    return {label for label, rid in zip(done["label"], done["id"])
            if results.records[rid].load.overloaded() is not None}
