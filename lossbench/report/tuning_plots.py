"""The Tuning section's figures: best-so-far curves (one panel per loss) and one sensitivity plot per tuned
parameter (the tuning metric of every trial against the value it tried, one colour and marker per loss, or one
panel per loss when there are many).

Built like the report's other figures: matplotlib's object interface on the Agg canvas, written atomically.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from lossbench.analysis.measures import Measure
from lossbench.report.figure import Plot, palette, save_png, wrap
from lossbench.report.tuning_study import (
    EDGE_SHARE,
    MAX_PANELS,
    RISE_WINDOW,
    CellTuning,
    Range,
    Study,
    best_so_far,
)

#: More losses than this and a sensitivity plot gets one panel per loss (one colour each would not be told apart).
FACET_LOSSES = 6
#: Cells named in the best-so-far legend; the rest are drawn but not named.
MAX_LEGEND_LINES = 18
#: One marker shape per loss in an unfaceted sensitivity plot.
MARKERS = ("o", "s", "^", "D", "v", "P")
PRUNED_NOTE = "hollow: pruned (the value it had reached when stopped, after fewer epochs)"


def make_plots(study: Study, out_dir: Path, subdir: str) -> list[Plot]:
    """The best-so-far curves and one sensitivity plot per tuned parameter, as PNGs under out_dir/subdir."""
    plots = []
    curve = best_so_far_plot(study, out_dir, f"{subdir}/tuning_best_so_far.png")
    if curve is not None:
        plots.append(curve)
    for path in study.paths:
        plot = sensitivity_plot(study, path, out_dir, f"{subdir}/tuning_{_slug(path)}.png")
        if plot is not None:
            plots.append(plot)
    return plots


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "param"


def _losses(study: Study) -> list[str]:
    return list(dict.fromkeys(c.loss for c in study.cells))


def _rest_of_label(cell: CellTuning) -> str:
    """The label without its loss part: what tells cells of one loss apart within its panel."""
    parts = cell.label.split(" | ")
    return " | ".join(parts[1:]) if len(parts) > 1 and parts[0] == cell.loss else cell.label


def best_so_far_plot(study: Study, out_dir: Path, rel: str) -> Plot | None:
    """One panel per loss (shared y axis), one step line per cell: the best tuning metric among its complete
    trials up to each trial number; the last window of the budget is shaded and rising curves are drawn thick."""
    m = study.metric
    curves = _best_so_far_curves(study)
    if not curves:
        return None
    losses = [loss for loss in _losses(study) if any(c.loss == loss for c, *_ in curves)]
    shown, left_out = losses[:MAX_PANELS], losses[MAX_PANELS:]
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows + 0.6))
    axes = np.atleast_1d(fig.subplots(rows, cols, sharey=True, squeeze=False)).ravel()
    last = max(int(x[-1]) for _, x, _, _ in curves)
    budget = study.budget or last + 1
    window = max(2, math.ceil(RISE_WINDOW * budget))
    # A cell's colour is what tells it apart within its loss (the rest of its label), the same in every panel, so
    # one legend under the figure names them all and no legend covers a curve.
    rests = list(dict.fromkeys(_rest_of_label(c) for c, *_ in curves))
    colors = dict(zip(rests, palette(len(rests))))
    for ax, loss in zip(axes, shown):
        _draw_best_so_far(ax, loss, [c for c in curves if c[0].loss == loss], colors, budget, window)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    for ax in axes[:len(shown)]:
        ax.set_xlabel("trial")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(f"best {m.heading} so far")
    handles = _best_so_far_legend(study, curves, rests, colors)
    fig.suptitle(f"Best-so-far {m.title} per cell — {study.analysis.source.name} (validation split; shaded: the "
                 f"last {window} trials of the {budget}-trial budget)", fontsize=11)
    fig.tight_layout()
    if handles:
        ncol = min(3, len(handles))
        fig.legend(handles=handles, loc="upper center", ncol=ncol, fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
    save_png(fig, out_dir / rel)
    caption = (f"For each cell, the best {m.title} among its complete trials up to each trial (dots where it "
               f"improved), one panel per loss. A curve still improving in the shaded last {window} trials "
               "(drawn thick) means the budget was too small for that cell.")
    if left_out:
        caption += f" {len(left_out)} further loss(es) not drawn: {', '.join(left_out)}."
    return Plot(rel, "Best-so-far curves", caption)


#: One cell's best-so-far curve: the cell, its complete trials' numbers, the running best in display units (in the
#: metric's own direction), and whether it is still rising.
_Curve = tuple[CellTuning, np.ndarray, np.ndarray, bool]


def _best_so_far_curves(study: Study) -> list[_Curve]:
    """The curve of every cell with a complete trial, in the study's cell order."""
    m = study.metric
    sign = 1.0 if study.higher else -1.0
    curves = []
    for cell in study.cells:
        done = study.complete(cell)
        if not len(done):
            continue
        x, y = best_so_far(list(done["trial"]), list(study.oriented(pd.to_numeric(done[m.name]))))
        curves.append((cell, x, sign * y * m.scale, study.rise(cell).status == "rising"))
    return curves


