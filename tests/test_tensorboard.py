"""`lossbench run --tensorboard DIR`: one TensorBoard run per cell × seed with per-epoch scalars and the final
metrics as hparams, written by the driver (so also with --jobs), read back with tensorboard's EventAccumulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lossbench.cli import app
from lossbench.suite import load_suite
from lossbench.grid import expand
from lossbench import runner
from lossbench.store import results_id
from lossbench.tensorboard import TensorBoardWriter, run_name

from conftest import TINY_SUITE

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402


def _read(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _hparams(acc: EventAccumulator) -> dict:
    """The hparams of a run, decoded from the hparams plugin's session-start summary."""
    content = acc.PluginTagToContent("hparams")
    for raw in content.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.HasField("session_start_info"):
            return {k: (v.string_value or v.number_value) for k, v in data.session_start_info.hparams.items()}
    return {}


def test_tensorboard_runs_hold_the_epochs_and_final_metrics_with_jobs(write_suite, tmp_path: Path, cache_dir,
                                                                      ) -> None:
    suite = write_suite(TINY_SUITE)
    log_dir, out = tmp_path / "tb", tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(out), "--tensorboard", str(log_dir),
                                      "--jobs", "2", "--no-report", "--plain", "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    cells = expand(load_suite(suite), json.loads(next((out / "cells").glob("*.json")).read_text())["config"]
                   ["dataset"]["identity"])
    [experiment] = list(log_dir.iterdir())
    assert experiment.name == f"tiny-{results_id(out)}"
    assert sorted(p.name for p in experiment.iterdir()) == sorted(run_name(c) for c in cells)
    for cell in cells:
        record = json.loads((out / "cells" / f"{cell.id}.json").read_text())
        acc = _read(experiment / run_name(cell))
        tags = set(acc.Tags()["scalars"])
        assert {"train/loss", "train/acc", "test/loss", "test/acc", "test/top5", "lr"} <= tags
        for key, tag in (("train_loss", "train/loss"), ("test_acc", "test/acc"), ("lr", "lr")):
            events = acc.Scalars(tag)
            assert [e.step for e in events] == [h["epoch"] for h in record["history"]] == [1, 2]
            assert [e.value for e in events] == pytest.approx([h[key] for h in record["history"]], rel=1e-6)
        assert acc.Scalars("final/test_acc")[0].value == pytest.approx(record["metrics"]["test_acc"], rel=1e-6)
        assert acc.Scalars("final/ece")[0].value == pytest.approx(record["metrics"]["ece"], rel=1e-6)
        hparams = _hparams(acc)
        assert hparams["loss"] == cell.axes["loss"] and hparams["augmentation"] == cell.axes["augmentation"]
        assert hparams["seed"] == cell.seed and hparams["status"] == "done"


def test_run_name_is_readable_and_a_single_directory(write_suite) -> None:
    cell = expand(load_suite(write_suite(TINY_SUITE)), "digits:sklearn")[1]
    name = run_name(cell)
    assert "/" not in name and " " not in name and name.endswith(f"__seed{cell.seed}")
    assert name.startswith(cell.axes["loss"])


def test_missing_tensorboard_package_is_a_clear_error_before_training(write_suite, tmp_path: Path,
                                                                      monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(write_suite(TINY_SUITE)), "--out", str(out), "--tensorboard",
                                      str(tmp_path / "tb")])
    assert result.exit_code == 2 and "--tensorboard needs the tensorboard package" in result.output
    assert "lossbench[tensorboard]" in result.output and not out.exists()


def test_two_experiments_in_one_directory_stay_apart(write_suite, tmp_path: Path, cache_dir) -> None:
    """Two results directories of one suite into one --tensorboard directory: two experiments, each run with its
    own epochs 1, 2 only; training a cell again into the same experiment starts a new version, never appends."""
    suite = load_suite(write_suite(TINY_SUITE.replace("augmentation: [none, crop]", "augmentation: [none]")
                                   .replace("loss: [cross_entropy, mse]", "loss: [cross_entropy]")))
    log_dir = tmp_path / "tb"

    def run(out: Path, force: bool = False) -> None:
        runner.run(runner.plan(suite, out, cache_dir=cache_dir, force=force),
                   display=TensorBoardWriter(log_dir, suite.name, out))

    run(tmp_path / "a")
    run(tmp_path / "b")
    run(tmp_path / "a", force=True)
    [cell] = expand(suite, json.loads(next((tmp_path / "a" / "cells").glob("*.json")).read_text())["config"]
                    ["dataset"]["identity"])
    ida, idb = results_id(tmp_path / "a"), results_id(tmp_path / "b")
    assert ida != idb
    assert sorted(p.name for p in log_dir.iterdir()) == sorted([f"tiny-{ida}", f"tiny-{idb}"])
    assert sorted(p.name for p in (log_dir / f"tiny-{ida}").iterdir()) == [run_name(cell), f"{run_name(cell)}__v2"]
    for folder in (log_dir / f"tiny-{ida}" / run_name(cell), log_dir / f"tiny-{ida}" / f"{run_name(cell)}__v2",
                   log_dir / f"tiny-{idb}" / run_name(cell)):
        assert [e.step for e in _read(folder).Scalars("test/acc")] == [1, 2]


def test_a_tensorboard_path_that_is_a_file_is_refused_before_anything_is_written(write_suite, tmp_path: Path,
                                                                                  cache_dir) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("mine\n")
    out = tmp_path / "out"
    for target in (taken, taken / "tb"):
        result = CliRunner().invoke(app, ["run", str(write_suite(TINY_SUITE)), "--out", str(out), "--tensorboard",
                                          str(target), "--cache-dir", str(cache_dir)])
        text = " ".join(result.output.split())
        assert result.exit_code == 2, text
        assert f"--tensorboard {target}: {taken} is a file, not a directory" in text and "Traceback" not in text
        assert not out.exists() and taken.read_text() == "mine\n"


def test_a_long_cell_label_gets_a_run_name_the_file_system_takes(write_suite, tmp_path: Path, cache_dir) -> None:
    """A 10-step augmentation pipeline makes a label over 255 bytes; the run directory's name stays within the
    limit, keeps the label's start and stays unique by the cell id."""
    steps = ", ".join(["{name: crop, padding: 1}", "hflip", "vflip", "{name: translate, max_pixels: 2, padding_mode: border}",
                       "{name: rotate, degrees: 10, padding_mode: reflection}", "{name: scale, zoom: [0.8, 1.2], padding_mode: reflection}", "{name: cutout, size: 2}",
                       "{name: cutout, size: 3, fill: 0.5}", "{name: gaussian_noise, sigma: 0.01}",
                       "{name: hflip, p: 0.25}"])
    text = (TINY_SUITE.replace("augmentation: [none, crop]", f"augmentation: [[{steps}]]")
            .replace("loss: [cross_entropy, mse]", "loss: [cross_entropy]").replace("epochs: 2", "epochs: 1"))
    suite = write_suite(text)
    cell = expand(load_suite(suite), "digits:sklearn")[0]
    assert len(cell.label.encode()) > 255
    name = run_name(cell)
    assert len(name.encode()) <= 255 - 8 and cell.id in name and name.startswith(cell.axes["loss"])
    log_dir = tmp_path / "tb"
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "out"), "--tensorboard",
                                      str(log_dir), "--cache-dir", str(cache_dir), "--no-report"])
    assert result.exit_code == 0, result.output
    cell = expand(load_suite(suite), "digits:sklearn|train=400")[0]  # the identity the run gives the data
    [experiment] = log_dir.iterdir()
    assert [p.name for p in experiment.iterdir()] == [run_name(cell)]
