"""Command-line overrides `key=value` and options: applied before validation, errors named as typed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lossbench.cli import app
from lossbench.config.schema import suite_to_yaml
from lossbench.suite import load_suite
from lossbench.errors import ConfigError, SuiteErrors
from lossbench.overrides import parse_override

from conftest import TINY_SUITE


runner = CliRunner()


def errors_of(path: Path, *overrides: str, **options: object) -> list[ConfigError]:
    with pytest.raises(ConfigError) as info:
        load_suite(path, list(overrides), settings=options)
    exc = info.value
    return exc.errors if isinstance(exc, SuiteErrors) else [exc]


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("train.epochs=2", ("train", "epochs"), 2),
        ("train.optimizer.lr=0.01", ("train", "optimizer", "lr"), 0.01),
        ("grid.loss=[cross_entropy,focal]", ("grid", "loss"), ["cross_entropy", "focal"]),
        ("grid.loss[1].gamma=3", ("grid", "loss", 1, "gamma"), 3),
        ("dataset.train_subset=2000", ("dataset", "train_subset"), 2000),
        ("description=a = b", ("description",), "a = b"),
        ("dataset.root=", ("dataset", "root"), None),
    ],
)
def test_parse_override(text: str, path: tuple, value: object) -> None:
    override = parse_override(text)
    assert override.path == path and override.value == value and override.label == f"override '{text}'"


def test_overrides_change_the_suite(write_suite) -> None:
    suite = load_suite(write_suite(), ["train.epochs=1", "train.optimizer.lr=0.01", "grid.loss=[cross_entropy,focal]",
                                       "dataset.train_subset=200", "grid.loss[1].gamma=3"])
    assert suite.train.epochs == 1 and suite.dataset.train_subset == 200
    assert suite.train.optimizer.name == "sgd" and suite.train.optimizer.params == {"lr": 0.01, "momentum": 0.9}
    assert [(s.name, s.params) for s in suite.grid.loss] == [("cross_entropy", {}), ("focal", {"gamma": 3})]


def test_a_parameter_under_a_component_written_by_name(write_suite) -> None:
    # `augmentation: [none, crop]`: setting a parameter of `crop` turns it into {name: crop, padding: 2}.
    suite = load_suite(write_suite(), ["grid.augmentation[1].padding=2"])
    assert suite.grid.augmentation[1][0].params == {"padding": 2}


def test_override_errors_name_the_override(write_suite) -> None:
    errors = errors_of(write_suite(), "train.epochs=0", "grid.loss=[cross_entropy,focl]", "train.epoch=3")
    rendered = [e.render() for e in errors]
    assert any(r.startswith("override 'train.epochs=0': must be > 0") for r in rendered), rendered
    assert any(r.startswith("override 'grid.loss=[cross_entropy,focl]' at grid.loss[1]: unknown loss 'focl'")
               and "did you mean 'focal'" in r for r in rendered), rendered
    assert any(r.startswith("override 'train.epoch=3': unknown key 'epoch'") and "did you mean 'epochs'" in r
               for r in rendered), rendered
    assert len(errors) == 3 and not any("suite.yaml" in r for r in rendered)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("train.epochs", "key=value"),
        ("=3", "key=value"),
        ("train..epochs=3", "not a dotted key"),
        ("grid.loss[7]=focal", "has 2 item(s)"),
        ("train.epochs.x=1", "not a mapping"),
        ("train.epochs=[1", "invalid YAML"),
        ("train.epochs=.nan", "not a finite number"),
        ("seeds=[true]", "must be an integer (got true)"),
    ],
)
def test_malformed_overrides(write_suite, text: str, needle: str) -> None:
    errors = errors_of(write_suite(), text)
    assert errors[0].render().startswith(f"override '{text}'") and needle in errors[0].render(), errors[0].render()


def test_options_are_blamed_as_the_option(write_suite) -> None:
    [err] = errors_of(write_suite(), epochs=0)
    assert err.render().startswith("--epochs 0: must be > 0")
    [err] = errors_of(write_suite(), device="gpu")
    assert err.render().startswith("--device gpu: 'gpu' is not allowed") and err.suggestion == "cuda"
    [err] = errors_of(write_suite(), seeds=[0, -1])
    assert err.render().startswith("--seeds 0,-1 at seeds[1]: must be >= 0")


def test_the_resolved_suite_records_the_overrides(write_suite, tmp_path: Path) -> None:
    suite = load_suite(write_suite(), ["train.epochs=1"], settings={"seeds": [3]})
    text = suite_to_yaml(suite)
    assert "# from the command line: override 'train.epochs=1'" in text and "--seeds 3" in text
    plain = yaml.safe_load(text)
    assert plain["train"]["epochs"] == 1 and plain["seeds"] == [3]
    again = tmp_path / "again.yaml"
    again.write_text(text)
    assert load_suite(again) == suite


def test_cli_device_option_error_names_the_option(write_suite, tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(write_suite()), "--device", "gpu", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "--device gpu: 'gpu' is not allowed" in result.output and "did you mean 'cuda'" in result.output
    assert "suite.yaml" not in result.output and not (tmp_path / "r").exists()


def test_cli_run_with_an_override_trains_one_epoch(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(write_suite()), "train.epochs=1", "grid.loss=[cross_entropy]",
                                 "grid.augmentation=[none]", "--out", str(out), "--cache-dir", str(cache_dir),
                                 "--no-report"])
    assert result.exit_code == 0, result.output
    [cell] = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert len(cell["history"]) == 1 and cell["label"].startswith("cross_entropy")
    recorded = (out / "suite.yaml").read_text()
    assert "override 'train.epochs=1'" in recorded and yaml.safe_load(recorded)["train"]["epochs"] == 1


def test_cli_validate_takes_overrides(write_suite) -> None:
    result = runner.invoke(app, ["validate", str(write_suite()), "grid.loss=[cross_entropy,focal,mae]"])
    assert result.exit_code == 0 and "6 cell(s)" in result.output, result.output
    bad = runner.invoke(app, ["validate", str(write_suite()), "train.epochs=0"])
    assert bad.exit_code == 2 and "override 'train.epochs=0': must be > 0" in bad.output


@pytest.mark.parametrize(("override", "where"), [
    ("grid.loss[0].gamma.x=1", "override 'grid.loss[0].gamma.x=1': loss 'cross_entropy' has no parameter 'gamma'"),
    ("model.name=torchvision:x", "override 'model.name=torchvision:x': unknown torchvision model 'x'"),
    ("seeds={min: 2, max: 1000000000, target: {metric: test_acc, half_width: 0.01}}", "at seeds.max"),
])
def test_an_error_from_an_override_names_the_override(write_suite, override: str, where: str) -> None:
    errors = errors_of(write_suite(), override)
    text = "\n".join(e.render() for e in errors)
    assert where in text, text
    assert "suite.yaml" not in text and "cells (" not in text, text


@pytest.mark.parametrize("value", ["!!binary aGVsbG8=", "!!set {0, 1}", "!!omap [{a: 1}]"])
def test_yaml_types_a_suite_never_means_are_refused(write_suite, value: str) -> None:
    for key in ("name", "seeds", "dataset.root"):
        errors = errors_of(write_suite(), f"{key}={value}")
        text = "\n".join(e.render() for e in errors)
        assert f"override '{key}={value}'" in text and value.split()[0] in text, text
    suite = write_suite(TINY_SUITE.replace("name: tiny", f"name: {value}"))
    text = "\n".join(e.render() for e in errors_of(suite))
    assert "suite.yaml:1:7" in text and value.split()[0] in text, text


def test_a_long_override_is_shortened_in_messages(write_suite) -> None:
    text = "description=[" + "x" * 20_000
    rendered = "\n".join(e.render() for e in errors_of(write_suite(), text))
    assert len(rendered) < 600 and "override 'description=[xxx" in rendered and "(20,013 characters)" in rendered


def test_a_retrieval_target_metric_needs_embedding_losses(write_suite) -> None:
    seeds = "seeds={min: 2, max: 5, target: {metric: precision_at_1, half_width: 0.01}}"
    errors = errors_of(write_suite(), seeds)
    text = "\n".join(e.render() for e in errors)
    assert "precision_at_1 is measured only on embedding heads" in text and "cross_entropy, mse" in text, text
    load_suite(write_suite(), [seeds, "grid.loss=[triplet]"])
