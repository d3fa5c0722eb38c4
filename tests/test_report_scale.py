"""The report at scale: its per-seed outlier search is a sort, not a comparison of every pair, and finds the
same seed as the pairwise definition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lossbench.report.per_seed import _outlying_seed


def pairwise(values: pd.Series, threshold: float):
    """The definition: the seed furthest from its nearest other value, if that gap exceeds the threshold."""
    if len(values) < 3:
        return None
    gaps = pd.Series({seed: (values.drop(seed) - value).abs().min() for seed, value in values.items()})
    seed = gaps.idxmax()
    return seed if gaps[seed] > threshold else None


@pytest.mark.parametrize("n", [2, 3, 4, 7, 30])
def test_the_outlier_search_agrees_with_the_pairwise_definition(n: int) -> None:
    rng = np.random.default_rng(n)
    for trial in range(200):
        raw = rng.normal(0.8, 0.01, n)
        if trial % 3 == 0:
            raw[rng.integers(n)] += rng.choice([-1, 1]) * 0.2  # one bad seed
        if trial % 5 == 0:
            raw = np.round(raw, 2)  # ties
        values = pd.Series(raw, index=rng.permutation(100)[:n])  # seeds in any order, not 0..n-1
        for threshold in (0.0, 0.02, 0.1):
            assert _outlying_seed(values, threshold) == pairwise(values, threshold), (values.to_dict(), threshold)
