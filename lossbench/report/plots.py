"""The report's figures as PNG files: learning curves, a bar chart with confidence intervals, a loss ×
augmentation heatmap, reliability diagrams of the top cells and the confusion matrix of the best cell.

Figures are built with matplotlib's object interface on the Agg canvas (no pyplot state, no display needed).
Every axis says what it shows and in which unit; long cell labels go into legends or horizontal tick labels, never
under a crowded x axis.
"""

from __future__ import annotations

import io
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from lossbench.record import CellRecord, Reliability
from lossbench.report.aggregate import SourceAnalysis
from lossbench.store import atomic_write_bytes

#: How many cells the learning curves and reliability diagrams show (the best ones, plus the baseline).
CURVE_CELLS = 6
RELIABILITY_CELLS = 3
#: Confusion matrices with more classes than this carry no numbers in their squares (they would not be legible).
ANNOTATE_CLASSES = 20
#: Above this many cells the dot plot names the best and the worst cells only and shows every cell in a histogram
#: over the same axis: a figure of thousands of named rows cannot be read (and takes minutes to draw).
DOT_PLOT_ROWS = 80
DOT_PLOT_BEST, DOT_PLOT_WORST, DOT_PLOT_UNRANKED = 50, 20, 10
DPI = 110


@dataclass(frozen=True)
class Plot:
    """One PNG: its path relative to the report, its title and a one-sentence caption."""

    path: str
    title: str
    caption: str


def _save(fig: Figure, path: Path) -> None:
    """Render to memory, then write atomically: a full disk never leaves a truncated PNG."""
    FigureCanvasAgg(fig)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write_bytes(path, png.getvalue())


def _wrap(text: str, width: int = 48) -> str:
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


def make_plots(analysis: SourceAnalysis, records: dict[str, CellRecord], out_dir: Path,
               subdir: str) -> list[Plot]:
    """Draw every figure that the source's results allow into out_dir/subdir; return them in reading order."""
    plots: list[Plot] = []
    for draw in (_learning_curves, _bar_chart, _heatmap, _reliability, _confusion):
        plot = draw(analysis, records, out_dir, subdir)
        if plot is not None:
            plots.append(plot)
    return plots


def _done_records(analysis: SourceAnalysis, records: dict[str, CellRecord], label: str) -> list[CellRecord]:
    rows = analysis.rows[(analysis.rows["label"] == label) & (analysis.rows["status"] == "done")]
    return [records[i] for i in rows.sort_values("seed")["id"]]


def _shown_cells(analysis: SourceAnalysis, count: int) -> list[str]:
    labels = list(analysis.ranked()["label"][:count])
    if analysis.baseline is not None and analysis.baseline not in labels and analysis.baseline in set(
            analysis.ranked()["label"]):
        labels.append(analysis.baseline)
    return labels


