"""Data scenarios: noise rates and flips, imbalance profiles, subsets, the untouched test set, and the grid axis."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from lossbench.config.dataset import DatasetConfig
from lossbench.config.source import SuiteSource
from lossbench.suite import parse_suite
from lossbench.data import ImageData, load_dataset
from lossbench.data.scenarios import CIFAR100_SUPERCLASSES, SCENARIOS, ScenarioSet, imbalance_counts
from lossbench.device import EngineOptions
from lossbench.execution import train_cell
from lossbench.errors import ConfigError, DataError, SuiteErrors
from lossbench.grid import expand
from lossbench.record import CellRecord, Metrics
from lossbench.results_csv import csv_row

from conftest import with_recipe

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def balanced(per_class: int, classes: int = 10) -> np.ndarray:
    labels = np.repeat(np.arange(classes), per_class)
    return np.random.default_rng(0).permutation(labels)


def split(specs: list[tuple[str, dict]], labels: np.ndarray, classes=CIFAR10, dataset: str = "cifar10", seed: int = 0):
    scenarios = ScenarioSet([SCENARIOS.build(name, params) for name, params in specs])
    return scenarios.split(labels, classes, dataset, seed)


# ---------------------------------------------------------------------------------------------------------------
# Label noise.


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.8])
def test_symmetric_noise_rate_and_uniform_flips(rate: float) -> None:
    labels = balanced(500)
    out = split([("label_noise", {"rate": rate})], labels)
    flipped = out.labels != labels
    assert abs(flipped.mean() - rate) <= 10 * 0.5 / len(labels)  # exact per class up to rounding
    assert out.summary()["noise_rate"] == pytest.approx(flipped.mean())
    for cls in range(10):
        assert flipped[labels == cls].mean() == pytest.approx(rate, abs=1 / 500)
    if rate > 0:
        # A flipped label is any other class with equal probability.
        pairs = (out.labels[flipped] - labels[flipped]) % 10
        counts = np.bincount(pairs, minlength=10)
        assert counts[0] == 0
        assert stats.chisquare(counts[1:]).pvalue > 1e-3


def test_asymmetric_noise_uses_the_cifar10_pairs() -> None:
    labels = balanced(400)
    out = split([("label_noise", {"rate": 0.4, "kind": "asymmetric"})], labels)
    name = dict(enumerate(CIFAR10))
    pairs = {(name[a], name[b]) for a, b in zip(labels, out.labels) if a != b}
    assert pairs == {("truck", "automobile"), ("bird", "airplane"), ("deer", "horse"), ("cat", "dog"), ("dog", "cat")}
    for cls in range(10):
        rate = (out.labels[labels == cls] != cls).mean()
        assert rate == (0.4 if name[cls] in ("truck", "bird", "deer", "cat", "dog") else 0.0)
    assert out.summary()["noise_rate"] == pytest.approx(0.4 * 5 / 10)
    assert any("cifar10 flips" in n for n in out.notes)


def test_asymmetric_noise_for_mnist_cifar100_and_unknown_datasets() -> None:
    digits = tuple(str(d) for d in range(10))
    labels = balanced(100)
    out = split([("label_noise", {"rate": 0.5, "kind": "asymmetric"})], labels, digits, "mnist")
    assert {(a, b) for a, b in zip(labels, out.labels) if a != b} == {(2, 7), (3, 8), (5, 6), (6, 5), (7, 1)}
    out = split([("label_noise", {"rate": 0.5, "kind": "asymmetric"})], labels, digits, "digits")
    assert {(a, b) for a, b in zip(labels, out.labels) if a != b} == {(c, (c + 1) % 10) for c in range(10)}
    fine = tuple(sorted(n for group in CIFAR100_SUPERCLASSES for n in group))
    assert len(fine) == 100
    labels = balanced(10, 100)
    out = split([("label_noise", {"rate": 0.3, "kind": "asymmetric"})], labels, fine, "cifar100")
    group_of = {n: g for g, group in enumerate(CIFAR100_SUPERCLASSES) for n in group}
    moved = [(fine[a], fine[b]) for a, b in zip(labels, out.labels) if a != b]
    assert len(moved) == 300 and all(group_of[a] == group_of[b] and a != b for a, b in moved)
    assert ("whale", "beaver") in set(moved)  # the cycle wraps within the superclass


def test_noise_is_per_seed_and_nested_across_rates() -> None:
    labels = balanced(200)
    low = split([("label_noise", {"rate": 0.2})], labels, seed=1)
    high = split([("label_noise", {"rate": 0.4})], labels, seed=1)
    again = split([("label_noise", {"rate": 0.2})], labels, seed=1)
    other = split([("label_noise", {"rate": 0.2})], labels, seed=2)
    assert np.array_equal(low.labels, again.labels) and not np.array_equal(low.labels, other.labels)
    flipped_low = low.labels != labels
    assert np.array_equal(high.labels[flipped_low], low.labels[flipped_low])


# ---------------------------------------------------------------------------------------------------------------
# Imbalance and subsets.


def test_exponential_imbalance_counts_follow_the_profile() -> None:
    counts = imbalance_counts([500] * 10, ratio=100, profile="exponential")
    assert counts[0] == 500 and counts[-1] == 5
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    # log n_i falls linearly in i with slope −ln(ratio)/(C−1), up to flooring.
    for i, n in enumerate(counts):
        assert 500 * 100 ** (-i / 9) - 1 < n <= 500 * 100 ** (-i / 9)
    slope = np.polyfit(np.arange(10), np.log(counts), 1)[0]
    assert slope == pytest.approx(-math.log(100) / 9, rel=0.02)


def test_step_imbalance_and_the_smallest_class_as_head_size() -> None:
    assert imbalance_counts([500] * 10, ratio=10, profile="step") == [500] * 5 + [50] * 5
    assert imbalance_counts([40, 30, 50], ratio=3, profile="step", minority_fraction=0.34) == [30, 30, 10]
    assert imbalance_counts([100] * 4, ratio=1000, profile="exponential")[-1] == 1  # at least one image


def test_imbalance_selects_those_counts_and_keeps_true_labels() -> None:
    labels = balanced(300)
    out = split([("imbalance", {"ratio": 20})], labels)
    expected = imbalance_counts([300] * 10, 20, "exponential")
    assert np.bincount(out.labels, minlength=10).tolist() == expected
    assert np.array_equal(labels[out.index], out.labels) and len(set(out.index)) == len(out.index)
    nested = split([("imbalance", {"ratio": 5})], labels)
    assert set(out.index) <= set(nested.index)


def test_scenarios_compose_selection_first_in_any_written_order() -> None:
    labels = balanced(300)
    a = split([("label_noise", {"rate": 0.3}), ("imbalance", {"ratio": 10})], labels)
    b = split([("imbalance", {"ratio": 10}), ("label_noise", {"rate": 0.3})], labels)
    assert np.array_equal(a.index, b.index) and np.array_equal(a.labels, b.labels)
    assert a.summary()["noise_rate"] == pytest.approx(0.3, abs=0.01)


def test_train_subset_by_count_fraction_and_stratification() -> None:
    labels = np.random.default_rng(1).permutation(np.repeat(np.arange(4), [400, 300, 200, 100]))
    out = split([("train_subset", {"n": 100})], labels, classes=("a", "b", "c", "d"))
    assert np.bincount(out.labels).tolist() == [40, 30, 20, 10]
    out = split([("train_subset", {"fraction": 0.05, "stratified": False})], labels, classes=("a", "b", "c", "d"))
    assert len(out.index) == 50 and np.array_equal(labels[out.index], out.labels)
    with pytest.raises(DataError, match="only 1000 images"):
        split([("train_subset", {"n": 5000})], labels, classes=("a", "b", "c", "d"))
    with pytest.raises(ConfigError):
        SCENARIOS.build("train_subset", {"n": 10, "fraction": 0.5})


def test_scenario_range_checks() -> None:
    for name, params in [("label_noise", {"rate": 1.0}), ("label_noise", {"kind": "pairs"}), ("imbalance", {"ratio": 0.5}),
                         ("imbalance", {"profile": "linear"}), ("train_subset", {})]:
        with pytest.raises(ConfigError):
            SCENARIOS.build(name, params)


def test_applying_changes_only_the_training_split() -> None:
    g = torch.Generator().manual_seed(0)
    data = ImageData(
        name="cifar10", identity="t", classes=CIFAR10,
        train_x=torch.randint(0, 256, (1000, 3, 4, 4), dtype=torch.uint8, generator=g),
        train_y=torch.from_numpy(balanced(100)),
        test_x=torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8, generator=g),
        test_y=torch.arange(50) % 10,
        val_x=torch.zeros(10, 3, 4, 4, dtype=torch.uint8), val_y=torch.arange(10),
    )
    scenarios = ScenarioSet([SCENARIOS.build("imbalance", {"ratio": 10}), SCENARIOS.build("label_noise", {"rate": 0.2})])
    out, summary = scenarios.apply(data, seed=0)
    assert out.test_x is data.test_x and out.test_y is data.test_y and out.val_y is data.val_y
    inner = scenarios.split(data.train_y.numpy(), CIFAR10, "cifar10", 0)
    assert torch.equal(out.train_x, data.train_x[torch.from_numpy(inner.index)])
    assert torch.equal(out.train_y, torch.from_numpy(inner.labels))
    assert summary["train_size"] == len(inner.index) and summary["class_counts"][0] == 100
    same, nothing = ScenarioSet([SCENARIOS.build("none", {})]).apply(data, 0)
    assert same is data and nothing is None


# ---------------------------------------------------------------------------------------------------------------
# Suites, grid cells and the engine.


def suite(grid_extra: dict | None = None, dataset_extra: dict | None = None, epochs: int = 1):
    data = {
        "name": "scenario-test",
        "dataset": {"name": "digits", **(dataset_extra or {})},
        "model": {"name": "small_cnn"},
        "train": {"epochs": epochs, "batch_size": 64},
        "grid": {"loss": ["cross_entropy"], **(grid_extra or {})},
    }
    return parse_suite(SuiteSource(data, "scenario-test.yaml", {}))


def test_clean_cells_keep_their_ids() -> None:
    plain = expand(suite(), "digits:x")
    explicit = expand(suite({"scenario": ["none"]}), "digits:x")
    assert [c.id for c in plain] == [c.id for c in explicit]
    assert "scenario" not in plain[0].config and plain[0].axes["scenario"] == "none"
    assert plain[0].label == "cross_entropy | none | none"


def test_scenario_axis_and_dataset_options_enter_cells() -> None:
    cells = expand(suite({"scenario": ["none", {"name": "label_noise", "rate": 0.2}]}), "digits:x")
    assert [c.label.split(" | ")[-1] for c in cells] == ["none", "label_noise(rate=0.2)"]
    assert cells[1].config["scenario"] == [{"name": "label_noise", "params": {"rate": 0.2, "kind": "symmetric"}}]
    assert len({c.id for c in cells}) == 2
    (cell,) = expand(suite(dataset_extra={"label_noise": {"rate": 0.4}, "imbalance": {"ratio": 10}}), "digits:x")
    assert [s.name for s in cell.scenario] == ["imbalance", "label_noise"]
    assert cell.axes["scenario"] == "imbalance(ratio=10)+label_noise(rate=0.4)"


def test_bad_scenarios_are_reported_with_their_place() -> None:
    with pytest.raises(SuiteErrors) as info:
        suite({"scenario": [{"name": "label_nosie", "rate": 0.2}]}, {"imbalance": {"ratio": 0.1}})
    text = str(info.value)
    assert "label_noise" in text and "grid.scenario[0]" in text and "dataset.imbalance" in text


def test_noisy_cell_trains_and_records_the_realised_rate(tmp_path: Path) -> None:
    (cell,) = expand(suite({"scenario": [{"name": "label_noise", "rate": 0.4}]}), "digits:x")
    data = load_dataset(DatasetConfig(name="digits", train_subset=400), cache_dir=tmp_path)
    result = train_cell(with_recipe(cell, epochs=1, batch_size=64), data, EngineOptions(torch.device("cpu"), "fp32"))
    assert result.status == "done", result.error
    info = result.metrics["scenario"]
    assert info["train_size"] == 400 and info["noise_rate"] == pytest.approx(0.4, abs=0.01)
    assert any("noisy" in note for note in result.notes)
    assert sum(sum(row) for row in result.metrics["confusion"]) == len(data.test_y)  # the whole clean test set
    row = csv_row(CellRecord(cell.id, cell.label, 0, result.status, cell.axes, config=cell.config,
                             metrics=Metrics.from_dict(result.metrics)))
    assert row["scenario"] == "label_noise(rate=0.4)" and row["noise_rate"] == info["noise_rate"]