def _draw_best_so_far(ax: Any, loss: str, curves: list[_Curve], colors: dict[str, Any], budget: int,
                      window: int) -> None:
    """The panel of one loss: a step line per cell (thick when still rising, dots where it improved), the budget's last
    `window` trials shaded."""
    for cell, x, y, rising in curves:
        color = colors[_rest_of_label(cell)]
        # Extend each curve to the last trial of the budget: the best so far holds until then.
        xs, ys = np.append(x, max(budget - 1, x[-1])), np.append(y, y[-1])
        ax.step(xs, ys, where="post", color=color, lw=2.8 if rising else 1.5)
        improved = np.r_[True, np.diff(y) != 0]
        ax.plot(x[improved], y[improved], "o", color=color, ms=3.5)
    ax.axvspan(budget - window - 0.5, budget - 0.5, color="#999999", alpha=0.15, lw=0)
    ax.set_title(wrap(loss, 40), fontsize=10)
    ax.set_xlim(-0.5, budget - 0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)


def _best_so_far_legend(study: Study, curves: list[_Curve], rests: list[str], colors: dict[str, Any]) -> list[Any]:
    """A line per colour (up to MAX_LEGEND_LINES), and what a thick line means where one is drawn."""
    handles: list[Any] = []
    if len(rests) > 1:
        handles += [Line2D([], [], color=colors[r], lw=1.5, label=wrap(r, 40)) for r in rests[:MAX_LEGEND_LINES]]
        if len(rests) > MAX_LEGEND_LINES:
            handles.append(Line2D([], [], ls="", label=f"+{len(rests) - MAX_LEGEND_LINES} more, not named"))
    if any(rising for *_, rising in curves):
        moving = "rising" if study.higher else "falling"
        handles.append(Line2D([], [], color="#555555", lw=2.8, label=f"thick: still {moving}"))
    return handles


def _shade_range(ax: Any, rng: Range | None, log: bool) -> None:
    """The range's bounds (dashed) and its outer EDGE_SHARE at each end (shaded), on the log scale if `log`."""
    if rng is None or rng.choices is not None or rng.low is None or rng.high is None:
        return
    low, high = float(rng.low), float(rng.high)
    if log:
        inner_low, inner_high = low * (high / low) ** EDGE_SHARE, high / (high / low) ** EDGE_SHARE
    else:
        inner_low, inner_high = low + EDGE_SHARE * (high - low), high - EDGE_SHARE * (high - low)
    ax.axvspan(low, inner_low, color="#ff7f0e", alpha=0.12, lw=0)
    ax.axvspan(inner_high, high, color="#ff7f0e", alpha=0.12, lw=0)
    for bound in (low, high):
        ax.axvline(bound, color="#666666", ls="--", lw=1)


def _draw_trials(ax: Any, trials: pd.DataFrame, color: Any, marker: str = "o") -> None:
    """One loss's trials: filled complete, hollow pruned, × failed at the foot of the axis, ★ chosen."""
    ok = trials[(trials["state"] == "complete") & trials["py"].notna()]
    ax.scatter(ok["px"], ok["py"], s=28, marker=marker, color=color, alpha=0.75, lw=0, zorder=2)
    pruned = trials[(trials["state"] == "pruned") & trials["py"].notna()]
    ax.scatter(pruned["px"], pruned["py"], s=32, marker=marker, facecolors="none", edgecolors=color, lw=1.1,
               alpha=0.9, zorder=2)
    # Failed trials (and pruned ones without a value) have no metric: a × at the foot of the axis.
    failed = trials[(trials["state"] == "failed") | ((trials["state"] == "pruned") & trials["py"].isna())]
    foot = blended_transform_factory(ax.transData, ax.transAxes)
    ax.scatter(failed["px"], np.full(len(failed), 0.03), s=34, marker="x", color=color, lw=1.3, transform=foot,
               clip_on=False, zorder=3)
    chosen = trials[trials["chosen"] & trials["py"].notna()]
    ax.scatter(chosen["px"], chosen["py"], s=170, marker="*", color=color, edgecolors="black", lw=0.8, zorder=5)


