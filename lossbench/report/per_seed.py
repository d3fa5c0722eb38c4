"""report.md's Every seed section: the metric of every seed of every cell, with the outlying seed of a cell marked."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from lossbench.report.aggregate import SourceAnalysis
from lossbench.report.markdown_table import cell_text, missing, table


#: A seed's value is an outlier when it lies this many robust standard deviations from the nearest other seed of
#: its cell (a gap, not a distance from the mean: with 3 seeds, one bad seed drags the mean and median along).
OUTLIER_SCALE = 5.0


def _robust_scale(values: pd.DataFrame) -> float:
    """1.4826 × the median absolute deviation of every value from its cell's median, over the whole grid: the
    typical seed-to-seed spread (a standard deviation for normal noise) that one bad seed cannot inflate."""
    residuals = values.sub(values.median(axis=1), axis=0).abs().stack()
    return 1.4826 * float(residuals.median()) if len(residuals) else math.nan


def _outlying_seed(values: pd.Series, threshold: float) -> Any:
    """The seed (index) whose value is furthest from the nearest other value, if that gap exceeds `threshold`;
    None when there are fewer than 3 values or no gap is that large. At most one per cell: with 3 seeds and one
    bad draw, the two others are far from it too but close to each other."""
    if len(values) < 3:
        return None
    # The nearest other value is a neighbour in sorted order: O(n log n), where comparing every pair took
    # 45 s on a report of 100 cells × 100 seeds.
    array = values.to_numpy(dtype=float)
    order = np.argsort(array, kind="stable")
    steps = np.diff(array[order])
    nearest = np.full(len(array), np.inf)
    nearest[:-1] = steps
    nearest[1:] = np.minimum(nearest[1:], steps)
    gaps = pd.Series(np.empty(len(array)), index=values.index)
    gaps.iloc[order] = nearest
    seed = gaps.idxmax()
    return seed if gaps[seed] > threshold else None


def every_seed_table(a: SourceAnalysis) -> list[str]:
    m = a.metric
    rows = a.rows[a.rows["status"] == "done"].dropna(subset=[m.name])
    if rows.empty:
        return ["No cell finished: no per-seed values."]
    if int(a.summary["n_seeds"].max()) <= 1:
        return [f"One seed per cell: the leaderboard above shows every value of {m.title}."]
    values = rows.pivot_table(index="label", columns="seed", values=m.name, aggfunc="first")
    order = [x for x in a.summary["label"] if x in values.index]
    values = values.loc[order]
    seeds = sorted(int(c) for c in values.columns)
    scale = _robust_scale(values) if len(seeds) >= 3 else math.nan
    status = a.rows.set_index(["label", "seed"])["status"].to_dict()
    flagged = 0
    table_rows = []
    for label in order:
        present = values.loc[label].dropna()
        outlier = _outlying_seed(present, OUTLIER_SCALE * scale) if scale > 0 else None
        flagged += outlier is not None
        cells = []
        for seed in seeds:
            value = values.loc[label].get(seed)
            if missing(value):
                cells.append(str(status.get((label, seed), "—")))
                continue
            cells.append(f"**{m.show(value)}** ⚠" if seed == outlier else m.show(value))
        spread = m.show(present.max() - present.min()) if len(present) > 1 else "—"
        table_rows.append([cell_text(label), *cells, spread])
    unit = f" {m.diff_unit}" if m.diff_unit else ""
    lines = [f"{m.title.capitalize()} of every seed{f' ({m.unit})' if m.unit else ''}, cells in leaderboard order; "
             "range = highest − lowest seed."]
    if scale > 0:
        lines[0] += (f" ⚠ marks an outlier: the seed of a cell (3 seeds or more) that lies furthest from its other "
                     f"seeds, when it is further than {OUTLIER_SCALE:g} × {m.show(scale)}{unit} from all of them, where "
                     f"{m.show(scale)}{unit} is the grid's typical seed-to-seed spread (1.4826 × the median absolute "
                     "deviation of every seed from its cell's median)"
                     + (f" — {flagged} here: it pulls its cell's mean and widens its interval." if flagged
                        else "; none here."))
    if a.rows.groupby("label")["seed"].nunique().nunique() > 1:
        lines[0] += (" Cells ran different numbers of seeds (as adaptive seeding decides): — marks a seed a cell "
                     "did not run.")
    return lines + [""] + table(["cell", *[f"seed {s}" for s in seeds], "range"], table_rows)
