"""A tuned source's search as the report sees it: the ranges searched, each cell's trials and chosen values, and
the two checks that turn the numbers into advice:

- *edge of range*: a cell's chosen value in the outer `EDGE_SHARE` of its range (on the log scale where the range
  is `log: true`) suggests the best value lies outside it — "widen the range of train.optimizer.lr for arcface";
- *still rising*: a cell whose best-so-far curve still improves in the last `RISE_WINDOW` of its trials, by more
  than noise (see `still_rising`), had too small a budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lossbench.analysis.measures import Measure
from lossbench.record import CellRecord, DataSizes
from lossbench.report.aggregate import SourceAnalysis


#: A chosen value this close to either end of its range (a share of the range's width, on the log scale for log
#: ranges) draws a warning: the best value may lie outside the range.
EDGE_SHARE = 0.10
#: The last share of the budget (in trial numbers, at least 2 trials) in which an improvement means "still rising".
RISE_WINDOW = 0.25
#: ... when it exceeds this share of the curve's whole gain (from the first complete trial to the final best).
RISE_SHARE = 0.05
#: Metrics counted in whole validation images: an improvement of one image or less is a tie, not a rise.
COUNTED_METRICS = ("val_acc", "val_top5")
#: Best-so-far panels in one figure (one panel per loss); further losses are left out and the caption says so.
MAX_PANELS = 24


@dataclass(frozen=True)
class Range:
    """One `tune.space` entry: a numeric range [low, high] (log-uniform when `log`) or a list of `choices`."""

    path: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    def position(self, value: Any) -> float | None:
        """Where `value` lies in the range: 0 at `low`, 1 at `high`, on the log scale for log ranges; None for
        choices, a degenerate range or a value that is not a number."""
        if self.choices is not None or self.low is None or self.high is None:
            return None
        try:
            v, low, high = float(value), float(self.low), float(self.high)
        except (TypeError, ValueError):
            return None
        if self.log:
            if min(v, low, high) <= 0:
                return None
            v, low, high = math.log(v), math.log(low), math.log(high)
        return (v - low) / (high - low) if high > low else None

    def describe(self) -> str:
        if self.choices is not None:
            return "choices " + ", ".join(str(c) for c in self.choices)
        return f"[{number_text(self.low)}, {number_text(self.high)}]" + (" (log scale)" if self.log else "")


@dataclass(frozen=True)
class Rise:
    """The verdict on one best-so-far curve. `status`: `rising` (the budget was too small), `flat`, or
    `unjudged` (too few trials to tell). `before` is the best value before the last window of trials, `end` the
    final best, `window_start` the first trial number of that window; values are oriented so higher is better."""

    status: Literal["rising", "flat", "unjudged"]
    window_start: int
    before: float | None = None
    end: float | None = None
    threshold: float | None = None


def still_rising(trials: Sequence[int], values: Sequence[float], budget: int, resolution: float = 0.0) -> Rise:
    """Is a best-so-far curve still rising at the end of its budget?

    `trials` are the trial numbers (0-based) of the complete trials and `values` their tuning metric, oriented so
    that higher is better (negate a metric to minimise). The last window is the trials numbered
    `budget − w` … `budget − 1`, w = max(2, ⌈RISE_WINDOW × budget⌉). The curve is *rising* when the best value in
    that window beats the best before it by more than both RISE_SHARE × the curve's whole gain (final best − the
    first complete trial's value) and `resolution` (the metric's smallest meaningful step, e.g. one validation
    image of an accuracy). It is *unjudged* with a budget under 4 trials or no complete trial before the window.
    """
    width = max(2, math.ceil(RISE_WINDOW * budget))
    start = budget - width
    pairs = sorted((int(t), float(v)) for t, v in zip(trials, values) if v is not None and math.isfinite(v))
    early = [v for t, v in pairs if t < start]
    if budget < 4 or not early:
        return Rise("unjudged", start)
    before = max(early)
    end = max(v for _, v in pairs)
    gain = end - pairs[0][1]
    threshold = max(RISE_SHARE * gain, resolution)
    return Rise("rising" if end - before > threshold else "flat", start, before, end, threshold)


def best_so_far(trials: Sequence[int], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The running best (highest) of `values` in trial order, for the complete trials given."""
    order = np.argsort(np.asarray(trials, dtype=float), kind="stable")
    x = np.asarray(trials, dtype=float)[order]
    y = np.maximum.accumulate(np.asarray(values, dtype=float)[order]) if len(order) else np.array([])
    return x, y


