"""Adaptive seeding: how many seeds each grid point needs before its comparison with the baseline is precise.

The rule (a fixed-width sequential confidence interval in the manner of Chow & Robbins, 1965, "On the
asymptotic theory of fixed-width sequential confidence intervals for the mean", Ann. Math. Statist. 36(2)):

- every grid point runs seeds 0 … min−1;
- a point keeps getting the next seed number while the paired t-interval of its difference from its baseline
  (over the seeds both finished) is wider than ± the target half-width and it has fewer than max seeds; it stops
  for good at the first n ≥ min where the interval is narrow enough;
- the baseline runs every seed any of its cells runs, so every comparison stays paired.

The interval is a 95% interval *at stopping*: because the rule looks at every n and stops where the seeds happen
to agree, a plain 95% t-interval would then hold the true difference only 88–92% of the time. It takes the
larger t quantile of `analysis.stats.stopping_confidence(min)` (the 98.5% level's at min 2, 98% at min 3, 97.5%
at min 5), calibrated by simulation so that the interval where the rule stops covers at least 95% whatever the
noise; the price is more seeds before a point reaches the target (docs/adaptive-seeds.md gives both).

Stopping looks only at the interval's *width* (the seed-to-seed spread and n), never at the p-value or at the
sign of the difference, so it does not hunt for significance. A difference that is the same on every seed has
no measured spread; that is not taken as precision, and such a point goes on to max.

`decide` is a pure function of the values seen so far: the run calls it after every round, and a rerun calls it
on the result files, so it continues exactly where the rounds stopped. The report calls it too, to say which
cells reached the target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from lossbench.analysis.measures import measure
from lossbench.analysis.stats import PairedTest, paired_t, stopping_confidence

#: reached: the interval is within the target; max: max seeds without reaching it; running: seeds of the
#: current round are not all finished yet; baseline: a reference cell (runs what its cells run);
#: no_baseline: nothing to compare with, so only min seeds.
State = Literal["reached", "max", "running", "baseline", "no_baseline"]

#: Per grid point, the value of the target metric on each finished seed; None where a seed finished without
#: one (diverged, failed in this run, metric not recorded). A seed that is absent has not run yet.
SeedValues = Mapping[str, Mapping[int, float | None]]


@dataclass(frozen=True)
class SeedRule:
    """Seeds 0 … min−1 for every point, at most `max_seeds`, until the paired interval's half-width is at most
    `half_width` (in the metric's stored unit: a fraction for accuracies, so 0.005 is 0.5 percentage points)."""

    min_seeds: int
    max_seeds: int
    half_width: float

    def __post_init__(self) -> None:
        if not 2 <= self.min_seeds <= self.max_seeds:
            raise ValueError(f"need 2 <= min_seeds <= max_seeds, got {self.min_seeds} and {self.max_seeds}")
        if not self.half_width > 0:
            raise ValueError(f"half_width must be positive, got {self.half_width}")

    @classmethod
    def for_target(cls, min_seeds: int, max_seeds: int, metric: str, half_width: float) -> SeedRule:
        """The rule for a target `half_width` given in `metric`'s display unit (percentage points for accuracies),
        which the rule holds in the metric's stored unit."""
        return cls(min_seeds, max_seeds, half_width / measure(metric).scale)

    @property
    def confidence(self) -> float:
        """Two-sided level of the rule's paired t-interval: larger than 0.95 so that the interval where the rule
        stops covers the true difference at least 95% of the time (analysis.stats.stopping_confidence)."""
        return stopping_confidence(self.min_seeds)


@dataclass(frozen=True)
class AdaptiveSeeding:
    """A suite's adaptive seeding, `seeds: {min, max, target: {metric, half_width}, baseline}`, as plain values:
    `half_width` in `metric`'s display unit; `baseline` the label of the cell every other is compared with (None:
    the default choice, analysis.baseline)."""

    min_seeds: int
    max_seeds: int
    metric: str
    half_width: float
    baseline: str | None = None

    @property
    def rule(self) -> SeedRule:
        """The stopping rule, its target in the metric's stored unit."""
        return SeedRule.for_target(self.min_seeds, self.max_seeds, self.metric, self.half_width)


@dataclass(frozen=True)
class PointDecision:
    """What the rule says about one grid point now: it needs seeds 0 … seeds−1."""

    label: str
    baseline: str | None
    seeds: int
    state: State
    #: The paired comparison with the baseline over the seeds the decision rests on (None for a baseline).
    test: PairedTest | None = None

    @property
    def half_width(self) -> float | None:
        """Half-width of the paired interval, stored units; None where there is none (fewer than two pairs)."""
        if self.test is None or self.test.low is None or self.test.high is None:
            return None
        return (self.test.high - self.test.low) / 2


def interval_reached(test: PairedTest, half_width: float) -> bool:
    """Whether a paired comparison's interval is within ± half_width. An untested comparison (fewer than two
    pairs, or the same difference on every seed, hence no measured spread) has not reached any target."""
    return test.tested and test.low is not None and test.high is not None and (test.high - test.low) / 2 <= half_width


def _paired(values: Mapping[int, float | None], base: Mapping[int, float | None], n: int,
            rule: SeedRule) -> PairedTest:
    pairs = [s for s in range(n) if values.get(s) is not None and base.get(s) is not None]
    return paired_t([values[s] for s in pairs], [base[s] for s in pairs], rule.confidence)  # type: ignore[misc]


def _finished(values: Mapping[int, float | None], n: int) -> bool:
    return all(s in values for s in range(n))


def decide_point(label: str, baseline: str, values: Mapping[int, float | None], base: Mapping[int, float | None],
                 rule: SeedRule) -> PointDecision:
    """The seeds one point needs, replaying the rounds: from n = min, one more seed while every seed so far has
    finished in both cells, the interval is wider than the target and n < max."""
    n = rule.min_seeds
    while True:
        if not (_finished(values, n) and _finished(base, n)):
            return PointDecision(label, baseline, n, "running", _paired(values, base, n, rule))
        test = _paired(values, base, n, rule)
        if interval_reached(test, rule.half_width):
            return PointDecision(label, baseline, n, "reached", test)
        if n >= rule.max_seeds:
            return PointDecision(label, baseline, n, "max", test)
        n += 1


def decide(values: SeedValues, baselines: Mapping[str, str | None], rule: SeedRule) -> dict[str, PointDecision]:
    """The decision for every point of `baselines` (point → its baseline point; a baseline maps to itself,
    a point with nothing to compare with to None). `values` holds what has finished so far."""
    empty: dict[int, float | None] = {}
    decisions: dict[str, PointDecision] = {}
    needed_by_baseline: dict[str, int] = {}
    for label, base in baselines.items():
        if base is None:
            decisions[label] = PointDecision(label, None, rule.min_seeds, "no_baseline")
        elif base != label:
            d = decide_point(label, base, values.get(label, empty), values.get(base, empty), rule)
            decisions[label] = d
            needed_by_baseline[base] = max(needed_by_baseline.get(base, rule.min_seeds), d.seeds)
    for label, base in baselines.items():
        if base == label:
            decisions[label] = PointDecision(label, None, needed_by_baseline.get(label, rule.min_seeds), "baseline")
    return decisions


def settled(decisions: Mapping[str, PointDecision], values: SeedValues) -> bool:
    """True when no point needs a seed that has not finished: the rounds are over."""
    return all(_finished(values.get(label, {}), d.seeds) for label, d in decisions.items())


def describe_rule(min_seeds: int, max_seeds: int, half_width: str, metric: str) -> str:
    """The rule in one paragraph for the report and `validate` (half_width already in display units)."""
    level = stopping_confidence(min_seeds)
    return (f"Adaptive seeding: every cell ran seeds 0–{min_seeds - 1}; then, round after round, each cell whose "
            f"95% paired t-interval of the difference from its baseline on {metric} was wider than "
            f"±{half_width} got the next seed number, up to {max_seeds} seeds, and the baseline ran every seed any "
            "of its cells ran. Stopping depends only on the interval's width, never on the p-value or the sign of "
            "the difference (a fixed-width sequential interval, Chow & Robbins 1965); a difference that is the "
            "same on every seed has no measured spread and does not count as precise. The interval uses the t "
            f"quantile of the {level * 100:g}% level rather than 95%'s: a rule that stops where the seeds happen to "
            "agree would leave a plain 95% interval covering only about 90% of the time, and this one covers at "
            f"least 95% where the rule stops (simulated for min {min_seeds} at every noise level).")