def _positions(values: pd.Series, rng: Range | None) -> tuple[np.ndarray, list[str] | None]:
    """x positions: the values themselves, or for categorical values their index among the choices."""
    numeric = pd.to_numeric(values, errors="coerce")
    if (rng is None or rng.choices is None) and numeric.notna().all():
        return numeric.to_numpy(dtype=float), None
    choices = [str(c) for c in rng.choices] if rng is not None and rng.choices else []
    for v in values.astype(str):
        if v not in choices:
            choices.append(v)
    return np.array([float(choices.index(str(v))) for v in values]), choices


def _category_key(value: Any) -> str:
    """A categorical value as tuning.csv and the `tuned` block may spell it (64 vs 64.0)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class _Trials:
    """What a sensitivity plot draws for one tuned parameter: a row per trial (loss, label, trial, state, its
    value x, its metric y, whether chosen, and its position px, py in display units), the range, the categories
    (None for numeric values), and how the losses are told apart (colour, marker, or one panel each)."""

    path: str
    frame: pd.DataFrame
    rng: Range | None
    categories: list[str] | None
    losses: list[str]
    colors: dict[str, Any]
    markers: dict[str, str]
    log: bool
    facets: bool


def sensitivity_plot(study: Study, path: str, out_dir: Path, rel: str) -> Plot | None:
    """The tuning metric of every trial against its value of `path`: filled complete, hollow pruned, × failed
    (at the foot of the axis: no value), a star at each cell's chosen trial; one colour and marker per loss (one
    panel per loss beyond FACET_LOSSES); the range's
    bounds dashed and its outer EDGE_SHARE shaded."""
    m = study.metric
    trials = _sensitivity_trials(study, path)
    if trials is None:
        return None
    fig, groups = _sensitivity_panels(trials)
    for ax, group in groups:
        _draw_sensitivity_panel(ax, trials, group, m)
    handles = _sensitivity_legend(trials)
    title = wrap(f"{m.title.capitalize()} against {path} — {study.analysis.source.name}", 70)
    if trials.facets:
        fig.suptitle(title + " (one panel per loss)", fontsize=11)
        fig.tight_layout(rect=(0, 0, 1 - 2.4 / fig.get_figwidth(), 1))
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1 - 2.3 / fig.get_figwidth(), 0.95),
                   fontsize=8, frameon=False)
    else:
        ax = groups[0][0]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        ax.set_title(title, fontsize=11)
        fig.tight_layout()
    save_png(fig, out_dir / rel)
    return Plot(rel, f"Sensitivity to {path}", _sensitivity_caption(trials, m))


def _sensitivity_trials(study: Study, path: str) -> _Trials | None:
    """Every trial of the cells that tune `path`, placed on the plot; None when no cell tunes it."""
    m = study.metric
    rows = []
    for cell in study.cells:
        trials = cell.trials
        if path not in trials or not len(trials):
            continue
        used = trials[trials[path].notna()]
        rows += [{"loss": cell.loss, "label": cell.label, "trial": int(t), "state": s, "x": v,
                  "y": pd.to_numeric(pd.Series([y]), errors="coerce").iloc[0] if m.name in used else math.nan,
                  "chosen": cell.chosen_trial == int(t)}
                 for t, s, v, y in zip(used["trial"], used["state"], used[path],
                                       used[m.name] if m.name in used else [math.nan] * len(used))]
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    rng = study.space.get(path)
    if rng is not None and rng.choices is not None:
        frame["x"] = frame["x"].map(_category_key)
        rng = Range(rng.path, choices=tuple(_category_key(c) for c in rng.choices))
    x, categories = _positions(frame["x"], rng)
    if categories is not None:
        # Spread the trials of one category sideways (a fixed offset per trial number, so reruns draw the same).
        x = x + ((frame["trial"].to_numpy() * 0.618) % 1.0 - 0.5) * 0.35
    frame["px"] = x
    frame["py"] = frame["y"] * m.scale
    losses = [loss for loss in _losses(study) if loss in set(frame["loss"])]
    # Facets tell the losses apart by panel: strong colours (tab10, repeating) read better than tab20's pale ones.
    colors = dict(zip(losses, palette(len(losses)) if len(losses) <= FACET_LOSSES
                      else [palette(10)[i % 10] for i in range(len(losses))]))
    log = rng is not None and rng.log and categories is None and (frame["px"] > 0).all()
    # Every cell draws the same random points first (a paired search), so losses share x values: shapes as well as
    # colours keep coincident trials of two losses apart.
    markers = {loss: MARKERS[i % len(MARKERS)] for i, loss in enumerate(losses)}
    return _Trials(path, frame, rng, categories, losses, colors, markers, log, len(losses) > FACET_LOSSES)


def _sensitivity_panels(trials: _Trials) -> tuple[Figure, list[tuple[Any, list[str]]]]:
    """The figure and its panels, each with the losses it draws: one panel for all, or one per loss (up to
    MAX_PANELS) when there are more than FACET_LOSSES."""
    if not trials.facets:
        fig = Figure(figsize=(8.8, 4.6))
        return fig, [(fig.subplots(), trials.losses)]
    shown = trials.losses[:MAX_PANELS]
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = Figure(figsize=(3.6 * cols + 2.6, 2.9 * rows + 0.7))
    panels = list(np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel())
    for ax in panels[len(shown):]:
        ax.set_visible(False)
    return fig, [(ax, [loss]) for ax, loss in zip(panels, shown)]


def _draw_sensitivity_panel(ax: Any, trials: _Trials, group: list[str], m: Measure) -> None:
    """One panel: the range's shading, the trials of its losses (the other losses' in grey when faceted), its
    axes."""
    frame, facets, categories = trials.frame, trials.facets, trials.categories
    _shade_range(ax, trials.rng, trials.log)
    if facets:
        # The other losses' complete trials in grey: where this loss stands against the rest.
        rest = frame[~frame["loss"].isin(group) & (frame["state"] == "complete") & frame["py"].notna()]
        ax.scatter(rest["px"], rest["py"], s=10, color="#cccccc", lw=0, zorder=1)
        ax.set_title(wrap(group[0], 36), fontsize=9)
    for loss in group:
        _draw_trials(ax, frame[frame["loss"] == loss], trials.colors[loss], "o" if facets else trials.markers[loss])
    if trials.log:
        ax.set_xscale("log")
    if categories is not None:
        ax.set_xticks(range(len(categories)), categories)
        ax.set_xlim(-0.6, len(categories) - 0.4)
    ax.grid(alpha=0.3)
    spec = ax.get_subplotspec()
    if spec.is_last_row() or not facets:
        ax.set_xlabel(trials.path + (" (log scale)" if trials.log else ""), fontsize=9 if facets else None)
    if spec.is_first_col():
        ax.set_ylabel(m.heading if m.name.startswith("val") else f"{m.heading} (validation)")


def _sensitivity_legend(trials: _Trials) -> list[Any]:
    """The losses' markers (when not faceted), then what each kind of point means."""
    handles: list[Any] = [] if trials.facets else [
        Line2D([], [], ls="", marker=trials.markers[loss], color=trials.colors[loss], label=wrap(loss, 28))
        for loss in trials.losses]
    handles += [
        Line2D([], [], ls="", marker="o", color="#555555", label="complete trial"),
        Line2D([], [], ls="", marker="o", markerfacecolor="none", markeredgecolor="#555555",
               label=wrap(PRUNED_NOTE, 28)),
        Line2D([], [], ls="", marker="x", color="#555555", label="failed (no value)"),
        Line2D([], [], ls="", marker="*", markersize=12, color="#555555", markeredgecolor="black",
               label="chosen trial of a cell"),
    ]
    if trials.facets:
        handles.append(Line2D([], [], ls="", marker="o", color="#cccccc", label="other losses' trials"))
    if trials.rng is not None and trials.rng.choices is None:
        handles.append(Patch(color="#ff7f0e", alpha=0.25, label=f"outer {EDGE_SHARE:.0%} of the range"))
    return handles


def _sensitivity_caption(trials: _Trials, m: Measure) -> str:
    counts = trials.frame["state"].value_counts()
    cells = trials.frame["label"].nunique()
    text = (f"Every trial of the {cells} cell(s) that tune `{trials.path}`: its {m.title} against the value it "
            f"tried ({int(counts.get('complete', 0))} complete, {int(counts.get('pruned', 0))} pruned, "
            f"{int(counts.get('failed', 0))} failed), "
            + ("one panel per loss, the other losses' complete trials in grey" if trials.facets
               else "one colour and marker per loss")
            + "; stars mark each cell's chosen trial.")
    if trials.rng is not None and trials.rng.choices is None:
        text += f" Dashed: the range's bounds; shaded: its outer {EDGE_SHARE:.0%}" + (
            " on the log scale." if trials.rng.log else ".")
    return text
