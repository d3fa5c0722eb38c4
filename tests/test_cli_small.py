"""Small things a user meets on the command line: help text that shows `lossbench[tensorboard]`, `list loss` in
the singular, and `report` options that suggest what was meant."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lossbench.cli import app
from lossbench.analysis.baseline import closest_label

from test_report import ResultsDir

runner = CliRunner()


def test_run_help_names_the_tensorboard_extra() -> None:
    result = runner.invoke(app, ["run", "-h"], env={"COLUMNS": "300"})
    assert result.exit_code == 0 and "lossbench[tensorboard]" in result.output, result.output


@pytest.mark.parametrize("kind", ["loss", "model", "augmentation", "regularizer"])
def test_list_takes_the_singular(kind: str) -> None:
    result = runner.invoke(app, ["list", kind, "--json"])
    assert result.exit_code == 0, result.output
    assert f'"{kind}s"' in result.output or f'"{kind}es"' in result.output


def test_baseline_suggestion_matches_components_not_spelling() -> None:
    labels = ["cross_entropy | none | none", "cross_entropy | none | crop(padding=1)", "mse | none | crop(padding=1)"]
    assert closest_label("cross_entropy | none | crop", labels) == "cross_entropy | none | crop(padding=1)"
    assert closest_label("cross_entropy|none|none", labels) == "cross_entropy | none | none"


def test_report_suggests_the_metric_and_the_baseline(tmp_path: Path) -> None:
    res = ResultsDir(tmp_path)
    for aug in ("none", "crop(padding=1)"):
        for seed in range(2):
            res.add({"loss": "cross_entropy", "augmentation": aug}, seed, 0.9 + seed / 100)
    metric = runner.invoke(app, ["report", str(tmp_path), "--metric", "acc"])
    assert metric.exit_code == 2 and "did you mean 'test_acc'" in metric.output.replace("\n", " "), metric.output
    base = runner.invoke(app, ["report", str(tmp_path), "--baseline", "cross_entropy | none | crop"])
    assert base.exit_code == 2
    assert "did you mean 'cross_entropy | none | crop(padding=1)'" in base.output.replace("\n", " "), base.output


def test_metric_completion_offers_metric_names() -> None:
    from lossbench.cli import METRIC_NAMES
    from lossbench.cli.shell import completer

    assert {"test_acc", "ece", "test_nll"} <= set(completer(METRIC_NAMES)("")) and completer(METRIC_NAMES)("te")
