"""The report's "Adaptive seeding" section: the rule a suite ran under, the seeds each cell received, and which
cells reached the target and which hit max — recomputed from the cell files with the rule itself, so it says
what the run decided (or would decide next, for a run that was stopped between rounds)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from lossbench.analysis.adaptive_seeds import PointDecision, decide, describe_rule
from lossbench.analysis.measures import measure
from lossbench.analysis.stats import stopping_confidence
from lossbench.config.schema import AdaptiveSeeds
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


def adaptive_rule(suite_file: dict[str, Any]) -> AdaptiveSeeds | None:
    """The adaptive-seeding rule of a results directory's suite.yaml; None for a plain seed list (or none)."""
    seeds = suite_file.get("seeds")
    if not isinstance(seeds, dict):
        return None
    try:
        return AdaptiveSeeds.model_validate(seeds)
    except ValidationError:
        return None


def decisions(a: SourceAnalysis, rule: AdaptiveSeeds) -> dict[str, PointDecision]:
    """The rule's decision for every grid point of the source, from its per-seed values of the target metric."""
    from lossbench.analysis.baseline import point_baselines
    from lossbench.seed_rounds import seed_rule

    metric = rule.target.metric
    values: dict[str, dict[int, float | None]] = {label: {} for label in a.summary["label"]}
    for _, row in a.rows.iterrows():
        value = row.get(metric)
        finite = row["status"] == "done" and value is not None and not math.isnan(float(value))
        values[row["label"]][int(row["seed"])] = float(value) if finite else None
    try:
        baselines = point_baselines(a.summary, a.axes, rule.baseline)
    except ConfigError:
        baselines = {label: None for label in values}
    return decide(values, baselines, seed_rule(rule))


def section(a: SourceAnalysis, rule: AdaptiveSeeds) -> list[str]:
    """Markdown lines of the section."""
    m = measure(rule.target.metric)
    unit = f" {m.diff_unit}" if m.diff_unit else ""
    # The rule's interval covers 95% where it stops because it uses a larger t quantile than a plain 95% interval.
    level = f"{stopping_confidence(rule.min) * 100:g}%"
    heading = f"half-width, t at {level}" + (f" ({m.diff_unit})" if m.diff_unit else "")
    found = decisions(a, rule)
    lines = [describe_rule(rule.min, rule.max, f"{rule.target.half_width:g}{unit}", m.title), ""]
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
