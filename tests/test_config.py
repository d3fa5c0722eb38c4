"""Suite loading: a valid suite parses; every kind of bad input names the file, line, path, value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossbench.config.schema import suite_to_yaml
from lossbench.suite import load_suite
from lossbench.errors import ConfigError

from conftest import REPO, TINY_SUITE, errors_of, one_error


def test_repository_suites_are_valid() -> None:
    for name in ["smoke.yaml", "cifar.yaml", "fashion.yaml"]:
        suite = load_suite(REPO / "suites" / name)
        assert suite.grid.loss


def test_defaults_and_component_forms(write_suite) -> None:
    suite = load_suite(write_suite())
    assert suite.train.epochs == 2 and suite.train.precision == "auto"
    assert [s.name for s in suite.grid.loss] == ["cross_entropy", "mse"]
    assert suite.grid.regularizer[0][0].name == "none"
    assert suite.train.optimizer.params == {"lr": 0.05, "momentum": 0.9}


def test_resolved_suite_round_trips(write_suite, tmp_path: Path) -> None:
    suite = load_suite(write_suite())
    again = tmp_path / "again.yaml"
    again.write_text(suite_to_yaml(suite))
    assert load_suite(again) == suite


def test_missing_file(tmp_path: Path) -> None:
    err = one_error(tmp_path / "nope.yaml")
    assert "not found" in err.render() and "nope.yaml" in err.render()


def test_invalid_yaml_reports_line_and_column(write_suite) -> None:
    path = write_suite("name: x\ngrid:\n  loss: [cross_entropy\n  regularizer: none\n")
    err = one_error(path)
    assert err.location is not None and err.location.line == 4
    assert err.location.column is not None
    assert "invalid YAML" in err.render() and str(path) in err.render()


def test_unknown_key_has_line_path_and_suggestion(write_suite) -> None:
    path = write_suite(TINY_SUITE.replace("  epochs: 2", "  epoch: 2"))
    err = one_error(path)
    assert err.location.path == "train.epoch"
    assert err.location.line == 8
    assert err.suggestion == "epochs"
    assert "batch_size" in (err.allowed or [])


def test_unknown_top_level_key(write_suite) -> None:
    err = one_error(write_suite(TINY_SUITE + "seed: [1]\n"))
    assert err.location.path == "seed" and err.suggestion == "seeds"


def test_unknown_component_name(write_suite) -> None:
    err = one_error(write_suite(TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: [cross_entropy, crossentropy]")))
    rendered = err.render()
    assert err.location.path == "grid.loss[1]" and err.location.line == 14
    assert err.suggestion == "cross_entropy"
    assert "mse" in (err.allowed or []) and "crossentropy" in rendered


def test_unknown_component_parameter(write_suite) -> None:
    err = one_error(write_suite(TINY_SUITE.replace("augmentation: [none, crop]", "augmentation: [none, {name: crop, pading: 2}]")))
    # The location is the parameter's own key, on its line.
    assert err.location.path == "grid.augmentation[1].pading" and err.location.line == 16
    assert err.suggestion == "padding" and "pading" in err.render()


@pytest.mark.parametrize(
    ("old", "new", "path", "needle"),
    [
        ("lr: 0.05", "lr: -1", "train.optimizer.lr", "lr must be > 0"),
        ("epochs: 2", "epochs: 0", "train.epochs", "must be > 0"),
        ("batch_size: 64", 'batch_size: "x"', "train.batch_size", "must be an integer"),
        ("device: cpu", "device: gpu", "train.device", "not allowed"),
        ("train_subset: 400", "train_subset: -3", "dataset.train_subset", "must be > 0"),
        ("augmentation: [none, crop]", "augmentation: [none, {name: crop, padding: -1}]",
         "grid.augmentation[1].padding", "padding must be >= 0"),
    ],
)
def test_wrong_type_or_range(write_suite, old: str, new: str, path: str, needle: str) -> None:
    err = one_error(write_suite(TINY_SUITE.replace(old, new)))
    assert err.location.path == path
    assert err.location.line is not None
    assert needle in err.render()


def test_literal_error_lists_allowed_values(write_suite) -> None:
    err = one_error(write_suite(TINY_SUITE.replace("device: cpu", "device: cdua")))
    assert err.allowed == ["auto", "cpu", "cuda", "mps"] and err.suggestion == "cuda"


def test_empty_grid_axis(write_suite) -> None:
    err = one_error(write_suite(TINY_SUITE.replace("regularizer: [none]", "regularizer: []")))
    assert err.location.path == "grid.regularizer" and "needs at least 1 item" in err.render()


def test_yaml_boolean_key_is_explained(write_suite) -> None:
    err = one_error(write_suite(TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: [{name: mse, on: outputs}]")))
    assert "quote the key" in err.render()


def test_every_error_is_reported_at_once(write_suite) -> None:
    text = TINY_SUITE.replace("epochs: 2", "epochs: 0").replace("batch_size: 64", "batch_size: x")
    assert len(errors_of(write_suite(text))) == 2


def test_repeated_seeds_rejected(write_suite) -> None:
    err = one_error(write_suite(TINY_SUITE.replace("seeds: [0]", "seeds: [0, 0]")))
    assert err.location.path == "seeds"


def test_hard_label_loss_with_mixing_augmentation_rejected(write_suite) -> None:
    from lossbench.augment import AUGMENTATIONS, Augmentation
    from lossbench.losses import LOSSES, Loss

    @LOSSES.register("_test_hard_only")
    class HardOnly(Loss):
        """Test double: a loss defined on labels only."""

        soft_targets = False

    @AUGMENTATIONS.register("_test_mixing")
    class Mixing(Augmentation):
        """Test double: an augmentation that mixes labels."""

        soft_targets = True

    try:
        text = TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: [cross_entropy, _test_hard_only]").replace(
            "augmentation: [none, crop]", "augmentation: [none, [crop, _test_mixing]]")
        err = one_error(write_suite(text))
        assert err.location.path == "grid.loss[1]" and "hard labels only" in err.render()
    finally:
        LOSSES._entries.pop("_test_hard_only")
        AUGMENTATIONS._entries.pop("_test_mixing")


def test_missing_data_root(write_suite, tmp_path: Path) -> None:
    err = one_error(write_suite(TINY_SUITE.replace("  name: digits\n", "  name: digits\n  root: nowhere\n", 1)))
    assert err.location.path == "dataset.root" and "does not exist" in err.render()


def test_overrides_are_validated(write_suite) -> None:
    with pytest.raises(ConfigError):
        load_suite(write_suite(), settings={"epochs": 0})
    assert load_suite(write_suite(), settings={"epochs": 5, "seeds": [3, 4]}).seeds == [3, 4]


def test_relative_data_root_is_relative_to_the_suite(write_suite, tmp_path: Path) -> None:
    (tmp_path / "data" / "x").mkdir(parents=True)
    suite = load_suite(write_suite(TINY_SUITE.replace("  name: digits\n", "  name: digits\n  root: data/x\n", 1)))
    assert suite.dataset.root == str(tmp_path / "data" / "x")
