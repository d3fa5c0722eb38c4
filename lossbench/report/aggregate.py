"""From per-seed rows to what a reader compares: per-cell summaries, the ranking, pivot tables, paired
comparisons with a baseline cell and main effects of each grid axis. One `SourceAnalysis` per source.

Every statistic is computed over seeds of `done` cells only (diverged and failed seeds have no metrics); how many
seeds each number rests on is kept next to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lossbench.analysis.baseline import DEFAULT_BASELINE, choose_baselines, closest_label, normalize_label
from lossbench.analysis.measures import Measure, measure
from lossbench.analysis.stats import PairedTest, holm, holm_confidences, paired_t, t_interval, verdict
from lossbench.errors import ReportError, did_you_mean
from lossbench.report.results import Results, Source

#: The axis every pivot table puts in its rows.
ROW_AXIS = "loss"
#: A cell whose mean test accuracy is at most this far above chance (1 / classes) learned nothing usable: it is
#: flagged, and left out of the best cell and the main effects (as a fraction: 0.02 is 2 percentage points).
CHANCE_MARGIN = 0.02


@dataclass
class Comparison:
    """One cell against its baseline, paired on seed; `p_holm` is adjusted over the source's comparisons."""

    label: str
    baseline: str
    test: PairedTest
    p_holm: float | None
    verdict: str
    #: The same paired test with its interval at the Holm-consistent level `confidence` (stats.holm_confidences):
    #: it excludes 0 exactly when the verdict says better or worse. None when untested.
    adjusted: PairedTest | None = None
    confidence: float | None = None


@dataclass
class Effect:
    """Main effect of one level of an axis: the mean of its cells' means (averaging over the other axes), `delta`
    = that mean − the reference level's, and `diff`, the paired test of the two levels over the seeds on which
    every cell involved is done (None for the reference level itself)."""

    axis: str
    level: str
    cells: int
    mean: float
    reference: str
    delta: float
    diff: PairedTest | None


@dataclass
class Pivot:
    """Mean of the metric over the cells at each (row level, column level), averaged over the remaining axes."""

    rows: str
    columns: str
    table: pd.DataFrame


@dataclass
class SourceAnalysis:
    """Everything the report says about one source."""

    source: Source
    metric: Measure
    #: One row per grid point (label), ranked: rank (NaN when no seed is done), label, axes, n_seeds, n_done,
    #: n_diverged, n_failed, seeds, and <metric>_mean/_std/_ci_low/_ci_high for every metric.
    summary: pd.DataFrame
    #: The per-seed rows of diverged and failed seeds.
    unranked: pd.DataFrame
    #: The source's per-seed rows (all statuses).
    rows: pd.DataFrame
    axes: list[str]
    levels: dict[str, list[str]]
    baseline: str | None
    baseline_note: str | None
    comparisons: list[Comparison] = field(default_factory=list)
    pivots: list[Pivot] = field(default_factory=list)
    effects: dict[str, list[Effect]] = field(default_factory=dict)

    @property
    def max_seeds(self) -> int:
        """The most done seeds any cell has (1 means no interval anywhere)."""
        return int(self.summary["n_done"].max()) if len(self.summary) else 0

    def ranked(self) -> pd.DataFrame:
        return self.summary[self.summary["rank"].notna()]

    def at_chance(self) -> list[str]:
        """Labels of the ranked cells whose mean test accuracy is within CHANCE_MARGIN of chance, in rank order."""
        ranked = self.ranked()
        return list(ranked.loc[ranked["at_chance"], "label"]) if "at_chance" in ranked else []

    def best(self) -> pd.Series | None:
        """The best ranked cell that is not at chance (None when every ranked cell is)."""
        ranked = self.ranked()
        if "at_chance" in ranked:
            ranked = ranked[~ranked["at_chance"].astype(bool)]
        return None if ranked.empty else ranked.iloc[0]

    @property
    def chance(self) -> float | None:
        """Chance accuracy, 1 / classes, when every cell of the source has the same known number of classes."""
        classes = self.rows["classes"].dropna().unique() if "classes" in self.rows else []
        return 1.0 / float(classes[0]) if len(classes) == 1 and classes[0] > 0 else None