def _seeds_text(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def _learning_curves(analysis: SourceAnalysis, records: dict[str, CellRecord], out_dir: Path,
                     subdir: str) -> Plot | None:
    labels = _shown_cells(analysis, CURVE_CELLS)
    if not labels:
        return None
    fig = Figure(figsize=(11, 4.6))
    ax_acc, ax_loss = fig.subplots(1, 2, sharex=True)  # one epoch axis, also where only some were evaluated
    colors = _palette(len(labels))
    handles = []
    sparse_any = False
    loss_range = [math.inf, 0.0]
    for label, color in zip(labels, colors):
        histories = [r.history for r in _done_records(analysis, records, label)]
        epochs = min((len(h) for h in histories), default=0)
        if epochs == 0:
            continue
        x = np.arange(1, epochs + 1)
        acc = np.array([[h[e].test_acc for e in range(epochs)] for h in histories], dtype=float) * 100
        loss = np.array([[h[e].train_loss for e in range(epochs)] for h in histories], dtype=float)
        style = "--" if label == analysis.baseline else "-"
        name = label + (" (baseline)" if label == analysis.baseline else "")
        # Test accuracy exists only at evaluated epochs (train.eval_every): the curve joins those, marked.
        evaluated = np.isfinite(acc).all(axis=0)
        sparse = not evaluated.all()
        sparse_any |= sparse
        (line,) = ax_acc.plot(x[evaluated], acc[:, evaluated].mean(0), style, color=color, lw=1.8, label=name,
                              marker="o" if sparse else None, ms=3)
        ax_loss.plot(x, loss.mean(0), style, color=color, lw=1.8)
        finite = loss[np.isfinite(loss) & (loss > 0)]
        if finite.size:
            loss_range = [min(loss_range[0], float(finite.min())), max(loss_range[1], float(finite.max()))]
        if len(histories) > 1:
            ax_acc.fill_between(x[evaluated], acc[:, evaluated].min(0), acc[:, evaluated].max(0), color=color,
                                alpha=0.15, lw=0)
            ax_loss.fill_between(x, loss.min(0), loss.max(0), color=color, alpha=0.15, lw=0)
        handles.append(line)
    if not handles:
        return None
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)",
               title="Test accuracy" + (" (at the evaluated epochs)" if sparse_any else ""))
    low, high = loss_range
    # A log axis helps only across decades; over a narrower range it leaves the axis with one or two labels.
    log = math.isfinite(low) and high / low > 10
    ax_loss.set(xlabel="epoch", ylabel="training loss (each cell's own objective" + (", log scale)" if log else ")"),
                title="Training loss", yscale="log" if log else "linear")
    if log:  # plain numbers (0.1, 0.5, 2) rather than powers of ten; minor ones (2, 5 ×10^k) only where they fit
        decades = math.log10(high / low)
        ax_loss.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax_loss.yaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}" if decades <= 2.5 and v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5)
            else ""))
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    seeds = analysis.max_seeds
    band = "; band: min–max over seeds" if seeds > 1 else ""
    fig.suptitle(f"Learning curves — {analysis.source.name} (mean over up to {_seeds_text(seeds)}{band})")
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, -0.02 - 0.045 * ((len(handles) + 1) // 2)))
    fig.tight_layout()
    path = f"{subdir}/learning_curves.png"
    _save(fig, out_dir / path)
    ranked_shown = len(handles) - (analysis.baseline in labels[CURVE_CELLS:])
    return Plot(path, "Learning curves",
                f"Test accuracy and training loss per epoch of the {ranked_shown} best cell(s)"
                + (" and the baseline" if analysis.baseline in labels[CURVE_CELLS:] else "")
                + ("; the baseline dashed" if analysis.baseline in labels else "")
                + ". Training losses of different loss functions are in different units: compare their shapes.")


def _palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


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


def _bar_chart(analysis: SourceAnalysis, records: dict[str, CellRecord], out_dir: Path,
               subdir: str) -> Plot | None:
    """Every cell as a dot at its mean with its 95% interval as a line (a dot needs no zero on its axis); cells
    without a result as a labelled row; cells far off on the bad side drawn at the axis break with their value."""
    m = analysis.metric
    ranked = analysis.ranked()
    if ranked.empty:
        return None
    unranked = analysis.summary[analysis.summary["rank"].isna()]
    rows = pd.concat([ranked, unranked])
    chance = set(analysis.at_chance())
    means = rows[f"{m.name}_mean"].to_numpy(dtype=float) * m.scale
    # Intervals stop at the metric's possible range (an accuracy interval can reach below 0% on paper).
    low = np.array([m.clip(v) for v in rows[f"{m.name}_ci_low"].to_numpy(dtype=float)]) * m.scale
    high = np.array([m.clip(v) for v in rows[f"{m.name}_ci_high"].to_numpy(dtype=float)]) * m.scale
    has_ci = np.isfinite(low)
    edge = _outlier_edge(means, m.higher_is_better)
    worse_side = 1.0 if m.higher_is_better is False else -1.0
    far = np.isfinite(means) & (edge is not None) & ((means - (edge or 0.0)) * worse_side > 0)
    bulk = np.isfinite(means) & ~far
    lo = np.nanmin(np.where(has_ci & bulk, low, np.where(bulk, means, np.nan)))
    hi = np.nanmax(np.where(has_ci & bulk, high, np.where(bulk, means, np.nan)))
    pad = max((hi - lo) * 0.08, 1e-6 + abs(hi) * 0.002)
    start, end = lo - pad, hi + 3.5 * pad  # room on the right for the printed values
    if far.any():  # the break: outliers sit at the bad edge of the axis, past a gap
        if worse_side < 0:
            start = lo - 6 * pad
        else:
            end = hi + 9 * pad
    if m.bounds is not None:
        start, end = max(start, m.bounds[0] * m.scale - pad), min(end, m.bounds[1] * m.scale + pad)
    n = len(rows)
    labels_all = list(rows["label"])
    shown, gap_after = _dot_rows(len(ranked), n, labels_all.index(analysis.baseline)
                                 if analysis.baseline in labels_all else None)
    rows_shown = len(shown) + (1 if gap_after is not None else 0)
    # Row positions top to bottom; the gap (when some cells are not named) takes one row of its own.
    y = np.array([rows_shown - 1 - i - (1 if gap_after is not None and i > gap_after else 0)
                  for i in range(len(shown))])
    if gap_after is None:
        fig = Figure(figsize=(9.5, 1.4 + 0.3 * rows_shown))
        ax = fig.subplots()
    else:
        fig = Figure(figsize=(9.5, 3.6 + 0.3 * rows_shown))
        hist_ax, ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2.2, 0.3 * rows_shown]})
        _all_cells_histogram(hist_ax, means[bulk], analysis, m, int(far.sum()), n)
    ax.set_xlim(start, end)
    ax.set_ylim(-0.7, rows_shown - 0.3)
    break_x = start + 2 * pad if worse_side < 0 else end - 5.5 * pad
    if gap_after is not None:
        named = sum(1 for i in shown if i < len(ranked))
        ax.text(start + pad, rows_shown - 2 - gap_after, f"… {len(ranked) - named:,} more cells ranked between "
                f"{DOT_PLOT_BEST + 1:,} and {len(ranked) - DOT_PLOT_WORST:,} (every cell is in the histogram above "
                "and in summary.csv)", va="center", fontsize=8, color="#555555", style="italic")
    labels_shown = rows["label"].to_numpy()[shown]
    for yi, label, mean, lo_i, hi_i, ci, out in zip(y, labels_shown, means[shown], low[shown], high[shown],
                                                   has_ci[shown], far[shown]):
        color = ("#d62728" if label == analysis.baseline else "#7f7f7f" if label in chance else "#1f77b4")
        if not np.isfinite(mean):
            ax.text(start + pad, yi, "no result (every seed diverged or failed)", va="center", fontsize=8,
                    color="#d62728", style="italic")
            continue
        text = f"{mean:,.{m.digits}f}" + (" (at chance)" if label in chance else "")
        if out:
            ax.plot([break_x], [yi], "<" if worse_side < 0 else ">", color=color, ms=7)
            ax.annotate(text + " — beyond the axis break", (break_x, yi), xytext=(8 if worse_side < 0 else -8, 0),
                        textcoords="offset points", va="center", ha="left" if worse_side < 0 else "right",
                        fontsize=8, color=color)
            continue
        if ci:
            ax.plot([lo_i, hi_i], [yi, yi], color=color, lw=1.6, solid_capstyle="butt")
        ax.plot([mean], [yi], "o", color=color, ms=5)
        ax.annotate(text, (hi_i if ci else mean, yi), xytext=(5, 0), textcoords="offset points", va="center",
                    fontsize=8, annotation_clip=False)
    if far.any():  # a zig-zag on the axis and a shaded band mark the break
        gap = (start + 4 * pad, start + 5 * pad) if worse_side < 0 else (end - 7.5 * pad, end - 6.5 * pad)
        ax.axvspan(*gap, color="#dddddd", alpha=0.8, lw=0)
        # No tick beyond the break: its positions do not measure the far-off cells.
        kept = [t for t in ax.get_xticks() if (t >= gap[1] if worse_side < 0 else t <= gap[0]) and start <= t <= end]
        ax.set_xticks(kept)
    if analysis.chance is not None and m.name == "test_acc" and start <= analysis.chance * m.scale <= end:
        ax.axvline(analysis.chance * m.scale, color="#7f7f7f", ls="--", lw=1)
        ax.text(analysis.chance * m.scale, rows_shown - 0.35, " chance", fontsize=8, color="#7f7f7f",
                va="bottom")
    names = [lbl + (" (baseline)" if lbl == analysis.baseline else "") for lbl in labels_shown]
    ax.set_yticks(y, names, fontsize=8 if rows_shown > 30 else 9)
    note = "" if not far.any() else (
        f"; {int(far.sum())} far-off cell(s) at the axis break with their value")
    what = "dot: mean, line: 95% t-interval over seeds" if has_ci.any() else "dot: the one seed's value"
    ax.set_xlabel(f"{m.heading} — {what}{note}")
    ax.grid(axis="x", alpha=0.3)
    ci_text = "" if has_ci.any() else " (one seed: no intervals)"
    fig.axes[0].set_title(f"{m.title[0].upper()}{m.title[1:]} of every cell — {analysis.source.name}{ci_text}",
                          fontsize=11)
    fig.tight_layout()
    path = f"{subdir}/{m.name}_bars.png"
    _save(fig, out_dir / path)
    extra = []
    if analysis.baseline:
        extra.append("the baseline in red")
    if chance:
        extra.append("cells at chance level in grey")
    if len(unranked):
        named_unranked = min(len(unranked), DOT_PLOT_UNRANKED) if gap_after is not None else len(unranked)
        extra.append(f"{len(unranked)} cell(s) without a result" + (" named in red" if named_unranked == len(unranked)
                     else f", the first {named_unranked} named in red"))
    if far.any():
        extra.append(f"{int(far.sum())} cell(s) far below the rest drawn at the axis break, so that they do not "
                     "flatten the differences among the others")
    if gap_after is not None:
        extra.append(f"with {n:,} cells only the best {DOT_PLOT_BEST} and the worst {DOT_PLOT_WORST} are named "
                     "(and the baseline); the histogram above them counts every cell's mean on the same axis")
    return Plot(path, f"{m.title[0].upper()}{m.title[1:]} of every cell with 95% confidence intervals",
                f"Mean {m.heading} of all {n:,} cells, best first (a dot for the mean, a line for its interval: the "
                "axis need not start at 0)" + ("; " + "; ".join(extra) if extra else "") + ".")


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


