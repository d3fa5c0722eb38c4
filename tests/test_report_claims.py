"""Claims only as strong as the data: the headline with one seed, with several baselines, with cells at chance;
Holm-adjusted intervals that always agree with their verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from lossbench.report import analyse, load_results, write_report
from lossbench.analysis.stats import ALPHA, holm, holm_confidences, paired_t

from test_report import ResultsDir


def test_holm_confidences_by_hand() -> None:
    # Sorted p: 0.001 (step 1 tests at α/3: rejected), 0.03 (step 2 at α/2 = 0.025: accepted, Holm stops),
    # 0.04 (after the stop: the level of the first accepted step).
    levels = holm_confidences([0.04, 0.001, None, 0.03])
    assert levels == pytest.approx([1 - ALPHA / 2, 1 - ALPHA / 3, None, 1 - ALPHA / 2])
    assert levels[2] is None


def test_holm_intervals_agree_with_holm_verdicts() -> None:
    """Random families: a comparison's adjusted interval excludes 0 exactly when its Holm p is below α."""
    rng = np.random.default_rng(0)
    checked = rejected = 0
    for _ in range(200):
        m, n = int(rng.integers(2, 8)), int(rng.integers(2, 6))
        pairs = [(rng.normal(rng.normal(0, 1.5), 1, n), rng.normal(0, 1, n)) for _ in range(m)]
        tests = [paired_t(a, b) for a, b in pairs]
        adjusted = holm([t.p for t in tests])
        for (a, b), p_holm, level in zip(pairs, adjusted, holm_confidences([t.p for t in tests])):
            wide = paired_t(a, b, confidence=level)
            # The same interval scipy gives at that level.
            ci = stats.ttest_rel(a, b).confidence_interval(confidence_level=level)
            assert (wide.low, wide.high) == pytest.approx((ci.low, ci.high))
            assert level >= 1 - ALPHA
            excludes_zero = wide.low > 0 or wide.high < 0
            assert excludes_zero == (p_holm < ALPHA)
            checked += 1
            rejected += excludes_zero
    assert checked > 500 and 0 < rejected < checked  # both outcomes were exercised


def _one_seed(root: Path) -> ResultsDir:
    res = ResultsDir(root, suite="smoke")
    for loss, acc in (("cross_entropy", 0.90), ("mse", 0.93), ("focal", 0.88)):
        res.add({"loss": loss}, 0, acc)
    return res


def test_one_seed_headline_says_no_test_was_possible(tmp_path: Path) -> None:
    _one_seed(tmp_path / "r")
    write_report([tmp_path / "r"], plots=False)
    text = (tmp_path / "r" / "report.md").read_text()
    first = next(line for line in text.splitlines() if line.startswith("**In short:**"))
    assert "**no test was possible**" in first and "1 paired seed(s)" in first
    assert "`--seeds 0,1,2`" in first and "suite `smoke`" in first
    assert "detectably" not in first and "Holm" not in first
    # With one seed, the per-seed table would repeat the leaderboard.
    assert "One seed per cell: the leaderboard above shows every value" in text


def test_a_cell_at_chance_is_flagged_and_left_out(tmp_path: Path) -> None:
    res = ResultsDir(tmp_path / "r")
    numbers = {("cross_entropy", "none"): [0.90, 0.91, 0.92], ("cross_entropy", "crop"): [0.93, 0.92, 0.94],
               ("mse", "none"): [0.099, 0.1, 0.101], ("mse", "crop"): [0.105, 0.11, 0.1]}
    for (loss, aug), accs in numbers.items():
        for seed, acc in enumerate(accs):
            res.add({"loss": loss, "augmentation": aug}, seed, acc)
    [a] = analyse(load_results([tmp_path / "r"]))
    assert a.chance == pytest.approx(0.1)
    assert a.at_chance() == ["mse | none | crop", "mse | none | none"]
    assert a.best()["label"] == "cross_entropy | none | crop"
    # Main effects leave the chance cells out: the mse level has no cell left, augmentation is read on CE alone.
    effects = {e.level: e for e in a.effects["augmentation"]}
    assert effects["crop"].delta == pytest.approx(0.93 - 0.91)
    assert effects["crop"].cells == 1
    write_report([tmp_path / "r"], plots=False)
    text = (tmp_path / "r" / "report.md").read_text()
    assert "mse \\| none \\| none ✗ at chance" in text
    assert "✗ At chance: 2 cell(s) have a test accuracy within 2 points of chance, 1/10 = 10.00%" in text
    assert "Cells at chance level are left out (`mse | none | crop`, `mse | none | none`)" in text
    assert "2 cell(s) at chance level left out" in text.split("\n\n")[1]


def test_headline_with_a_baseline_per_scenario(tmp_path: Path) -> None:
    """Two `cross_entropy | none | none` cells (one per scenario): the headline reads the best cell against its
    own baseline and never claims there is none."""
    res = ResultsDir(tmp_path / "r")
    numbers = {("cross_entropy", "clean"): [0.90, 0.91, 0.92], ("mse", "clean"): [0.95, 0.96, 0.975],
               ("cross_entropy", "noisy"): [0.80, 0.81, 0.82], ("mse", "noisy"): [0.70, 0.72, 0.73]}
    for (loss, scenario), accs in numbers.items():
        for seed, acc in enumerate(accs):
            res.add({"loss": loss, "scenario": scenario}, seed, acc)
    write_report([tmp_path / "r"], plots=False)
    text = (tmp_path / "r" / "report.md").read_text()
    first = next(line for line in text.splitlines() if line.startswith("**In short:**"))
    assert "no baseline" not in first
    assert "`mse | none | none | clean`" in first and "baseline `cross_entropy | none | none | clean`" in first
    assert "Holm-adjusted CI" in first
