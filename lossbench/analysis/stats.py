"""Statistics over seeds: t-distribution confidence intervals, paired t-tests and Holm's correction.

Everything here takes plain sequences of floats (one value per seed) and returns small frozen dataclasses, so the
numbers can be checked against scipy.stats by hand. Non-finite values (a diverged seed has no metrics) are the
caller's business: these functions reject them rather than silently dropping seeds and breaking the pairing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Confidence level of every interval in the report.
CONFIDENCE = 0.95
#: Family-wise error rate of the Holm-corrected comparisons.
ALPHA = 0.05
#: Adaptive seeding (lossbench/analysis/adaptive_seeds.py) stops a cell at the first n whose paired t-interval is narrow
#: enough, so it stops more readily where the first seeds happen to agree, and the plain 95% interval at that n
#: holds the true difference only 88–92% of the time (min 2–3; docs/adaptive-seeds.md). Its interval therefore
#: uses a larger t quantile: the two-sided level below, by the rule's `min` (the last entry serves every larger
#: min). Each level is the smallest on a 0.25-point grid whose interval at stopping covers at least 95% at every
#: ratio of noise sd to target half-width (0.2 to 6) and any max (10 and 30 simulated; the worst case no longer
#: moves beyond), for normally distributed paired differences, 50,000 simulated cells per ratio
#: (tests/test_adaptive_seeds.py re-measures them).
STOPPING_LEVELS: dict[int, float] = {2: 0.985, 3: 0.98, 4: 0.9775, 5: 0.975, 6: 0.9725, 7: 0.97}
#: Differences whose spread is below this fraction of their size are treated as exactly constant: metrics such as
#: accuracy are ratios of counts, so two seeds can differ by the same count and still leave float noise of 1e-16.
_ZERO_SPREAD = 1e-9


def stopping_confidence(min_seeds: int) -> float:
    """The two-sided level of adaptive seeding's paired t-interval for a rule with `min_seeds` (≥ 2) first seeds:
    the level whose interval, computed where the rule stops, covers the true difference at least 95% of the time
    (see STOPPING_LEVELS)."""
    if min_seeds < 2:
        raise ValueError(f"adaptive seeding needs min_seeds >= 2, got {min_seeds}")
    return STOPPING_LEVELS[min(min_seeds, max(STOPPING_LEVELS))]


@dataclass(frozen=True)
class Interval:
    """Mean of n values with their sample standard deviation (ddof=1) and a t-distribution confidence interval.

    `std`, `low` and `high` are None when n < 2: one value has no spread and no interval.
    """

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (the ± of `mean ± half_width`), in the values' units."""
        return None if self.low is None or self.high is None else (self.high - self.low) / 2


def _values(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{what}: expected a flat sequence of numbers, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: every value must be finite, got {x.tolist()}")
    return x


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean ± t_{(1+confidence)/2, n-1} · s / √n of `values` (one per seed). Empty input gives a NaN mean."""
    x = _values(values, "t_interval")
    n = int(x.size)
    if n == 0:
        return Interval(0, math.nan, None, None, None)
    mean = float(x.mean())
    if n == 1:
        return Interval(1, mean, None, None, None)
    std = float(x.std(ddof=1))
    from scipy import stats  # here, not at import: `validate` loads this module and scipy costs it ~1 s

    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Interval(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class PairedTest:
    """Paired t-test of a − b over n pairs (seeds): the mean difference, its confidence interval, t and the
    two-sided p-value. When no test is possible, `t`, `p`, `low` and `high` are None and `reason` says why."""

    n: int
    mean_diff: float
    low: float | None
    high: float | None
    t: float | None
    p: float | None
    reason: str | None = None

    @property
    def tested(self) -> bool:
        return self.p is not None


def paired_t(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> PairedTest:
    """Paired t-test of `a` against `b`, element i of each coming from the same seed.

    Equivalent to scipy.stats.ttest_rel(a, b) with its confidence interval, except that differences which are the
    same on every seed are reported as untestable (scipy would divide by a zero or float-noise spread and claim
    certainty from, say, three seeds).
    """
    x, y = _values(a, "paired_t a"), _values(b, "paired_t b")
    if x.shape != y.shape:
        raise ValueError(f"paired_t: a and b must pair up one to one, got {x.size} and {y.size} values")
    d = x - y
    n = int(d.size)
    if n == 0:
        return PairedTest(0, math.nan, None, None, None, None, "no seed has a result in both cells")
    mean = float(d.mean())
    if n == 1:
        return PairedTest(1, mean, None, None, None, None, "one paired seed: a t-test needs at least two")
    spread = float(d.max() - d.min())
    if spread <= _ZERO_SPREAD * max(abs(mean), 1.0):
        if abs(mean) <= _ZERO_SPREAD:
            return PairedTest(n, 0.0, 0.0, 0.0, None, None, f"identical on all {n} seeds")
        return PairedTest(n, mean, mean, mean, None, None, f"the difference is the same on all {n} seeds, so the "
                          "seed-to-seed spread is zero and a t-test is undefined")
    from scipy import stats  # as in t_interval: loaded when a test is computed

    result = stats.ttest_rel(x, y)
    ci = result.confidence_interval(confidence_level=confidence)
    return PairedTest(n, mean, float(ci.low), float(ci.high), float(result.statistic), float(result.pvalue))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None marks a comparison that was not tested and stays
    None; the family size m counts only the tested ones). The i-th smallest p becomes
    max_{j ≤ i} min(1, (m − j + 1) · p_(j)), which controls the family-wise error rate at any α."""
    tested = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    for p, _ in tested:
        if not 0.0 <= p <= 1.0 or math.isnan(p):
            raise ValueError(f"holm: p-values must lie in [0, 1], got {p}")
    m = len(tested)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(test: PairedTest, adjusted_p: float | None, higher_is_better: bool, alpha: float = ALPHA) -> str:
    """A plain-words reading of one comparison with the baseline: 'better', 'worse' (Holm-adjusted p < alpha, in
    the metric's direction), 'no detectable difference with n=N seeds', or why it was not tested."""
    if not test.tested or adjusted_p is None:
        if test.reason and test.reason.startswith("identical"):
            return test.reason
        return f"not tested: {test.reason}" if test.reason else "not tested"
    if adjusted_p < alpha:
        return "better" if (test.mean_diff > 0) == higher_is_better else "worse"
    return f"no detectable difference with n={test.n} seeds"


def holm_confidences(pvalues: Sequence[float | None], alpha: float = ALPHA) -> list[float | None]:
    """The confidence level of each comparison's interval that agrees with Holm's verdict (None where untested).

    Holm tests the i-th smallest of m p-values (i from 0) at α/(m − i) and stops at the first it cannot reject.
    The interval of a rejected comparison is taken at 1 − α/(m − i), so it excludes 0; every comparison from the
    first accepted one, at index k, on is taken at 1 − α/(m − k), which its p-value (≥ the k-th one's ≥ α/(m − k))
    cannot beat, so it contains 0. An interval therefore excludes 0 exactly when Holm rejects, and each is at least
    as wide as the unadjusted (1 − α) interval."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(tested)
    levels: list[float | None] = [None] * len(pvalues)
    stop: int | None = None
    for rank, (p, i) in enumerate(tested):
        if stop is None and not p < alpha / (m - rank):
            stop = rank
        levels[i] = 1 - alpha / (m - (rank if stop is None else stop))
    return levels