@dataclass
class CellTuning:
    """One grid cell's search: its trials (rows of tuning.csv, by trial number) and its final cells (one per
    verdict seed; empty while the verdict is not trained yet)."""

    cell_id: str
    label: str
    loss: str
    trials: pd.DataFrame
    final: list[CellRecord]
    #: The chosen trial's number, tuning metric and values (from the final cells' `tuned` block, else the best
    #: complete trial of tuning.csv).
    chosen_trial: int | None
    chosen_value: float | None
    params: dict[str, Any]

    def count(self, state: str) -> int:
        return int((self.trials["state"] == state).sum()) if len(self.trials) else 0

    @property
    def epochs(self) -> int:
        """Epochs this cell's trials trained, pruned ones included (from tuning.csv, else the `tuned` block)."""
        if len(self.trials) and "epochs" in self.trials:
            return int(pd.to_numeric(self.trials["epochs"], errors="coerce").fillna(0).sum())
        tuned = self.final[0].config.get("tuned") if self.final else None
        return int((tuned or {}).get("epochs") or 0)


@dataclass(frozen=True)
class EdgeWarning:
    """A chosen value in the outer EDGE_SHARE of its range."""

    path: str
    label: str
    name: str
    value: Any
    side: Literal["low", "high"]
    range: Range

    def sentence(self) -> str:
        where = "lowest" if self.side == "low" else "highest"
        scale = " on the log scale" if self.range.log else ""
        return (f"widen the range of {self.path} for {self.name}: its best value {number_text(self.value)} lies in the "
                f"{where} {EDGE_SHARE:.0%} of {self.range.describe().replace(' (log scale)', '')}{scale}, so a "
                f"better value may lie beyond {number_text(self.range.low if self.side == 'low' else self.range.high)}")


@dataclass
class Study:
    """Everything the Tuning section says about one tuned source."""

    analysis: SourceAnalysis
    metric: Measure
    direction: Literal["maximize", "minimize"]
    budget: int | None
    sampler: str
    sampler_seed: Any
    pruner: str
    paths: list[str]
    space: dict[str, Range]
    cells: list[CellTuning]
    tuning_seeds: list[int]
    verdict_seeds: list[int]
    #: Split sizes of the final cells (train, val, test, classes, image_size).
    data: DataSizes
    #: Epochs one untruncated trial trains (the recipe's train.epochs).
    epochs_per_trial: int | None
    csv_files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: Where the ranges come from, for the reader.
    space_from: str = "`tune.space` in suite.yaml"

    @property
    def higher(self) -> bool:
        return self.direction == "maximize"

    def oriented(self, values: Any) -> np.ndarray:
        """Values turned so that higher is better."""
        arr = np.asarray(values, dtype=float)
        return arr if self.higher else -arr

    @property
    def resolution(self) -> float:
        """The metric's smallest meaningful step: one validation image for counted metrics, else 0."""
        val = int(self.data.val or 0)
        return 1.0 / val if self.metric.name in COUNTED_METRICS and val > 0 else 0.0

    def complete(self, cell: CellTuning) -> pd.DataFrame:
        trials = cell.trials
        if not len(trials) or self.metric.name not in trials:
            return trials.iloc[0:0]
        done = trials[(trials["state"] == "complete")]
        return done[pd.to_numeric(done[self.metric.name], errors="coerce").notna()]

    def rise(self, cell: CellTuning) -> Rise:
        done = self.complete(cell)
        budget = self.budget or (int(cell.trials["trial"].max()) + 1 if len(cell.trials) else 0)
        values = self.oriented(pd.to_numeric(done[self.metric.name], errors="coerce")) if len(done) else []
        return still_rising(list(done["trial"]) if len(done) else [], list(values), budget, self.resolution)


def edge_warnings(study: Study) -> list[EdgeWarning]:
    """Every chosen value that lies in the outer EDGE_SHARE of its numeric range (choices are never at an edge)."""
    names = short_names([c.label for c in study.cells])
    out = []
    for path in study.paths:
        rng = study.space.get(path)
        if rng is None or rng.choices is not None:
            continue
        for cell in study.cells:
            if path not in cell.params:
                continue
            pos = rng.position(cell.params[path])
            if pos is None:
                continue
            if pos < EDGE_SHARE or pos > 1 - EDGE_SHARE:
                out.append(EdgeWarning(path, cell.label, names[cell.label], cell.params[path],
                                       "low" if pos < EDGE_SHARE else "high", rng))
    return out


def short_names(labels: Sequence[str]) -> dict[str, str]:
    """Each label cut to the parts (between ' | ') that differ between the labels: `arcface` for
    `arcface | none | none` beside `cross_entropy | none | none`; the whole label where nothing differs."""
    parts = [lbl.split(" | ") for lbl in labels]
    width = max((len(p) for p in parts), default=0)
    varying = [i for i in range(width) if len({p[i] if i < len(p) else "" for p in parts}) > 1]
    return {lbl: " | ".join(p[i] for i in varying if i < len(p)) if varying else lbl for lbl, p in zip(labels, parts)}


def plain_value(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (for JSON and formatting); anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def number_text(value: Any) -> str:
    """A tuned value as a reader wants it: integers whole, other numbers to 3 significant digits."""
    value = plain_value(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.3g}"
