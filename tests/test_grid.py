"""Grid expansion: cell counts, labels, and ids that are stable under rewriting and sensitive to every value."""

from __future__ import annotations

import pytest

from lossbench.suite import load_suite
from lossbench.grid import expand

from conftest import TINY_SUITE


def ids(path, identity: str = "digits:sklearn") -> list[str]:
    return [c.id for c in expand(load_suite(path), identity)]


def test_cells_are_the_product_of_axes_and_seeds(write_suite) -> None:
    suite = load_suite(write_suite(TINY_SUITE.replace("seeds: [0]", "seeds: [0, 1, 2]")))
    cells = expand(suite, "digits:sklearn")
    assert len(cells) == 2 * 1 * 2 * 3
    assert len({c.id for c in cells}) == len(cells)
    assert len({c.label for c in cells}) == 4
    assert {c.seed for c in cells} == {0, 1, 2}


def test_labels_are_readable(write_suite) -> None:
    text = TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: [{name: mse, over: outputs}]").replace(
        "regularizer: [none]", "regularizer: [{name: l2, weight: 1.0e-4}]").replace(
        "augmentation: [none, crop]", "augmentation: [[hflip, {name: crop, padding: 2}]]")
    (cell,) = expand(load_suite(write_suite(text)), "digits:sklearn")
    assert cell.label == "mse(over=outputs) | l2(weight=1e-4) | hflip+crop(padding=2)"
    assert cell.axes["augmentation"] == "hflip+crop(padding=2)"


def test_ids_stable_under_key_order_and_explicit_defaults(write_suite) -> None:
    reordered = """\
    seeds: [0]
    grid:
      augmentation: [none, {padding: 4, name: crop}]
      regularizer: [none]
      loss: [cross_entropy, {name: mse, over: probabilities}]
    train:
      device: cpu
      optimizer: {momentum: 0.9, lr: 0.05, name: sgd}
      batch_size: 64
      epochs: 2
    model: {name: small_cnn, padding: auto}
    dataset: {train_subset: 400, name: digits}
    name: tiny
    """
    assert ids(write_suite()) == ids(write_suite(reordered, "b.yaml"))


def test_device_does_not_change_ids(write_suite) -> None:
    assert ids(write_suite()) == ids(write_suite(TINY_SUITE.replace("device: cpu", "device: auto"), "b.yaml"))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("lr: 0.05", "lr: 0.051"),
        ("momentum: 0.9", "momentum: 0.8"),
        ("epochs: 2", "epochs: 3"),
        ("batch_size: 64", "batch_size: 32"),
        ("seeds: [0]", "seeds: [1]"),
        ("name: small_cnn", "name: tutorial_cnn"),
        ("name: small_cnn", "name: small_cnn\n  padding: same"),
        ("augmentation: [none, crop]", "augmentation: [none, {name: crop, padding: 3}]"),
        ("loss: [cross_entropy, mse]", "loss: [cross_entropy, {name: mse, over: outputs}]"),
        ("regularizer: [none]", "regularizer: [l2]"),
        ("  device: cpu", "  device: cpu\n  schedule: cosine"),
        ("  device: cpu", "  device: cpu\n  precision: fp32"),
    ],
)
def test_ids_change_with_every_value(write_suite, old: str, new: str) -> None:
    base = ids(write_suite())
    changed = ids(write_suite(TINY_SUITE.replace(old, new), "b.yaml"))
    assert set(base).isdisjoint(changed) or len(set(base) & set(changed)) < len(base)
    assert base[-1] != changed[-1] or base[0] != changed[0]


def test_ids_depend_on_dataset_identity(write_suite) -> None:
    path = write_suite()
    assert set(ids(path, "digits:sklearn")).isdisjoint(ids(path, "digits:sklearn|train=400"))


def test_editing_one_axis_keeps_the_other_cells(write_suite) -> None:
    base = set(ids(write_suite()))
    more = set(ids(write_suite(TINY_SUITE.replace("regularizer: [none]", "regularizer: [none, l1]"), "b.yaml")))
    assert base < more and len(more) == 2 * len(base)
