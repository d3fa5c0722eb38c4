"""The report's "Adaptive seeding" section: the rule a suite ran under, the seeds each cell received, and which
cells reached the target and which hit max — recomputed from the cell files with the rule itself, so it says
what the run decided (or would decide next, for a run that was stopped between rounds)."""

from __future__ import annotations

import math
from typing import Any

from lossbench.analysis.adaptive_seeds import AdaptiveSeeding, PointDecision, decide, describe_rule
from lossbench.analysis.baseline import point_baselines
from lossbench.analysis.measures import measure
from lossbench.analysis.stats import stopping_confidence
from lossbench.errors import ConfigError
from lossbench.report.aggregate import SourceAnalysis
from lossbench.report.markdown_table import cell_text, table

_STATE_TEXT = {
    "reached": "reached the target",
    "max": "hit max",
    "running": "not settled: rerun the suite to continue its rounds",
    "baseline": "baseline (runs every seed its cells run)",
    "no_baseline": "no baseline to compare with: min seeds",
}
_SEEDS_KEYS = {"min", "max", "target", "baseline"}
_TARGET_KEYS = {"metric", "half_width"}


def adaptive_rule(suite_file: dict[str, Any]) -> AdaptiveSeeding | None:
    """The adaptive seeding of a results directory's suite.yaml; None for a plain seed list, none, or a `seeds`
    block no run writes. The run writes the suite resolved, so every key of `seeds` and `seeds.target` is there."""
    seeds = suite_file.get("seeds")
    target = seeds.get("target") if isinstance(seeds, dict) else None
    if not isinstance(target, dict) or set(seeds) != _SEEDS_KEYS or set(target) != _TARGET_KEYS:
        return None
    low, high, metric, half_width, baseline = (seeds["min"], seeds["max"], target["metric"], target["half_width"],
                                               seeds["baseline"])
    if not (_whole(low) and _whole(high) and isinstance(metric, str) and (baseline is None or isinstance(baseline, str))
            and isinstance(half_width, (int, float)) and not isinstance(half_width, bool)):
        return None
    if not (2 <= low <= high and 0 < half_width < math.inf):
        return None
    return AdaptiveSeeding(low, high, metric, float(half_width), baseline)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decisions(a: SourceAnalysis, rule: AdaptiveSeeding) -> dict[str, PointDecision]:
    """The rule's decision for every grid point of the source, from its per-seed values of the target metric."""
    metric = rule.metric
    values: dict[str, dict[int, float | None]] = {label: {} for label in a.summary["label"]}
    for _, row in a.rows.iterrows():
        value = row.get(metric)
        finite = row["status"] == "done" and value is not None and not math.isnan(float(value))
        values[row["label"]][int(row["seed"])] = float(value) if finite else None
    try:
        baselines = point_baselines(a.summary, a.axes, rule.baseline)
    except ConfigError:
        baselines = {label: None for label in values}
    return decide(values, baselines, rule.rule)


def section(a: SourceAnalysis, rule: AdaptiveSeeding) -> list[str]:
    """Markdown lines of the section."""
    m = measure(rule.metric)
    unit = f" {m.diff_unit}" if m.diff_unit else ""
    # The rule's interval covers 95% where it stops because it uses a larger t quantile than a plain 95% interval.
    level = f"{stopping_confidence(rule.min_seeds) * 100:g}%"
    heading = f"half-width, t at {level}" + (f" ({m.diff_unit})" if m.diff_unit else "")
    found = decisions(a, rule)
    lines = [describe_rule(rule.min_seeds, rule.max_seeds, f"{rule.half_width:g}{unit}", m.title), ""]
    received = {label: len(g) for label, g in a.rows.groupby("label")}
    rows = []
    for label in a.summary["label"]:
        d = found[label]
        half = "—" if d.half_width is None else f"±{m.show(d.half_width)}"
        pairs = "" if d.test is None else str(d.test.n)
        rows.append([cell_text(label), received.get(label, 0), d.seeds, pairs, half, _STATE_TEXT[d.state]])
    lines += table(["cell", "seeds run", "seeds the rule asks for", "pairs", heading, "state"],
                   rows, ["l", "r", "r", "r", "r", "l"])
    counts = {state: sum(d.state == state for d in found.values()) for state in ("reached", "max", "running")}
    lines += ["", f"{counts['reached']} cell(s) reached the target, {counts['max']} hit max"
              + (f", {counts['running']} are not settled" if counts["running"] else "") + ". Pairs: the seeds "
              "finished in both the cell and its baseline, on which the interval rests; the paired comparison "
              "below uses the same seeds."]
    return lines
