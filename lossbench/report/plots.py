"""The report's figures as PNG files: learning curves, a bar chart with confidence intervals, a loss ×
augmentation heatmap, reliability diagrams of the top cells and the confusion matrix of the best cell.

Figures are built with matplotlib's object interface on the Agg canvas (no pyplot state, no display needed).
Every axis says what it shows and in which unit; long cell labels go into legends or horizontal tick labels, never
under a crowded x axis.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from lossbench.record import CellRecord, Epoch, Reliability
from lossbench.report.aggregate import SourceAnalysis
from lossbench.report.dot_plot import dot_plot
from lossbench.report.figure import Plot, palette, save_png, seeds_text, wrap

#: How many cells the learning curves and reliability diagrams show (the best ones, plus the baseline).
CURVE_CELLS = 6
RELIABILITY_CELLS = 3
#: Confusion matrices with more classes than this carry no numbers in their squares (they would not be legible).
ANNOTATE_CLASSES = 20


def make_plots(analysis: SourceAnalysis, records: dict[str, CellRecord], out_dir: Path,
               subdir: str) -> list[Plot]:
    """Draw every figure that the source's results allow into out_dir/subdir; return them in reading order."""
    plots: list[Plot] = []
    for draw in (_learning_curves, dot_plot, _heatmap, _reliability, _confusion):
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


def _learning_curves(analysis: SourceAnalysis, records: dict[str, CellRecord], out_dir: Path,
                     subdir: str) -> Plot | None:
    """Test accuracy and training loss per epoch of the best cells (and the baseline): the mean over seeds, with
    a min–max band where there are several."""
    labels = _shown_cells(analysis, CURVE_CELLS)
    if not labels:
        return None
    fig = Figure(figsize=(11, 4.6))
    ax_acc, ax_loss = fig.subplots(1, 2, sharex=True)  # one epoch axis, also where only some were evaluated
    handles = []
    sparse_any = False
    loss_range = [math.inf, 0.0]
    for label, color in zip(labels, palette(len(labels))):
        histories = [r.history for r in _done_records(analysis, records, label)]
        drawn = _draw_curves(ax_acc, ax_loss, histories, label, color, analysis.baseline)
        if drawn is None:
            continue
        line, sparse, (low, high) = drawn
        sparse_any |= sparse
        loss_range = [min(loss_range[0], low), max(loss_range[1], high)]
        handles.append(line)
    if not handles:
        return None
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)",
               title="Test accuracy" + (" (at the evaluated epochs)" if sparse_any else ""))
    _loss_axis(ax_loss, *loss_range)
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    seeds = analysis.max_seeds
    band = "; band: min–max over seeds" if seeds > 1 else ""
    fig.suptitle(f"Learning curves — {analysis.source.name} (mean over up to {seeds_text(seeds)}{band})")
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, -0.02 - 0.045 * ((len(handles) + 1) // 2)))
    fig.tight_layout()
    path = f"{subdir}/learning_curves.png"
    save_png(fig, out_dir / path)
    ranked_shown = len(handles) - (analysis.baseline in labels[CURVE_CELLS:])
    return Plot(path, "Learning curves",
                f"Test accuracy and training loss per epoch of the {ranked_shown} best cell(s)"
                + (" and the baseline" if analysis.baseline in labels[CURVE_CELLS:] else "")
                + ("; the baseline dashed" if analysis.baseline in labels else "")
                + ". Training losses of different loss functions are in different units: compare their shapes.")


def _draw_curves(ax_acc: Any, ax_loss: Any, histories: list[list[Epoch]], label: str, color: Any,
                 baseline: str | None) -> tuple[Any, bool, tuple[float, float]] | None:
    """One cell's mean test accuracy (%) and training loss over its seeds' common epochs, each with a min–max band
    over seeds; returns the accuracy line (for the legend), whether only some epochs were evaluated, and the
    range of its positive training losses ((inf, 0) when none). None when a seed has no epoch."""
    epochs = min((len(h) for h in histories), default=0)
    if epochs == 0:
        return None
    x = np.arange(1, epochs + 1)
    acc = np.array([[h[e].test_acc for e in range(epochs)] for h in histories], dtype=float) * 100
    loss = np.array([[h[e].train_loss for e in range(epochs)] for h in histories], dtype=float)
    style = "--" if label == baseline else "-"
    name = label + (" (baseline)" if label == baseline else "")
    # Test accuracy exists only at evaluated epochs (train.eval_every): the curve joins those, marked.
    evaluated = np.isfinite(acc).all(axis=0)
    sparse = not evaluated.all()
    (line,) = ax_acc.plot(x[evaluated], acc[:, evaluated].mean(0), style, color=color, lw=1.8, label=name,
                          marker="o" if sparse else None, ms=3)
    ax_loss.plot(x, loss.mean(0), style, color=color, lw=1.8)
    finite = loss[np.isfinite(loss) & (loss > 0)]
    if len(histories) > 1:
        ax_acc.fill_between(x[evaluated], acc[:, evaluated].min(0), acc[:, evaluated].max(0), color=color,
                            alpha=0.15, lw=0)
        ax_loss.fill_between(x, loss.min(0), loss.max(0), color=color, alpha=0.15, lw=0)
    return line, sparse, ((float(finite.min()), float(finite.max())) if finite.size else (math.inf, 0.0))


def _loss_axis(ax: Any, low: float, high: float) -> None:
    """The training-loss axis: on a log scale when the losses (from `low` to `high`) span more than a decade."""
    # A log axis helps only across decades; over a narrower range it leaves the axis with one or two labels.
    log = math.isfinite(low) and high / low > 10
    ax.set(xlabel="epoch", ylabel="training loss (each cell's own objective" + (", log scale)" if log else ")"),
           title="Training loss", yscale="log" if log else "linear")
    if log:  # plain numbers (0.1, 0.5, 2) rather than powers of ten; minor ones (2, 5 ×10^k) only where they fit
        decades = math.log10(high / low)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}" if decades <= 2.5 and v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5)
            else ""))


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
    ax.set_title(wrap(f"Mean {m.title}: {pivot.rows} × {pivot.columns}{averaged}", 60), fontsize=11)
    fig.tight_layout()
    path = f"{subdir}/{pivot.rows}_x_{pivot.columns}.png"
    save_png(fig, out_dir / path)
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
        ax.set_title(wrap(label, 36) + ece_text, fontsize=9)
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
    save_png(fig, out_dir / path)
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
    ax.set_title(f"Confusion matrix of the best cell — {analysis.source.name}\n{wrap(label, 60)}\n"
                 f"(counts summed over {seeds_text(len(mats))}, {int(counts.sum()):,} test predictions)",
                 fontsize=10)
    fig.tight_layout()
    path = f"{subdir}/confusion_best.png"
    save_png(fig, out_dir / path)
    return Plot(path, "Confusion matrix of the best cell",
                f"Rows are true classes, columns predictions, colour the share of the row; `{label}`.")
