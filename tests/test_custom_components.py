"""Custom components named as `module:Class`: checked against their kind's contract before anything calls them,
imported from the suite's own folder, and run like built-ins when they satisfy it."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lossbench.cli import app

# Every place a suite names a component, as (YAML key path, how the component is written there).
POPEN = "{name: 'subprocess:Popen', args: [sh, -c, 'echo PWNED > %s']}"
KIND_PLACES = {
    "loss": ("grid.loss", "[%s]"),
    "regularizer": ("grid.regularizer", "[%s]"),
    "augmentation": ("grid.augmentation", "[%s]"),
    "grid optimizer": ("grid.optimizer", "[%s]"),
    "scenario": ("grid.scenario", "[%s]"),
    "optimizer": ("train.optimizer", "%s"),
    "schedule": ("train.schedule", "%s"),
    "model": ("model", "%s"),
    "dataset": ("dataset", "%s"),
}


def _suite_with(tmp_path: Path, place: str, value: str) -> Path:
    """The tiny digits suite with `value` written at `place` (a dotted key of the suite)."""
    sections = {
        "dataset": "{name: digits, train_subset: 200}",
        "model": "{name: small_cnn}",
        "train": {"epochs": "1", "batch_size": "64", "optimizer": "{name: adam, lr: 0.003}", "device": "cpu"},
        "grid": {"loss": "[cross_entropy]"},
    }
    head, _, key = place.partition(".")
    if key:
        sections[head][key] = value  # type: ignore[index]
    else:
        sections[head] = value
    lines = ["name: custom", "seeds: [0]"]
    for name, body in sections.items():
        if isinstance(body, dict):
            lines.append(f"{name}:")
            lines += [f"  {k}: {v}" for k, v in body.items()]
        else:
            lines.append(f"{name}: {body}")
    path = tmp_path / "suite.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("kind", sorted(KIND_PLACES))
def test_popen_as_any_component_is_refused_and_never_runs(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "PWNED"
    place, shape = KIND_PLACES[kind]
    # A dataset takes no parameters: naming the class is the whole attempt there.
    value = "{name: 'subprocess:Popen'}" if kind == "dataset" else shape % (POPEN % marker)
    suite = _suite_with(tmp_path, place, value)
    out = tmp_path / "results"
    runner = CliRunner()
    checked = runner.invoke(app, ["validate", str(suite)])
    ran = runner.invoke(app, ["run", str(suite), "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    for result in (checked, ran):
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert "'subprocess:Popen' is not a" in text, text
        assert "Traceback" not in text
        # The located message names the file and line, and the kind's contract.
        assert f"{suite}:" in text
        assert "a custom" in text and "is a " in text
    assert not marker.exists()
    assert not out.exists()


CUSTOM_SOURCE = '''
import numpy as np
import torch
from torch import nn

from lossbench.augment import Augmentation
from lossbench.data.scenarios import Scenario
from lossbench.regularizers import Regularizer


class HalfL2(Regularizer):
    """0.5 * weight * sum of squared weights."""

    def __init__(self, weight: float = 1e-3):
        self.weight = weight

    def penalty(self, model):
        return 0.5 * self.weight * sum(p.square().sum() for p in model.parameters() if p.ndim > 1)


class Invert(Augmentation):
    """Inverts the pixel values of a random half of the images."""

    num_params = 1

    def apply(self, x, y, params):
        flip = (params[:, 0] < 0.5).to(x.dtype)[:, None, None, None]
        return flip * (1 - x) + (1 - flip) * x, y


class FirstHalf(Scenario):
    """Keeps the first half of the training split."""

    def apply(self, split, classes, dataset, seed):
        return split.select(np.arange(len(split.index) // 2))


class NoApply(Augmentation):
    num_params = 1


class NotARegularizer:
    def penalty(self, model):
        return None


class Exploding(nn.Module):
    head = "logits"

    def __init__(self, scale: float = 1.0):
        super().__init__()
        raise RuntimeError("cannot build this loss")

    def forward(self, outputs, targets):
        return outputs.sum()


class Exiting(nn.Module):
    head = "logits"

    def __init__(self):
        super().__init__()
        raise SystemExit(3)

    def forward(self, outputs, targets):
        return outputs.sum()
'''


@pytest.fixture
def beside_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A custom module in the suite's folder, which is *not* on sys.path: lossbench adds the suite's folder."""
    name = f"user_components_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(CUSTOM_SOURCE)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_custom_components_beside_the_suite_validate_and_train(tmp_path: Path, beside_suite: str,
                                                                cache_dir: Path) -> None:
    m = beside_suite
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(f"""\
        name: custom
        dataset: {{name: digits, train_subset: 200}}
        model: {{name: small_cnn}}
        train: {{epochs: 1, batch_size: 64, optimizer: {{name: adam, lr: 0.003}}, device: cpu}}
        seeds: [0]
        grid:
          loss: [cross_entropy]
          regularizer: [{{name: '{m}:HalfL2', weight: 0.01}}]
          augmentation: ['{m}:Invert']
          scenario: ['{m}:FirstHalf']
        """))
    out = tmp_path / "results"
    runner = CliRunner()
    checked = runner.invoke(app, ["validate", str(suite)])
    assert checked.exit_code == 0, checked.output
    ran = runner.invoke(app, ["run", str(suite), "--out", str(out), "--cache-dir", str(cache_dir), "--plain",
                              "--no-report"])
    assert ran.exit_code == 0, ran.output
    (record,) = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert record["status"] == "done", record.get("error")
    assert record["config"]["regularizer"][0]["params"] == {"weight": 0.01}
    # The scenario kept half of the 200 training images, and the penalty was part of the loss.
    assert record["metrics"]["scenario"]["train_size"] == 100
    assert record["history"][0]["penalty"] > 0


