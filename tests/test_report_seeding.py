"""The report reads a results directory's adaptive seeding from its suite.yaml as the run wrote it (resolved), and
leaves out a `seeds` block no run writes."""

from __future__ import annotations

import math
from typing import Any

import pytest

from lossbench.analysis.adaptive_seeds import AdaptiveSeeding, SeedRule
from lossbench.report.seeding import adaptive_rule

WRITTEN = {"min": 2, "max": 5, "target": {"metric": "test_acc", "half_width": 1.0}, "baseline": None}


def _with(**changes: Any) -> dict[str, Any]:
    seeds = {**WRITTEN, "target": dict(WRITTEN["target"])}
    for key, value in changes.items():
        if key in ("metric", "half_width"):
            seeds["target"][key] = value
        else:
            seeds[key] = value
    return seeds


def test_the_written_block_reads_as_plain_values() -> None:
    assert adaptive_rule({"seeds": WRITTEN}) == AdaptiveSeeding(2, 5, "test_acc", 1.0, None)
    named = adaptive_rule({"seeds": _with(baseline="a | b | c", metric="val_nll", half_width=2)})
    assert named == AdaptiveSeeding(2, 5, "val_nll", 2.0, "a | b | c")


def test_the_target_is_held_in_stored_units() -> None:
    # Accuracies are stored as fractions and shown in percent: ±1 percentage point is ±0.01.
    assert AdaptiveSeeding(2, 5, "test_acc", 1.0).rule == SeedRule(2, 5, 0.01)
    assert SeedRule.for_target(3, 4, "val_nll", 0.5) == SeedRule(3, 4, 0.5)


@pytest.mark.parametrize("seeds", [
    [0, 1], None, {}, _with(min=1), _with(min=3, max=2), _with(min=2.0), _with(max=True), _with(half_width=0),
    _with(half_width=math.inf), _with(half_width=math.nan), _with(half_width="1"), _with(metric=3),
    _with(baseline=5), {**WRITTEN, "extra": 1}, {k: v for k, v in WRITTEN.items() if k != "baseline"},
    {**WRITTEN, "target": {"half_width": 1.0}}, {**WRITTEN, "target": 1.0},
])
def test_a_block_no_run_writes_is_left_out(seeds: Any) -> None:
    assert adaptive_rule({"seeds": seeds}) is None
