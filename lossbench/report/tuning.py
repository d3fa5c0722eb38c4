"""The report's "Tuning" section: how each cell's recipe was chosen before its verdict, and whether the search
was wide and long enough to trust.

It reads only files: `<results>/tuning.csv` (one row per trial: cell, cell_id, trial, state, one column per tuned
path, the tuning metric, epochs), the final cells' `tuned` blocks (the chosen trial, budget, seeds, sampler,
pruner) and the `tune:` block of `<results>/suite.yaml` (the ranges). Two checks turn the numbers into advice:

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

from lossbench.record import CellRecord
from lossbench.report.aggregate import SourceAnalysis
from lossbench.report.markdown_table import cell_text, table
from lossbench.report.measures import Measure, measure
from lossbench.report.plots import Plot
from lossbench.report.results import Results, is_tuned

TUNING_CSV = "tuning.csv"
#: Optuna's SQLite study storage beside the cell files (read only as a fallback for the ranges).
STUDY_DB = "tuning.db"
#: tuning.csv columns before the tuned paths; after them come the tuning metric and `epochs`.
LEADING_COLUMNS = ("cell", "cell_id", "trial", "state")
TRIAL_STATES = ("complete", "pruned", "failed")
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
        return f"[{_number(self.low)}, {_number(self.high)}]" + (" (log scale)" if self.log else "")


def read_space(suite_file: dict[str, Any]) -> dict[str, Range]:
    """The ranges of the `tune.space` block of a parsed suite.yaml ({} when it has none)."""
    tune = suite_file.get("tune") if isinstance(suite_file, dict) else None
    space = tune.get("space") if isinstance(tune, dict) else None
    out: dict[str, Range] = {}
    for path, spec in (space or {}).items():
        if not isinstance(spec, dict):
            continue
        if spec.get("choices") is not None:
            out[str(path)] = Range(str(path), choices=tuple(spec["choices"]))
        elif spec.get("low") is not None and spec.get("high") is not None:
            out[str(path)] = Range(str(path), float(spec["low"]), float(spec["high"]), bool(spec.get("log")))
    return out


def read_study_space(path: Path) -> dict[str, Range]:
    """The ranges the trials were drawn from, as Optuna recorded them in the study storage at `path` (the last
    recorded distribution of each parameter); {} when the file is absent or unreadable. Opened read-only."""
    import sqlite3

    if not path.is_file():
        return {}
    try:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
        from optuna.distributions import json_to_distribution

        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT param_name, distribution_json FROM trial_params ORDER BY param_id").fetchall()
        out: dict[str, Range] = {}
        for name, text in rows:
            dist = json_to_distribution(text)
            if isinstance(dist, CategoricalDistribution):
                out[name] = Range(name, choices=tuple(dist.choices))
            elif isinstance(dist, (FloatDistribution, IntDistribution)):
                out[name] = Range(name, float(dist.low), float(dist.high), bool(dist.log))
        return out
    except Exception:  # noqa: BLE001 — any unreadable storage means the same: the ranges are not known
        return {}


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
        return (f"widen the range of {self.path} for {self.name}: its best value {_number(self.value)} lies in the "
                f"{where} {EDGE_SHARE:.0%} of {self.range.describe().replace(' (log scale)', '')}{scale}, so a "
                f"better value may lie beyond {_number(self.range.low if self.side == 'low' else self.range.high)}")


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
    data: dict[str, Any]
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
        val = int(self.data.get("val") or 0)
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


# -- loading ---------------------------------------------------------------------------------------------------


def _read_csv(directory: Path, problems: list[str]) -> pd.DataFrame | None:
    path = directory / TUNING_CSV
    if not path.exists():
        return None
    try:
        frame = pd.read_csv(path, dtype={"cell": str, "cell_id": str, "state": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        problems.append(f"{path} could not be read ({type(exc).__name__}); the trials are not shown")
        return None
    missing = [c for c in (*LEADING_COLUMNS, "epochs") if c not in frame.columns]
    if missing:
        problems.append(f"{path} lacks the column(s) {', '.join(missing)}; the trials are not shown")
        return None
    frame["trial"] = pd.to_numeric(frame["trial"], errors="coerce")
    frame = frame.dropna(subset=["trial"])
    frame["trial"] = frame["trial"].astype(int)
    return frame


def _tuned_blocks(records: list[CellRecord]) -> list[dict[str, Any]]:
    return [r.config["tuned"] for r in records if is_tuned(r)]


def _first(blocks: list[dict[str, Any]], key: str, default: Any = None) -> Any:
    return next((b[key] for b in blocks if b.get(key) is not None), default)


def load_study(analysis: SourceAnalysis, results: Results) -> Study | None:
    """The tuning of a tuned source (its cells carry `tuned` blocks); None for a source that was not tuned."""
    source = analysis.source
    if not source.tuned:
        return None
    recs = [results.records[i] for i in analysis.rows.sort_values("order")["id"]]
    blocks = _tuned_blocks(recs)
    tune = source.suite_file.get("tune") if isinstance(source.suite_file.get("tune"), dict) else {}
    problems: list[str] = []
    frames, files = [], []
    for directory in source.dirs:
        frame = _read_csv(Path(directory), problems)
        if frame is not None:
            frames.append(frame)
            files.append(Path(directory) / TUNING_CSV)
    trials = (pd.concat(frames, ignore_index=True).drop_duplicates(subset=["cell_id", "trial"], keep="last")
              if frames else pd.DataFrame(columns=[*LEADING_COLUMNS, "epochs"]))
    if not frames:
        problems.append(f"no {TUNING_CSV} beside the cell files: the trials themselves cannot be shown")
    metric_name = str(_first(blocks, "metric") or tune.get("metric") or "")
    if not metric_name:
        metric_name = next((c for c in reversed(trials.columns[:-1]) if c not in LEADING_COLUMNS), "val_acc")
    direction = _first(blocks, "direction") or ("minimize" if measure(metric_name).higher_is_better is False
                                                else "maximize")
    space = read_space(source.suite_file)
    space_from = "`tune.space` in suite.yaml"
    if not space:
        # suite.yaml is the latest run's: an untuned run into the same directory replaced it. The study's own
        # record of the ranges is still in tuning.db.
        for directory in source.dirs:
            space = space or read_study_space(Path(directory) / STUDY_DB)
        space_from = f"the study's record in {STUDY_DB}: suite.yaml is of a later run without `tune:`"
    paths = [c for c in trials.columns if c not in (*LEADING_COLUMNS, metric_name, "epochs")]
    for b in blocks:
        paths += [p for p in (b.get("params") or {}) if p not in paths]
    paths += [p for p in space if p not in paths]
    if not space:
        problems.append(f"neither suite.yaml nor {STUDY_DB} records the ranges (`tune.space`): no edge-of-range "
                        "check")
    budget = _first(blocks, "trials", tune.get("trials"))
    cells = _cells(trials, recs, metric_name, direction)
    train = (recs[0].config.get("train") or {}) if recs else {}
    return Study(
        analysis=analysis, metric=measure(metric_name), direction=direction,
        budget=int(budget) if budget is not None else None,
        sampler=str(_first(blocks, "sampler", tune.get("sampler", "?"))),
        sampler_seed=tune.get("seed"), pruner=str(_first(blocks, "pruner", tune.get("pruner", "?"))),
        paths=paths, space=space, cells=cells,
        tuning_seeds=sorted({int(s) for b in blocks for s in (b.get("tuning_seeds") or [])}),
        verdict_seeds=sorted({r.seed for r in recs}),
        data=next((r.data for r in recs if r.data), {}),
        epochs_per_trial=train.get("epochs"), csv_files=files, problems=problems, space_from=space_from,
    )


def _cells(trials: pd.DataFrame, recs: list[CellRecord], metric: str, direction: str) -> list[CellTuning]:
    """One CellTuning per grid cell, in the order of tuning.csv, then of the final cells not in it."""
    finals: dict[str, list[CellRecord]] = {}
    for r in recs:
        if is_tuned(r):
            finals.setdefault(str(r.config["tuned"].get("cell_id", r.label)), []).append(r)
    ids = list(dict.fromkeys([*trials["cell_id"].astype(str), *finals]))
    out = []
    for cell_id in ids:
        rows = trials[trials["cell_id"].astype(str) == cell_id].sort_values("trial").reset_index(drop=True)
        final = sorted(finals.get(cell_id, []), key=lambda r: r.seed)
        label = final[0].label if final else str(rows["cell"].iloc[0])
        loss = final[0].axes.get("loss") if final else None
        tuned = final[0].config["tuned"] if final else None
        if tuned is not None:
            chosen_trial, chosen_value = tuned.get("trial"), tuned.get("value")
            params = dict(tuned.get("params") or {})
        else:
            chosen_trial, chosen_value, params = _best_trial(rows, metric, direction)
        out.append(CellTuning(cell_id, label, str(loss or label.split(" | ")[0]), rows, final,
                              None if chosen_trial is None else int(chosen_trial),
                              None if chosen_value is None else float(chosen_value), params))
    return out


def _best_trial(rows: pd.DataFrame, metric: str, direction: str) -> tuple[int | None, float | None, dict[str, Any]]:
    if metric not in rows:
        return None, None, {}
    values = pd.to_numeric(rows[metric], errors="coerce").where(rows["state"] == "complete")
    if values.notna().sum() == 0:
        return None, None, {}
    best = values.idxmax() if direction == "maximize" else values.idxmin()
    row = rows.loc[best]
    skip = (*LEADING_COLUMNS, metric, "epochs")
    params = {k: _plain(v) for k, v in row.items() if k not in skip and not _missing(v)}
    return int(row["trial"]), float(values[best]), params


# -- checks ----------------------------------------------------------------------------------------------------


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


# -- text ------------------------------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _number(value: Any) -> str:
    """A tuned value as a reader wants it: integers whole, other numbers to 3 significant digits."""
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.3g}"


def _seeds(seeds: Sequence[int]) -> str:
    return ", ".join(str(s) for s in seeds) if seeds else "—"


def _protocol(study: Study) -> str:
    m, data = study.metric, study.data
    n = len(study.cells)
    sampler = f"the {study.sampler} sampler" + (f" (seed {study.sampler_seed})" if study.sampler_seed is not None
                                               else "")
    pruner = ("no pruning (every trial trains all its epochs)" if study.pruner == "none"
              else f"the {study.pruner} pruner (epochs as the resource: a trial reports {m.name} after each epoch "
                   "and stops when it trails)")
    budget = f"{study.budget} trials" if study.budget is not None else "an unrecorded number of trials"
    cells = f"Each of the {n} cells" if n != 1 else "The one cell"
    goal = "maximising" if study.higher else "minimising"
    text = (f"{cells} was tuned on its own with the same budget: {budget} drawn by {sampler}, {pruner}, {goal} "
            f"{m.title} (`{m.name}`).")
    if data:
        text += (f" Trials trained on {int(data.get('train', 0)):,} images and were scored on the "
                 f"{int(data.get('val', 0)):,} images of the validation split; the test split was not read.")
    text += f" Tuning seeds: {_seeds(study.tuning_seeds)}."
    text += (f" Then each cell's chosen configuration was trained anew on the verdict seeds "
             f"{_seeds(study.verdict_seeds)}" + (f" and measured on the {int(data['test']):,} test images"
                                                  if data.get("test") else "")
             + ": the leaderboard, the paired comparisons and every other section rank those final cells.")
    overlap = sorted(set(study.tuning_seeds) & set(study.verdict_seeds))
    if overlap:
        text += (f" **Warning: seed(s) {_seeds(overlap)} served both tuning and the verdict**, so the verdict is "
                 "not measured on fresh training runs.")
    spent = sum(c.epochs for c in study.cells)
    if spent:
        text += f" Tuning cost {spent:,} epochs in all"
        if study.budget and study.epochs_per_trial:
            full = study.budget * int(study.epochs_per_trial) * n
            text += (f", {spent / full:.0%} of the {full:,} that {study.budget} trials × {study.epochs_per_trial} "
                     f"epochs × {n} cells would cost without pruning")
        counts = {s: sum(c.count(s) for c in study.cells) for s in TRIAL_STATES}
        text += "; trials: " + ", ".join(f"{v} {s}" for s, v in counts.items()) + "."
    return text


def _space_table(study: Study) -> list[str]:
    names = short_names([c.label for c in study.cells])
    rows = []
    for path in study.paths:
        users = [c for c in study.cells if path in c.params or (
            path in c.trials and c.trials[path].notna().any())]
        rng = study.space.get(path)
        every = f"all {len(study.cells)}" if len(study.cells) > 1 else "the one cell"
        who = (every if len(users) == len(study.cells)
               else ", ".join(f"`{cell_text(names[c.label])}`" for c in users) or "none")
        rows.append([f"`{path}`", cell_text(rng.describe()) if rng else "— (not in suite.yaml)", who])
    return table(["parameter", "range", "cells that tune it"], rows, ["l", "l", "l"])


def _best_table(study: Study, warnings: list[EdgeWarning]) -> list[str]:
    m = study.metric
    flagged = {(w.label, w.path) for w in warnings}
    rows = []
    for cell in study.cells:
        values = []
        for path in study.paths:
            if path not in cell.params:
                values.append("—")
            else:
                values.append(_number(cell.params[path]) + (" ⚠" if (cell.label, path) in flagged else ""))
        trials = f"{cell.count('complete')}/{cell.count('pruned')}/{cell.count('failed')}"
        chosen = "—" if cell.chosen_trial is None else str(cell.chosen_trial)
        rows.append([cell_text(cell.label), *values, m.show(cell.chosen_value), chosen, trials, f"{cell.epochs:,}",
                     "yes" if cell.final else "not yet"])
    headers = ["cell", *[f"`{p}`" for p in study.paths], f"best {m.heading}", "trial",
               "complete/pruned/failed", "epochs", "verdict trained"]
    return table(headers, rows, ["l", *["r"] * (len(study.paths) + 4), "l"])


def _rise_text(study: Study) -> list[str]:
    rises = {c.label: study.rise(c) for c in study.cells}
    if study.budget is None:
        return ["The budget per cell is not recorded, so whether the curves still improve is not judged."]
    # A minimised metric's best-so-far curve falls as it improves: say so rather than "rising".
    moving = "rising" if study.higher else "falling"
    window = max(2, math.ceil(RISE_WINDOW * study.budget))
    unit = f" {study.metric.diff_unit}" if study.metric.diff_unit else ""
    resolution = (f" and by more than one validation image ({study.metric.show(study.resolution)}{unit})"
                  if study.resolution else "")
    rule = (f"A curve is *still {moving}* when the best {study.metric.title} of its last {window} trials "
            f"(trials {study.budget - window}–{study.budget - 1}) beats the best before them by more than "
            f"{RISE_SHARE:.0%} of the curve's whole gain (final best − first trial){resolution}.")
    rising = [label for label, r in rises.items() if r.status == "rising"]
    unjudged = [label for label, r in rises.items() if r.status == "unjudged"]
    lines = [rule, ""]
    if rising:
        names = short_names([c.label for c in study.cells])
        sign = 1.0 if study.higher else -1.0
        detail = "; ".join(f"`{cell_text(names[lbl])}` {study.metric.show(sign * rises[lbl].before)} → "
                           f"{study.metric.show(sign * rises[lbl].end)}" for lbl in rising)
        lines.append(f"⚠ **The budget was too small**: {len(rising)} of {len(rises)} curves "
                     f"{'was' if len(rising) == 1 else 'were'} still {moving} at the last trial ({detail}). "
                     + ("Its best configuration is" if len(rising) == 1 else "Their best configurations are")
                     + " likely not the best possible; rerun with a larger `tune.trials`.")
    else:
        lines.append(f"No curve was still {moving} at its last trial: {study.budget} trials per cell were enough "
                     "by this rule" + (f" ({len(unjudged)} not judged: too few complete trials)." if unjudged
                                       else "."))
    return lines


def _ranking_change(study: Study, analyses: Sequence[SourceAnalysis]) -> list[str]:
    """Rank untuned → rank tuned over the cells both sources hold, when an untuned source of the same dataset
    shares cell labels with this one."""
    tuned = study.analysis
    labels = set(tuned.ranked()["label"])
    candidates = [a for a in analyses if not a.source.tuned and a.source.dataset == tuned.source.dataset]
    best = max(candidates, key=lambda a: len(labels & set(a.ranked()["label"])), default=None)
    if best is None:
        return []
    common = labels & set(best.ranked()["label"])
    if len(common) < 2:
        return []
    m = tuned.metric
    before = best.ranked()[best.ranked()["label"].isin(common)].reset_index(drop=True)
    after = tuned.ranked()[tuned.ranked()["label"].isin(common)].reset_index(drop=True)
    rank_before = {lbl: i + 1 for i, lbl in enumerate(before["label"])}
    mean_before = dict(zip(before["label"], before[f"{m.name}_mean"]))
    rows = []
    for i, (label, mean) in enumerate(zip(after["label"], after[f"{m.name}_mean"])):
        r0, r1 = rank_before[label], i + 1
        move = "=" if r0 == r1 else (f"↑ {r0 - r1}" if r1 < r0 else f"↓ {r1 - r0}")
        rows.append([cell_text(label), f"{r0} → {r1}", move, m.show(mean_before[label]), m.show(mean)])
    moved = sum(rank_before[lbl] != i + 1 for i, lbl in enumerate(after["label"]))
    head = (f"How tuning changed the ranking: the untuned cells of **{best.source.name}** (one shared recipe) "
            f"against the tuned cells, ranked by mean {m.heading} among the {len(common)} cells both hold; "
            f"{moved} of them changed rank.")
    return [head, "", *table(["cell", "rank untuned → tuned", "change", f"untuned {m.heading}",
                                f"tuned {m.heading}"], rows, ["l", "r", "r", "r", "r"])]


def as_dict(study: Study) -> dict[str, Any]:
    """The tuning of a source as plain JSON values (report.json): protocol, ranges, per-cell choices and verdicts,
    edge-of-range warnings. Metric values in stored units (fractions for accuracies)."""
    def plain(value: Any) -> Any:
        value = _plain(value)
        return None if isinstance(value, float) and not math.isfinite(value) else value

    space = {path: ({"choices": [plain(c) for c in r.choices]} if r.choices is not None
                    else {"low": r.low, "high": r.high, "log": r.log}) for path, r in study.space.items()}
    cells = [{"label": c.label, "cell_id": c.cell_id, "chosen_trial": c.chosen_trial, "value": plain(c.chosen_value),
              "params": {k: plain(v) for k, v in c.params.items()}, "complete": c.count("complete"),
              "pruned": c.count("pruned"), "failed": c.count("failed"), "epochs": c.epochs,
              "curve": study.rise(c).status, "verdict_trained": bool(c.final)} for c in study.cells]
    warnings = [{"path": w.path, "label": w.label, "value": plain(w.value), "side": w.side, "message": w.sentence()}
                for w in edge_warnings(study)]
    return {"metric": study.metric.name, "direction": study.direction, "trials_per_cell": study.budget,
            "sampler": study.sampler, "sampler_seed": study.sampler_seed, "pruner": study.pruner,
            "tuning_seeds": study.tuning_seeds, "verdict_seeds": study.verdict_seeds, "space": space,
            "cells": cells, "edge_warnings": warnings, "problems": study.problems}


def caveat(study: Study) -> str | None:
    """One line for under the report's headline when the search may have missed a cell's best configuration
    (a chosen value at the edge of its range, or a curve still improving at the last trial); None otherwise."""
    names = short_names([c.label for c in study.cells])
    edges: dict[str, list[str]] = {}
    for w in edge_warnings(study):
        edges.setdefault(w.name, []).append(w.path)
    rising = [names[c.label] for c in study.cells if study.rise(c).status == "rising"]
    parts = []
    if edges:
        count = sum(len(v) for v in edges.values())
        lie = "values lie at the edge of their range" if count != 1 else "value lies at the edge of its range"
        parts.append(f"{count} chosen {lie} ("
                     + "; ".join(f"`{cell_text(n)}`: {', '.join(paths)}" for n, paths in edges.items()) + ")")
    if rising:
        parts.append(f"{len(rising)} cell{'s were' if len(rising) != 1 else ' was'} still improving at the last "
                     f"trial (" + ", ".join(f"`{cell_text(n)}`" for n in rising) + ")")
    if not parts:
        return None
    return (f"> ⚠ **Tuning may have missed better settings:** {' and '.join(parts)}; these cells may rank higher "
            "with a wider range or more trials (see Tuning).")


def section(study: Study, analyses: Sequence[SourceAnalysis], plots: Sequence[Plot]) -> list[str]:
    """The lines of the Tuning section (without its heading)."""
    warnings = edge_warnings(study)
    lines = [_protocol(study), ""]
    if warnings:
        lines += [f"**Edge of the range** — a chosen value in the outer {EDGE_SHARE:.0%} of its range (on the log "
                  "scale where the range is `log: true`) suggests the best value lies outside it:", ""]
        lines += [f"- ⚠ {w.sentence()}." for w in warnings] + [""]
    elif study.space:
        lines += [f"No chosen value lies in the outer {EDGE_SHARE:.0%} of its range (categorical choices are not "
                  "checked).", ""]
    lines += [f"**Search space** (from {study.space_from}):", "", *_space_table(study), ""]
    lines += [f"**Chosen values per cell** — the best complete trial of each cell by {study.metric.title}; "
              "— marks a parameter that does not apply to the cell; ⚠ a value at the edge of its range; epochs "
              "counts every epoch its trials trained, pruned ones included.", "", *_best_table(study, warnings), ""]
    lines += ["**Budget**", "", *_rise_text(study), ""]
    change = _ranking_change(study, analyses)
    if change:
        lines += ["**Ranking before and after tuning**", "", *change, ""]
    for p in plots:
        lines += [f"![{p.title}]({p.path})", "", f"*{p.caption}*", ""]
    if study.problems:
        lines += [*[f"- {p}" for p in study.problems], ""]
    return lines[:-1] if lines and lines[-1] == "" else lines