@pytest.mark.parametrize(
    "place, attr, message",
    [
        ("grid.augmentation", "NoApply", "does not define apply()"),
        ("grid.regularizer", "NotARegularizer", "is not a regularizer"),
        ("grid.loss", "HalfL2", "must be a torch.nn.Module subclass"),
        ("grid.scenario", "Invert", "is not a scenario"),
        ("grid.loss", "Exploding", "raised RuntimeError in its constructor: cannot build this loss"),
        ("grid.loss", "Exiting", "raised SystemExit in its constructor: 3"),
    ],
)
def test_custom_classes_that_break_the_contract_are_located_errors(tmp_path: Path, beside_suite: str, place: str,
                                                                   attr: str, message: str) -> None:
    suite = _suite_with(tmp_path, place, f"['{beside_suite}:{attr}']")
    result = CliRunner().invoke(app, ["validate", str(suite)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert message in text
    assert f"{suite}:" in text and f"at {place}[0]" in text
    assert "Traceback" not in text


def test_a_missing_custom_module_says_where_it_was_looked_for(tmp_path: Path) -> None:
    suite = _suite_with(tmp_path, "grid.loss", "['no_such_user_module:Loss']")
    result = CliRunner().invoke(app, ["validate", str(suite)])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "cannot import module 'no_such_user_module'" in text
    assert "imported from the folder beside the suite" in text and str(tmp_path.resolve()) in text


EXITING_SOURCE = '''
import sys
import torch


class Abort(BaseException):
    """Not an Exception: only `except BaseException` catches it."""


class ExitsInForward(torch.nn.Module):
    head = "logits"

    def forward(self, outputs, targets):
        sys.exit(3)


class AbortsInForward(torch.nn.Module):
    head = "logits"

    def forward(self, outputs, targets):
        raise Abort("stop everything")
'''


@pytest.mark.parametrize("attr, jobs", [("ExitsInForward", "1"), ("ExitsInForward", "2"), ("AbortsInForward", "1")])
def test_sys_exit_in_user_code_fails_only_its_cell(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                   attr: str, jobs: str) -> None:
    name = f"exiting_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(EXITING_SOURCE)
    monkeypatch.setattr(sys, "path", list(sys.path))
    suite = _suite_with(tmp_path, "grid.loss", f"['{name}:{attr}', cross_entropy]")
    out = tmp_path / "results"
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(out), "--cache-dir", str(cache_dir), "--plain",
                                      "--no-report", "--jobs", jobs])
    # Exit code 1: a cell failed; the other cell of the grid still trained.
    assert result.exit_code == 1, result.output
    records = {r["axes"]["loss"]: r for r in (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))}
    assert records[f"{name}:{attr}"]["status"] == "failed"
    assert records[f"{name}:{attr}"]["error"].startswith("SystemExit: 3" if attr == "ExitsInForward" else "Abort:")
    assert records["cross_entropy"]["status"] == "done"
    assert len((out / "results.csv").read_text().splitlines()) == 3
