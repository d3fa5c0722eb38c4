"""The report's statistics against scipy.stats and hand computations on fixed numbers."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from lossbench.analysis.stats import Interval, PairedTest, holm, paired_t, t_interval, verdict

ACC = [0.9861, 0.9750, 0.9805, 0.9889]


def test_t_interval_matches_scipy() -> None:
    iv = t_interval(ACC)
    low, high = stats.t.interval(0.95, len(ACC) - 1, loc=np.mean(ACC), scale=stats.sem(ACC))
    assert iv.n == 4
    assert iv.mean == pytest.approx(np.mean(ACC), abs=1e-15)
    assert iv.std == pytest.approx(np.std(ACC, ddof=1), rel=1e-12)
    assert (iv.low, iv.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))
    assert iv.half_width == pytest.approx((high - low) / 2, rel=1e-12)


def test_t_interval_by_hand_three_seeds() -> None:
    # mean 2, s = 1, t_{0.975, 2} = 4.3026527297 (printed tables) → half-width 4.3026527297 / √3 = 2.4841377...
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv.half_width == pytest.approx(4.3026527297 / math.sqrt(3), rel=1e-10)
    assert t_interval([1.0, 2.0, 3.0], confidence=0.99).half_width > iv.half_width


def test_t_interval_small_and_degenerate() -> None:
    assert t_interval([0.5]) == Interval(1, 0.5, None, None, None)
    empty = t_interval([])
    assert empty.n == 0 and math.isnan(empty.mean) and empty.half_width is None
    same = t_interval([0.25, 0.25, 0.25])
    assert (same.low, same.high, same.std) == (0.25, 0.25, 0.0)
    with pytest.raises(ValueError, match="finite"):
        t_interval([0.5, float("nan")])


def test_paired_t_matches_scipy_and_hand() -> None:
    a = [0.90, 0.92, 0.95, 0.91]
    b = [0.88, 0.91, 0.90, 0.90]
    res = paired_t(a, b)
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert res.n == 4 and res.tested
    assert res.t == pytest.approx(ref.statistic, rel=1e-12)
    assert res.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert (res.low, res.high) == (pytest.approx(ci.low, rel=1e-12), pytest.approx(ci.high, rel=1e-12))
    # By hand: d = [.02, .01, .05, .01], mean .0225, s = .018929694, t = mean / (s / 2).
    d = np.array([0.02, 0.01, 0.05, 0.01])
    t = d.mean() / (d.std(ddof=1) / 2)
    assert res.mean_diff == pytest.approx(0.0225, abs=1e-12)
    assert res.t == pytest.approx(t, rel=1e-9)
    assert res.p == pytest.approx(2 * stats.t.sf(abs(t), 3), rel=1e-9)
    # The sign follows a − b.
    assert paired_t(b, a).t == pytest.approx(-res.t, rel=1e-12)


def test_paired_t_constant_difference_is_not_a_certainty() -> None:
    # Accuracies on 360 test images: each seed 3 images better. Float noise leaves a ~1e-17 spread, on which scipy
    # reports t = inf, p = 0; the report must not call three seeds a certainty.
    a = [0.9861111111111112, 0.9833333333333333, 0.975]
    b = [x - 3 / 360 for x in a]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert stats.ttest_rel(a, b).pvalue < 1e-6
    res = paired_t(a, b)
    assert not res.tested and res.p is None
    assert res.mean_diff == pytest.approx(3 / 360)
    assert "same on all 3 seeds" in (res.reason or "")
    same = paired_t(a, a)
    assert same.reason == "identical on all 3 seeds" and same.mean_diff == 0.0


def test_paired_t_too_few_pairs() -> None:
    assert paired_t([0.9], [0.8]).reason == "one paired seed: a t-test needs at least two"
    assert paired_t([], []).n == 0
    with pytest.raises(ValueError, match="pair up"):
        paired_t([0.9, 0.8], [0.8])


def test_holm_by_hand() -> None:
    # Sorted: .005 ×4 = .02; .01 ×3 = .03; .03 ×2 = .06; .04 ×1 = .04 → raised to .06 (monotone).
    assert holm([0.01, 0.04, 0.03, 0.005]) == [
        pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06), pytest.approx(0.02)]
    # Untested comparisons stay None and do not count in m; capped at 1.
    assert holm([0.2, None, 0.6]) == [pytest.approx(0.4), None, pytest.approx(0.6)]
    assert holm([0.7, 0.9]) == [1.0, 1.0]
    assert holm([]) == []
    with pytest.raises(ValueError):
        holm([1.5])


def test_holm_against_bonferroni_bounds() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.2, size=12).tolist()
    adj = holm(p)
    m = len(p)
    for raw, a in zip(p, adj):
        assert raw <= a <= min(1.0, m * raw) + 1e-15  # never below raw, never above Bonferroni
    order = np.argsort(p)
    assert all(adj[order[i]] <= adj[order[i + 1]] for i in range(m - 1))  # monotone in raw p


def test_verdicts() -> None:
    up = PairedTest(3, 0.02, 0.01, 0.03, 5.0, 0.01)
    down = PairedTest(3, -0.02, -0.03, -0.01, -5.0, 0.01)
    assert verdict(up, 0.03, higher_is_better=True) == "better"
    assert verdict(down, 0.03, higher_is_better=True) == "worse"
    assert verdict(down, 0.03, higher_is_better=False) == "better"  # lower ECE is better
    assert verdict(up, 0.2, higher_is_better=True) == "no detectable difference with n=3 seeds"
    assert verdict(paired_t([0.9], [0.8]), None, True).startswith("not tested: one paired seed")
