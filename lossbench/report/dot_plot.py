"""The report's dot plot of every cell: the mean of the ranking metric as a dot and its 95% interval as a line (a
dot needs no zero on its axis), cells without a result as labelled rows, cells far off on the bad side drawn at an
axis break with their value; above a few dozen cells only the best and worst are named and a histogram shows all."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lossbench.analysis.measures import Measure
from lossbench.record import CellRecord
from lossbench.report.aggregate import SourceAnalysis
from lossbench.report.figure import Plot, save_png

#: Above this many cells the dot plot names the best and the worst cells only and shows every cell in a histogram
#: over the same axis: a figure of thousands of named rows cannot be read (and takes minutes to draw).
DOT_PLOT_ROWS = 80
DOT_PLOT_BEST, DOT_PLOT_WORST, DOT_PLOT_UNRANKED = 50, 20, 10


@dataclass(frozen=True)
class _Dots:
    """Every row of the plot (ranked cells best first, then those without a result), values in display units."""

    rows: pd.DataFrame
    ranked: int
    means: np.ndarray
    #: The 95% interval, cut at the metric's possible range (NaN without one).
    low: np.ndarray
    high: np.ndarray

    @property
    def has_ci(self) -> np.ndarray:
        return np.isfinite(self.low)


@dataclass(frozen=True)
class _Scale:
    """The x axis: its ends, the padding unit, and which rows lie beyond the break on the bad side."""

    start: float
    end: float
    pad: float
    #: +1 when higher values are worse, −1 when lower ones are.
    worse_side: float
    far: np.ndarray
    bulk: np.ndarray

    @property
    def break_x(self) -> float:
        """Where the far-off rows are drawn."""
        return self.start + 2 * self.pad if self.worse_side < 0 else self.end - 5.5 * self.pad


@dataclass(frozen=True)
class _Layout:
    """Which rows are named (indices into the rows), their y positions top to bottom, and where the gap for the
    unnamed ones goes (None: every cell is named; the gap then takes one row of its own)."""

    shown: list[int]
    gap_after: int | None
    y: np.ndarray

    @property
    def height(self) -> int:
        """Rows on the axis, the gap included."""
        return len(self.shown) + (1 if self.gap_after is not None else 0)


def dot_plot(analysis: SourceAnalysis, records: dict[str, CellRecord], out_dir: Path, subdir: str) -> Plot | None:
    """Every cell as a dot at its mean with its 95% interval as a line; cells without a result as a labelled row;
    cells far off on the bad side drawn at the axis break with their value. None when no cell is ranked."""
    m = analysis.metric
    ranked = analysis.ranked()
    if ranked.empty:
        return None
    unranked = analysis.summary[analysis.summary["rank"].isna()]
    chance = set(analysis.at_chance())
    dots = _dots(m, pd.concat([ranked, unranked]), len(ranked))
    scale = _scale(m, dots)
    layout = _layout(dots, analysis.baseline)
    fig, ax = _figure(analysis, dots, scale, layout)
    ax.set_xlim(scale.start, scale.end)
    ax.set_ylim(-0.7, layout.height - 0.3)
    if layout.gap_after is not None:
        named = sum(1 for i in layout.shown if i < dots.ranked)
        ax.text(scale.start + scale.pad, layout.height - 2 - layout.gap_after,
                f"… {dots.ranked - named:,} more cells ranked between {DOT_PLOT_BEST + 1:,} and "
                f"{dots.ranked - DOT_PLOT_WORST:,} (every cell is in the histogram above and in summary.csv)",
                va="center", fontsize=8, color="#555555", style="italic")
    labels_shown = dots.rows["label"].to_numpy()[layout.shown]
    _draw_rows(ax, m, dots, scale, layout, labels_shown, analysis.baseline, chance)
    _finish_axis(ax, analysis, scale, layout, labels_shown, dots.has_ci.any())
    fig.tight_layout()
    path = f"{subdir}/{m.name}_bars.png"
    save_png(fig, out_dir / path)
    return Plot(path, f"{m.title[0].upper()}{m.title[1:]} of every cell with 95% confidence intervals",
                _caption(analysis, len(unranked), len(dots.rows), scale, layout, chance))


def _dots(m: Measure, rows: pd.DataFrame, ranked: int) -> _Dots:
    means = rows[f"{m.name}_mean"].to_numpy(dtype=float) * m.scale
    # Intervals stop at the metric's possible range (an accuracy interval can reach below 0% on paper).
    low = np.array([m.clip(v) for v in rows[f"{m.name}_ci_low"].to_numpy(dtype=float)]) * m.scale
    high = np.array([m.clip(v) for v in rows[f"{m.name}_ci_high"].to_numpy(dtype=float)]) * m.scale
    return _Dots(rows, ranked, means, low, high)


def _scale(m: Measure, dots: _Dots) -> _Scale:
    """The axis fits the bulk of the cells and their intervals, with room on the right for the printed values;
    cells beyond the outlier edge go past a break at the bad end."""
    means, low, high, has_ci = dots.means, dots.low, dots.high, dots.has_ci
    edge = _outlier_edge(means, m.higher_is_better)
    worse_side = 1.0 if m.higher_is_better is False else -1.0
    far = np.isfinite(means) & (edge is not None) & ((means - (edge or 0.0)) * worse_side > 0)
    bulk = np.isfinite(means) & ~far
    lo = np.nanmin(np.where(has_ci & bulk, low, np.where(bulk, means, np.nan)))
    hi = np.nanmax(np.where(has_ci & bulk, high, np.where(bulk, means, np.nan)))
    pad = max((hi - lo) * 0.08, 1e-6 + abs(hi) * 0.002)
    start, end = lo - pad, hi + 3.5 * pad
    if far.any():  # the break: outliers sit at the bad edge of the axis, past a gap
        if worse_side < 0:
            start = lo - 6 * pad
        else:
            end = hi + 9 * pad
    if m.bounds is not None:
        start, end = max(start, m.bounds[0] * m.scale - pad), min(end, m.bounds[1] * m.scale + pad)
    return _Scale(start, end, pad, worse_side, far, bulk)


def _layout(dots: _Dots, baseline: str | None) -> _Layout:
    labels_all = list(dots.rows["label"])
    shown, gap_after = _dot_rows(dots.ranked, len(labels_all),
                                 labels_all.index(baseline) if baseline in labels_all else None)
    height = len(shown) + (1 if gap_after is not None else 0)
    y = np.array([height - 1 - i - (1 if gap_after is not None and i > gap_after else 0) for i in range(len(shown))])
    return _Layout(shown, gap_after, y)


def _figure(analysis: SourceAnalysis, dots: _Dots, scale: _Scale, layout: _Layout) -> tuple[Figure, Any]:
    """The figure and the dot plot's axes; with a gap for unnamed cells, a histogram of every cell above them."""
    if layout.gap_after is None:
        fig = Figure(figsize=(9.5, 1.4 + 0.3 * layout.height))
        return fig, fig.subplots()
    fig = Figure(figsize=(9.5, 3.6 + 0.3 * layout.height))
    hist_ax, ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2.2, 0.3 * layout.height]})
    _all_cells_histogram(hist_ax, dots.means[scale.bulk], analysis, analysis.metric, int(scale.far.sum()),
                         len(dots.rows))
    return fig, ax