def analyse(results: Results, metric: str = "test_acc", baseline: str | None = None) -> list[SourceAnalysis]:
    """Analyse every source of `results` on `metric` against `baseline` (a cell label; default: the
    cross_entropy | none | none cell of each combination of the other axes, else the best cell)."""
    if metric not in results.metrics and not (results.frame["status"] == "done").any():
        # No cell finished (every one diverged or failed): still report them, with nothing to rank.
        results.frame[metric] = np.nan
        results.metrics.append(metric)
    if metric not in results.metrics:
        # `acc` is too short for a close match to `test_acc`: a metric that contains it is the next best guess.
        containing = sorted((m for m in results.metrics if metric and metric in m), key=lambda m: (
            not m.startswith("test_"), len(m)))
        raise ReportError(message=f"no cell has the metric '{metric}'", value=metric, allowed=results.metrics,
                          suggestion=did_you_mean(metric, results.metrics) or next(iter(containing), None))
    if baseline is not None:
        wanted = normalize_label(baseline)
        labels = list(dict.fromkeys(results.frame["label"]))
        if wanted not in {normalize_label(x) for x in labels}:
            raise ReportError(message=f"no cell is labelled '{baseline}'", value=baseline, allowed=labels,
                              suggestion=closest_label(wanted, labels))
    return [_analyse_source(results, src, measure(metric), baseline) for src in results.sources]


def _levels(rows: pd.DataFrame, axes: list[str]) -> dict[str, list[str]]:
    ordered = rows.sort_values("order")
    return {a: list(dict.fromkeys(ordered[a])) for a in axes}


def summarize(rows: pd.DataFrame, axes: list[str], metrics: list[str], metric: Measure) -> pd.DataFrame:
    """One row per label: seed counts and mean, std and t interval of every metric over the done seeds, ranked by
    `metric` (best first; cells with no done seed last, unranked)."""
    out = []
    for label, group in rows.sort_values("order").groupby("label", sort=False):
        done = group[group["status"] == "done"]
        row: dict[str, object] = {"label": label, **{a: group[a].iloc[0] for a in axes}}
        row.update(n_seeds=len(group), n_done=len(done), n_diverged=int((group["status"] == "diverged").sum()),
                   n_failed=int((group["status"] == "failed").sum()),
                   seeds=",".join(str(s) for s in sorted(group["seed"])), first=int(group["order"].min()))
        for m in metrics:
            values = done[m].dropna().to_numpy(dtype=float)
            iv = t_interval(values)
            row.update({f"{m}_mean": iv.mean, f"{m}_std": iv.std, f"{m}_ci_low": iv.low, f"{m}_ci_high": iv.high,
                        f"{m}_n": iv.n})
        out.append(row)
    table = pd.DataFrame(out)
    key = table[f"{metric.name}_mean"]
    ascending = metric.higher_is_better is False
    table = table.assign(_key=key).sort_values(["_key", "first"], ascending=[ascending, True], na_position="last")
    table = table.drop(columns=["_key", "first"]).reset_index(drop=True)
    rankable = table[f"{metric.name}_mean"].notna()
    table.insert(0, "rank", np.where(rankable, np.cumsum(rankable), np.nan))
    return table


def compare(rows: pd.DataFrame, mapping: dict[str, str], metric: Measure, order: list[str]) -> list[Comparison]:
    """Paired t-test of each cell against its baseline over the seeds both have done; Holm over the family."""
    done = rows[rows["status"] == "done"].dropna(subset=[metric.name])
    by_label = {label: g.set_index("seed")[metric.name] for label, g in done.groupby("label")}
    empty = pd.Series(dtype=float)
    tests = []
    for label in order:
        base = mapping.get(label)
        if base is None or base == label:
            continue
        a, b = by_label.get(label, empty), by_label.get(base, empty)
        seeds = sorted(set(a.index) & set(b.index))
        tests.append((label, base, a.loc[seeds].to_numpy(), b.loc[seeds].to_numpy()))
    tests = [(label, base, x, y, paired_t(x, y)) for label, base, x, y in tests]
    adjusted = holm([t.p for *_, t in tests])
    levels = holm_confidences([t.p for *_, t in tests])
    higher = metric.higher_is_better is not False
    return [Comparison(label, base, t, p, verdict(t, p, higher),
                       None if level is None else paired_t(x, y, confidence=level), level)
            for (label, base, x, y, t), p, level in zip(tests, adjusted, levels)]


def pivots(summary: pd.DataFrame, levels: dict[str, list[str]], metric: Measure) -> list[Pivot]:
    """Loss × each other axis with at least two levels: mean of the cell means at each pair of levels."""
    if ROW_AXIS not in levels:
        return []
    col = f"{metric.name}_mean"
    out = []
    for axis, axis_levels in levels.items():
        if axis == ROW_AXIS or len(axis_levels) < 2:
            continue
        table = summary.pivot_table(index=ROW_AXIS, columns=axis, values=col, aggfunc="mean", dropna=False)
        table = table.reindex(index=levels[ROW_AXIS], columns=axis_levels)
        out.append(Pivot(ROW_AXIS, axis, table))
    return out


