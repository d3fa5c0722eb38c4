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

from lossbench.record import CellRecord
from lossbench.report.aggregate import SourceAnalysis
from lossbench.store import atomic_write_bytes

#: How many cells the learning curves and reliability diagrams show (the best ones, plus the baseline).
CURVE_CELLS = 6
RELIABILITY_CELLS = 3
#: The bar chart shows at most this many cells (the best ones); the leaderboard lists them all.
BAR_CELLS = 30
#: Confusion matrices with more classes than this carry no numbers in their squares (they would not be legible).
ANNOTATE_CLASSES = 20
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
    ax_acc, ax_loss = fig.subplots(1, 2)
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
        acc = np.array([[h[e]["test_acc"] for e in range(epochs)] for h in histories], dtype=float) * 100
        loss = np.array([[h[e]["train_loss"] for e in range(epochs)] for h in histories], dtype=float)
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


def _bar_chart(analysis: SourceAnalysis, records: dict[str, CellRecord], out_dir: Path,
               subdir: str) -> Plot | None:
    m = analysis.metric
    ranked = analysis.ranked().head(BAR_CELLS)
    if ranked.empty:
        return None
    if analysis.baseline is not None and analysis.baseline not in set(ranked["label"]):
        base = analysis.ranked()[analysis.ranked()["label"] == analysis.baseline]
        ranked = pd.concat([ranked, base])
    means = ranked[f"{m.name}_mean"].to_numpy(dtype=float) * m.scale
    # Error bars stop at the metric's possible range (an accuracy interval can reach below 0% on paper).
    low = np.array([m.clip(v) for v in ranked[f"{m.name}_ci_low"].to_numpy(dtype=float)]) * m.scale
    high = np.array([m.clip(v) for v in ranked[f"{m.name}_ci_high"].to_numpy(dtype=float)]) * m.scale
    has_ci = ~np.isnan(low)
    y = np.arange(len(ranked))[::-1]
    fig = Figure(figsize=(9, 1.2 + 0.38 * len(ranked)))
    ax = fig.subplots()
    colors = ["#d62728" if lbl == analysis.baseline else "#1f77b4" for lbl in ranked["label"]]
    ax.barh(y, means, color=colors, alpha=0.85)
    if has_ci.any():
        ax.errorbar(means[has_ci], y[has_ci], xerr=[means[has_ci] - low[has_ci], high[has_ci] - means[has_ci]],
                    fmt="none", ecolor="black", elinewidth=1.2, capsize=3)
    ax.set_yticks(y, [lbl + (" (baseline)" if lbl == analysis.baseline else "") for lbl in ranked["label"]],
                  fontsize=9)
    lo = np.nanmin(np.where(has_ci, low, means))
    hi = np.nanmax(np.where(has_ci, high, means))
    pad = max((hi - lo) * 0.15, 1e-6 + abs(hi) * 0.002)
    # Differences between cells are often a fraction of the value: start the axis near the data, and say so.
    start = lo - pad if m.higher_is_better is not False or lo - pad > 0 else 0.0
    end = hi + 2.5 * pad  # room for the printed values
    if m.unit == "%" and hi <= 100:
        end = min(end, 100.0)
    ax.set_xlim(max(start, 0.0) if lo >= 0 else start, end)
    ax.set_ylim(-0.6, len(ranked) - 0.4)
    # Each value is printed just right of its bar or interval, where no error bar can cross it.
    right = np.where(has_ci, high, means)
    for yi, v, x in zip(y, means, right):
        ax.annotate(f"{v:,.{m.digits}f}", (x, yi), xytext=(4, 0), textcoords="offset points", va="center",
                    fontsize=8, annotation_clip=False)
    zero_note = "" if ax.get_xlim()[0] == 0 else " — axis does not start at 0"
    ax.set_xlabel(f"{m.heading}{zero_note}")
    ax.grid(axis="x", alpha=0.3)
    ci = ("error bars: 95% t-interval over seeds" if has_ci.any()
          else "one seed: no confidence interval")
    ax.set_title(f"{m.title[0].upper()}{m.title[1:]} by cell — {analysis.source.name} ({ci})", fontsize=11)
    fig.tight_layout()
    path = f"{subdir}/{m.name}_bars.png"
    _save(fig, out_dir / path)
    shown = f"the {len(ranked)} best cells" if len(analysis.ranked()) > len(ranked) else "every ranked cell"
    return Plot(path, f"{m.title[0].upper()}{m.title[1:]} with 95% confidence intervals",
                f"Mean {m.heading} of {shown}" + ("; the baseline in red." if analysis.baseline else "."))


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
    bins = [r.metric("reliability") for r in recs]
    bins = [b for b in bins if b and b.get("count")]
    if not bins:
        return None
    count = np.sum([np.asarray(b["count"], dtype=float) for b in bins], axis=0)
    conf = np.sum([np.asarray(b["count"], float) * np.asarray(b["confidence"], float) for b in bins], axis=0)
    acc = np.sum([np.asarray(b["count"], float) * np.asarray(b["accuracy"], float) for b in bins], axis=0)
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
        ax_count.set_ylim(0.5, count.max() * 8)
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


def _confusion(analysis: SourceAnalysis, records: dict[str, CellRecord], out_dir: Path,
               subdir: str) -> Plot | None:
    ranked = analysis.ranked()
    if ranked.empty:
        return None
    label = ranked.iloc[0]["label"]
    mats = [np.asarray(r.metric("confusion"), dtype=float)
            for r in _done_records(analysis, records, label) if r.metric("confusion")]
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
    ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=8)
    ax.set_yticks(ticks, [str(t) for t in ticks], fontsize=8)
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