def _draw_rows(ax: Any, m: Measure, dots: _Dots, scale: _Scale, layout: _Layout, labels_shown: np.ndarray,
               baseline: str | None, chance: set[str]) -> None:
    """Each named row: its dot and interval with the value printed, a far-off cell's value at the break, or a note
    for a cell without a result."""
    shown, worse_side = layout.shown, scale.worse_side
    for yi, label, mean, lo_i, hi_i, ci, out in zip(layout.y, labels_shown, dots.means[shown], dots.low[shown],
                                                   dots.high[shown], dots.has_ci[shown], scale.far[shown]):
        color = ("#d62728" if label == baseline else "#7f7f7f" if label in chance else "#1f77b4")
        if not np.isfinite(mean):
            ax.text(scale.start + scale.pad, yi, "no result (every seed diverged or failed)", va="center",
                    fontsize=8, color="#d62728", style="italic")
            continue
        text = f"{mean:,.{m.digits}f}" + (" (at chance)" if label in chance else "")
        if out:
            ax.plot([scale.break_x], [yi], "<" if worse_side < 0 else ">", color=color, ms=7)
            ax.annotate(text + " — beyond the axis break", (scale.break_x, yi), xytext=(8 if worse_side < 0 else -8, 0),
                        textcoords="offset points", va="center", ha="left" if worse_side < 0 else "right",
                        fontsize=8, color=color)
            continue
        if ci:
            ax.plot([lo_i, hi_i], [yi, yi], color=color, lw=1.6, solid_capstyle="butt")
        ax.plot([mean], [yi], "o", color=color, ms=5)
        ax.annotate(text, (hi_i if ci else mean, yi), xytext=(5, 0), textcoords="offset points", va="center",
                    fontsize=8, annotation_clip=False)