def main_effects(rows: pd.DataFrame, summary: pd.DataFrame, levels: dict[str, list[str]], metric: Measure,
                 reference: dict[str, str]) -> dict[str, list[Effect]]:
    """For each axis with at least two levels, each level's mean over its cells (each cell weighted equally,
    whatever the other axes) and its difference from the reference level, paired over seeds."""
    col = f"{metric.name}_mean"
    done = rows[rows["status"] == "done"].dropna(subset=[metric.name])
    per_seed = done.pivot_table(index="label", columns="seed", values=metric.name, aggfunc="mean")
    effects: dict[str, list[Effect]] = {}
    for axis, axis_levels in levels.items():
        if len(axis_levels) < 2:
            continue
        ref = reference.get(axis, axis_levels[0])
        ref = ref if ref in axis_levels else axis_levels[0]
        cells = {lv: list(summary.loc[summary[axis] == lv, "label"]) for lv in axis_levels}
        means = {lv: summary.loc[summary[axis] == lv, col].dropna() for lv in axis_levels}
        level_mean = {lv: float(v.mean()) if v.size else math.nan for lv, v in means.items()}
        effects[axis] = [
            Effect(axis, lv, int(means[lv].size), level_mean[lv], ref, level_mean[lv] - level_mean[ref],
                   None if lv == ref else _paired_marginal(per_seed, cells[lv], cells[ref]))
            for lv in axis_levels
        ]
    return effects


def _paired_marginal(per_seed: pd.DataFrame, level_cells: list[str], ref_cells: list[str]) -> PairedTest:
    """Per seed, the mean over a level's cells minus the mean over the reference level's cells; only seeds on
    which every one of those cells is done enter, so each seed averages over the same grid points."""
    if not level_cells or not ref_cells:
        return PairedTest(0, math.nan, None, None, None, None, "no cell of the level is above chance")
    wanted = level_cells + ref_cells
    missing = [c for c in wanted if c not in per_seed.index]
    if missing:
        return PairedTest(0, math.nan, None, None, None, None,
                          f"{len(missing)} cell(s) of these levels have no finished seed")
    block = per_seed.loc[wanted].dropna(axis=1)
    a = block.loc[level_cells].mean(axis=0).to_numpy()
    b = block.loc[ref_cells].mean(axis=0).to_numpy()
    return paired_t(a, b)


def _analyse_source(results: Results, source: Source, metric: Measure, baseline: str | None) -> SourceAnalysis:
    rows = results.frame[results.frame["source"] == source.name]
    axes = list(results.axes)
    levels = _levels(rows, axes)
    summary = summarize(rows, axes, results.metrics, metric)
    seeds = source.suite_file.get("seeds")
    if baseline is None and isinstance(seeds, dict) and seeds.get("baseline"):
        baseline = str(seeds["baseline"])  # adaptive seeding paired every cell with this one
    summary["at_chance"] = _at_chance(rows, summary)
    mapping, shown, note = choose_baselines(summary, axes, baseline)
    comparisons = compare(rows, mapping, metric, list(summary["label"]))
    # Main effects are read against the baseline's level of each axis (the first level where it has none).
    reference = dict(DEFAULT_BASELINE)
    if shown is not None:
        base_row = summary[summary["label"] == shown].iloc[0]
        reference = {a: str(base_row[a]) for a in axes}
    unranked = rows[rows["status"] != "done"].sort_values(["order"])
    return SourceAnalysis(
        source=source, metric=metric, summary=summary, unranked=unranked, rows=rows, axes=axes, levels=levels,
        baseline=shown, baseline_note=note, comparisons=comparisons, pivots=pivots(summary, levels, metric),
        effects=main_effects(rows, summary[~summary["at_chance"]], levels, metric, reference),
    )


def _at_chance(rows: pd.DataFrame, summary: pd.DataFrame) -> pd.Series:
    """Per summary row, whether the cell's mean test accuracy is at most CHANCE_MARGIN above 1 / its classes."""
    if "test_acc_mean" not in summary or "classes" not in rows:
        return pd.Series(False, index=summary.index)
    classes = rows.groupby("label")["classes"].max()
    chance = 1.0 / summary["label"].map(classes)
    return (summary["test_acc_mean"] <= chance + CHANCE_MARGIN).fillna(False).astype(bool)