def _heatmap(analysis: SourceAnalysis, records: dict[str, CellRecord], out_dir: Path,
             subdir: str) -> Plot | None:
    pivot = next((p for p in analysis.pivots if p.columns == "augmentation"), None) or next(
        iter(analysis.pivots), None)
    if pivot is None:
        return None
    m = analysis.metric
    values = pivot.table.to_numpy(dtype=float) * m.scale
    n_rows, n_cols = values.shape
    fig = Figure(figsize=(max(6.0, 2.2 + 1.5 * n_cols), max(3.4, 1.6 + 0.55 * n_rows)))
    ax = fig.subplots()
    cmap = "viridis" if m.higher_is_better is not False else "viridis_r"
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto")
    cols = [str(c) for c in pivot.table.columns]
    # Long level names are slanted rather than wrapped: neighbouring labels never run into each other.
    slant = max(len(c) for c in cols) > 10
    ax.set_xticks(range(n_cols), cols, fontsize=9, rotation=30 if slant else 0, ha="right" if slant else "center",
                  rotation_mode="anchor")
    ax.set_yticks(range(n_rows), [str(r) for r in pivot.table.index], fontsize=9)
    ax.set_xlabel(pivot.columns)
    ax.set_ylabel(pivot.rows)
    finite = values[np.isfinite(values)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(n_rows):
        for j in range(n_cols):
            v = values[i, j]
            text = "—" if np.isnan(v) else f"{v:.{m.digits}f}"
            dark = np.isnan(v) or (v < mid) == (m.higher_is_better is not False)
            ax.text(j, i, text, ha="center", va="center", fontsize=10, color="white" if dark else "black")
    fig.colorbar(image, ax=ax, label=m.heading)
    others = [a for a in analysis.axes if a not in (pivot.rows, pivot.columns) and len(analysis.levels[a]) > 1]
    averaged = f", averaged over {', '.join(others)}" if others else ""
    ax.set_title(_wrap(f"Mean {m.title}: {pivot.rows} × {pivot.columns}{averaged}", 60), fontsize=11)
    fig.tight_layout()
    path = f"{subdir}/{pivot.rows}_x_{pivot.columns}.png"
    _save(fig, out_dir / path)
    return Plot(path, f"{pivot.rows.capitalize()} × {pivot.columns}",
                f"Mean {m.heading} of the cell means at each {pivot.rows} and {pivot.columns}{averaged}.")


def _pooled_bins(recs: list[CellRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Reliability bins pooled over seeds: total counts, and count-weighted mean confidence and accuracy."""
    bins = [r.metrics.reliability for r in recs]
    bins = [b for b in bins if isinstance(b, Reliability) and b.count]
    if not bins:
        return None
    count = np.sum([np.asarray(b.count, dtype=float) for b in bins], axis=0)
    conf = np.sum([np.asarray(b.count, float) * np.asarray(b.confidence, float) for b in bins], axis=0)
    acc = np.sum([np.asarray(b.count, float) * np.asarray(b.accuracy, float) for b in bins], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return count, conf / count, acc / count


def _reliability(analysis: SourceAnalysis, records: dict[str, CellRecord], out_dir: Path,
                 subdir: str) -> Plot | None:
    cells = []
    for label in list(analysis.ranked()["label"][:RELIABILITY_CELLS]):
        pooled = _pooled_bins(_done_records(analysis, records, label))
        if pooled is not None:
            cells.append((label, pooled))
    if not cells:
        return None
    fig = Figure(figsize=(4.2 * len(cells), 6.2))
    grid = fig.subplots(2, len(cells), sharex=True, squeeze=False, gridspec_kw={"height_ratios": [3, 1.3]})
    # One count scale for every panel: a bin of 20 predictions is as tall in each.
    most = max(float(count.max()) for _, (count, _, _) in cells)
    summary = analysis.summary.set_index("label")
    for column, (label, (count, conf, acc)) in enumerate(cells):
        ax, ax_count = grid[0, column], grid[1, column]
        n_bins = count.size
        width = 100.0 / n_bins
        centers = (np.arange(n_bins) + 0.5) * width
        used = count > 0
        # A bin's opacity follows its share of the predictions: a bin of 1 image must not look like one of 340.
        shade = 0.12 + 0.88 * count[used] / count.max()
        colors = [(0.12, 0.47, 0.71, float(a)) for a in shade]
        ax.bar(centers[used], acc[used] * 100, width=width * 0.9, color=colors, edgecolor="#1f77b4", linewidth=0.6,
               label="accuracy (opacity: share of predictions)")
        if (~used).any():
            ax.bar(centers[~used], 100, width=width * 0.9, color="none", edgecolor="#bbbbbb", hatch="///",
                   linewidth=0.5, label="empty bin (no prediction)")
        ax.plot(conf[used] * 100, acc[used] * 100, "o", color="#ff7f0e", ms=3.5,
                label="bin accuracy at its mean confidence")
        ax.plot([0, 100], [0, 100], "--", color="gray", lw=1, label="perfect calibration")
        ax.set(xlim=(0, 100), ylim=(0, 100))
        ece = summary.loc[label].get("ece_mean") if "ece_mean" in summary.columns else None
        ece_text = f"\nECE {ece * 100:.2f}%" if ece is not None and np.isfinite(ece) else ""
        ax.set_title(_wrap(label, 36) + ece_text, fontsize=9)
        ax.grid(alpha=0.3)
        ax.text(2, 96, f"{int(count.sum()):,} test predictions", fontsize=8, va="top",
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"})
        # Under the diagram, how many predictions each bin holds (log scale: the top bin often holds most).
        ax_count.bar(centers[used], count[used], width=width * 0.9, color="#7f7f7f")
        ax_count.set_yscale("log")
        ax_count.set_ylim(0.5, most * 8)
        for x, c in zip(centers, count):
            ax_count.text(x, max(c, 0.5) * 1.3, f"{int(c):,}" if c else "0", ha="center", va="bottom",
                          fontsize=6, rotation=90 if n_bins > 10 else 0, color="#bbbbbb" if not c else "black")
        ax_count.set_xlabel("confidence (%)")
        ax_count.grid(alpha=0.3, axis="y")
    grid[0, 0].set_ylabel("accuracy (%)")
    grid[1, 0].set_ylabel("predictions\nper bin")
    handles, names = grid[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=2, fontsize=9, frameon=False, bbox_to_anchor=(0.5, -0.08))
    fig.suptitle(f"Reliability diagrams — {analysis.source.name} (test set, {count.size} equal-width bins, "
                 f"pooled over seeds)", fontsize=11)
    fig.tight_layout()
    path = f"{subdir}/reliability.png"
    _save(fig, out_dir / path)
    return Plot(path, "Reliability diagrams",
                f"Accuracy against confidence on the test set for the {len(cells)} best cells; bars under the "
                "diagonal mean over-confidence. A bar's opacity is its share of the predictions and the lower panel "
                "counts them per bin (log scale), so a bin of a few images is seen as such; hatched bins are empty.")


def _numbers(k: int) -> list[str]:
    return [str(i) for i in range(k)]


def _class_names(recs: list[CellRecord], k: int) -> list[str]:
    """The class names the cells recorded (`data.class_names`); the indices for files written before names were
    recorded."""
    names = next((r.data.class_names for r in recs if len(r.data.class_names or []) == k), None)
    if not names:
        return _numbers(k)
    return [str(n) for n in names]


def _confusion(analysis: SourceAnalysis, records: dict[str, CellRecord], out_dir: Path,
               subdir: str) -> Plot | None:
    ranked = analysis.ranked()
    if ranked.empty:
        return None
    label = ranked.iloc[0]["label"]
    mats = [np.asarray(r.metrics.confusion, dtype=float)
            for r in _done_records(analysis, records, label) if r.metrics.confusion]
    if not mats or mats[0].ndim != 2:
        return None
    counts = np.sum(mats, axis=0)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(totals > 0, counts / totals * 100, np.nan)
    k = counts.shape[0]
    size = min(4 + 0.45 * k, 14)
    fig = Figure(figsize=(size + 1.4, size))
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=100)
    step = max(1, k // 25)
    ticks = list(range(0, k, step))
    names = _class_names(_done_records(analysis, records, label), k)
    ax.set_xticks(ticks, [names[t] for t in ticks], fontsize=8, rotation=45 if names != _numbers(k) else 0,
                  ha="right" if names != _numbers(k) else "center", rotation_mode="anchor")
    ax.set_yticks(ticks, [names[t] for t in ticks], fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class")
    if k <= ANNOTATE_CLASSES:
        for i in range(k):
            for j in range(k):
                if counts[i, j] > 0:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 50 else "black")
    fig.colorbar(image, ax=ax, label="share of the true class (%)", fraction=0.046, pad=0.04)
    ax.set_title(f"Confusion matrix of the best cell — {analysis.source.name}\n{_wrap(label, 60)}\n"
                 f"(counts summed over {_seeds_text(len(mats))}, {int(counts.sum()):,} test predictions)",
                 fontsize=10)
    fig.tight_layout()
    path = f"{subdir}/confusion_best.png"
    _save(fig, out_dir / path)
    return Plot(path, "Confusion matrix of the best cell",
                f"Rows are true classes, columns predictions, colour the share of the row; `{label}`.")