def _finish_axis(ax: Any, analysis: SourceAnalysis, scale: _Scale, layout: _Layout, labels_shown: np.ndarray,
                 any_ci: bool) -> None:
    """The break's band, the chance line, the cell names, the axis label and the title."""
    m, start, end, pad = analysis.metric, scale.start, scale.end, scale.pad
    far = scale.far
    if far.any():  # a zig-zag on the axis and a shaded band mark the break
        gap = (start + 4 * pad, start + 5 * pad) if scale.worse_side < 0 else (end - 7.5 * pad, end - 6.5 * pad)
        ax.axvspan(*gap, color="#dddddd", alpha=0.8, lw=0)
        # No tick beyond the break: its positions do not measure the far-off cells.
        kept = [t for t in ax.get_xticks()
                if (t >= gap[1] if scale.worse_side < 0 else t <= gap[0]) and start <= t <= end]
        ax.set_xticks(kept)
    if analysis.chance is not None and m.name == "test_acc" and start <= analysis.chance * m.scale <= end:
        ax.axvline(analysis.chance * m.scale, color="#7f7f7f", ls="--", lw=1)
        ax.text(analysis.chance * m.scale, layout.height - 0.35, " chance", fontsize=8, color="#7f7f7f",
                va="bottom")
    names = [lbl + (" (baseline)" if lbl == analysis.baseline else "") for lbl in labels_shown]
    ax.set_yticks(layout.y, names, fontsize=8 if layout.height > 30 else 9)
    note = "" if not far.any() else (
        f"; {int(far.sum())} far-off cell(s) at the axis break with their value")
    what = "dot: mean, line: 95% t-interval over seeds" if any_ci else "dot: the one seed's value"
    ax.set_xlabel(f"{m.heading} — {what}{note}")
    ax.grid(axis="x", alpha=0.3)
    ci_text = "" if any_ci else " (one seed: no intervals)"
    ax.figure.axes[0].set_title(f"{m.title[0].upper()}{m.title[1:]} of every cell — {analysis.source.name}{ci_text}",
                                fontsize=11)


def _caption(analysis: SourceAnalysis, unranked: int, n: int, scale: _Scale, layout: _Layout,
             chance: set[str]) -> str:
    m = analysis.metric
    extra = []
    if analysis.baseline:
        extra.append("the baseline in red")
    if chance:
        extra.append("cells at chance level in grey")
    if unranked:
        named_unranked = min(unranked, DOT_PLOT_UNRANKED) if layout.gap_after is not None else unranked
        extra.append(f"{unranked} cell(s) without a result" + (" named in red" if named_unranked == unranked
                     else f", the first {named_unranked} named in red"))
    if scale.far.any():
        extra.append(f"{int(scale.far.sum())} cell(s) far below the rest drawn at the axis break, so that they do "
                     "not flatten the differences among the others")
    if layout.gap_after is not None:
        extra.append(f"with {n:,} cells only the best {DOT_PLOT_BEST} and the worst {DOT_PLOT_WORST} are named "
                     "(and the baseline); the histogram above them counts every cell's mean on the same axis")
    return (f"Mean {m.heading} of all {n:,} cells, best first (a dot for the mean, a line for its interval: the "
            "axis need not start at 0)" + ("; " + "; ".join(extra) if extra else "") + ".")


def _outlier_edge(values: np.ndarray, higher_is_better: bool | None) -> float | None:
    """Where the axis breaks so that far-off cells do not flatten the others: beyond 3 interquartile ranges from
    the quartiles on the bad side (None when no value lies beyond, or there are fewer than 4 values)."""
    finite = values[np.isfinite(values)]
    if finite.size < 4:
        return None
    q1, q3 = np.percentile(finite, [25, 75])
    iqr = max(q3 - q1, 1e-9 * max(abs(q3), 1.0))
    if higher_is_better is False:
        edge = q3 + 3 * iqr
        return float(edge) if (finite > edge).any() else None
    edge = q1 - 3 * iqr
    return float(edge) if (finite < edge).any() else None


def _dot_rows(ranked: int, n: int, baseline: int | None) -> tuple[list[int], int | None]:
    """Which of the n rows (ranked ones first, best first; then those without a result) the dot plot names, and
    the position in that list after which the gap for the unnamed cells goes (None: every cell is named)."""
    if n <= DOT_PLOT_ROWS:
        return list(range(n)), None
    best = list(range(min(DOT_PLOT_BEST, ranked)))
    worst = list(range(max(len(best), ranked - DOT_PLOT_WORST), ranked))
    if baseline is not None and baseline < ranked and baseline not in best and baseline not in worst:
        best.append(baseline)
    unranked = list(range(ranked, min(n, ranked + DOT_PLOT_UNRANKED)))
    return best + worst + unranked, len(best) - 1


def _all_cells_histogram(ax: Any, values: np.ndarray, analysis: SourceAnalysis, m: Any, beyond: int,
                         n: int) -> None:
    """Every cell's mean as a histogram over the dot plot's axis; cells beyond its break are counted in the label."""
    finite = values[np.isfinite(values)]
    ax.hist(finite, bins=min(60, max(10, int(math.sqrt(finite.size)))), color="#1f77b4", alpha=0.75)
    baseline = analysis.summary.loc[analysis.summary["label"] == analysis.baseline, f"{m.name}_mean"]
    if len(baseline) and np.isfinite(float(baseline.iloc[0])):
        ax.axvline(float(baseline.iloc[0]) * m.scale, color="#d62728", lw=1.2, label="baseline")
        ax.legend(fontsize=8, loc="upper left")
    note = f"; {beyond:,} beyond the axis break" if beyond else ""
    ax.set_ylabel(f"cells ({finite.size:,} of {n:,}{note})", fontsize=8)
    ax.grid(axis="x", alpha=0.3)

