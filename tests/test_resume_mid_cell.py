"""Mid-cell resume: a cell continued from a training state saved after an epoch ends exactly as the uninterrupted
training does (bit for bit on the same device and thread count): in the engine, and through the real CLI after a
SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from lossbench.checkpoint import CheckpointPolicy, load_training, resume_path
from lossbench.suite import load_suite
from lossbench.data import ImageData
from lossbench.device import EngineOptions
from lossbench.engine import CellResult, TrainingProgress
from lossbench.grid import expand
from lossbench.execution import train_cell

from conftest import TINY_SUITE, with_recipe

# What may differ between a resumed and an uninterrupted training: how long things took.
TIMINGS = ("epoch_s", "train_s", "eval_s")

RECIPE = """\
name: resume
dataset: {name: digits}
model: {name: small_cnn}
train:
  epochs: 3
  batch_size: 64
  optimizer: OPTIMIZER
  schedule: SCHEDULE
  device: cpu
seeds: [3]
grid:
  loss: [LOSS]
  regularizer: [REGULARIZER]
  augmentation: [AUGMENTATION]
"""

# Each case exercises a piece of the state: momentum and moments, the schedule's position, dropout masks (the
# global generator), augmentation draws, mixing draws, a loss with parameters of its own (arcface's class layer).
CASES = {
    "sgd-cosine-dropout-mixup": dict(OPTIMIZER="{name: sgd, lr: 0.05, momentum: 0.9, nesterov: true}",
                                    SCHEDULE="{name: cosine, warmup_epochs: 1}", LOSS="cross_entropy",
                                    REGULARIZER="[{name: dropout, p: 0.3}, {name: l2, weight: 1.0e-4}]",
                                    AUGMENTATION="[hflip, crop, mixup]"),
    # fp16 (refused on the CPU by the suite check, a GPU precision) here only to carry a grad scaler's state.
    "fp16-sgd-step": dict(OPTIMIZER="{name: sgd, lr: 0.05}", SCHEDULE="{name: step, step_epochs: 1}",
                          LOSS="cross_entropy", REGULARIZER="none", AUGMENTATION="none"),
    "adamw-onecycle-arcface-cutout": dict(OPTIMIZER="{name: adamw, lr: 0.003}", SCHEDULE="onecycle", LOSS="arcface",
                                         REGULARIZER="none", AUGMENTATION="[crop, cutout]"),
}


@pytest.fixture
def small(digits: ImageData) -> ImageData:
    return replace(digits, train_x=digits.train_x[:300], train_y=digits.train_y[:300],
                   test_x=digits.test_x[:150], test_y=digits.test_y[:150])


def comparable(result: CellResult) -> dict[str, Any]:
    """What must be identical: status, metrics and history, timings left out."""
    history = [{k: v for k, v in h.to_dict().items() if k not in TIMINGS} for h in result.history]
    return {"status": result.status, "metrics": result.metrics, "history": history, "notes": result.notes}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_cell_resumed_after_each_epoch_ends_bit_identical(write_suite, small: ImageData, case: str) -> None:
    text = RECIPE
    for key, value in CASES[case].items():
        text = text.replace(key, value)
    (cell,) = expand(load_suite(write_suite(text)), "digits:test")
    cell = with_recipe(cell, eval_batch_size=128)
    precision = "fp16" if case.startswith("fp16") else "fp32"
    opts = EngineOptions(torch.device("cpu"), precision)
    every = CheckpointPolicy(every=1)
    states: list[bytes] = []

    def keep(event: str, info: dict[str, Any]) -> None:
        if event == "checkpoint":
            states.append(info["state"])

    whole = train_cell(cell, small, opts, keep, checkpoint=every)
    assert whole.status == "done", whole.traceback
    assert [load_training(s, "x")["epoch"] for s in states] == [1, 2]  # none after the last epoch (keep: final)
    for state in states:
        resumed = train_cell(cell, small, opts, resume=state, checkpoint=every)
        assert resumed.status == "done", resumed.traceback
        assert comparable(resumed) == comparable(whole)
        for part in ("model", "loss"):
            assert resumed.weights[part].keys() == whole.weights[part].keys()
            assert all(torch.equal(resumed.weights[part][k], whole.weights[part][k]) for k in whole.weights[part])
    # The state holds what the README says, and the resolved config of its cell.
    saved = load_training(states[0], "x")
    assert saved["config"] == cell.config and len(saved["history"]) == 1
    assert {"optimizer", "schedule", "scaler", "order", "augment_rng", "torch_rng"} <= set(saved)
    if precision == "fp16":
        assert saved["scaler"]["scale"] > 0  # the scaler's state is saved (it changes as steps overflow or not)


KILLED_SUITE = TINY_SUITE.replace("train_subset: 400", "train_subset: 1000").replace(
    "epochs: 2", "epochs: 8\n  threads: 1\n  checkpoint: {every: 2}").replace(
    "regularizer: [none]", "regularizer: [{name: dropout, p: 0.2}]").replace(
    "loss: [cross_entropy, mse]", "loss: [cross_entropy, label_smoothing]").replace(
    "augmentation: [none, crop]", "augmentation: [[hflip, crop]]")


def cell_files(out: Path) -> dict[str, dict[str, Any]]:
    """cell id → the parts of its result file that must not depend on an interruption (timings left out)."""
    files = {}
    for path in (out / "cells").glob("*.json"):
        record = json.loads(path.read_text())
        record["history"] = [{k: v for k, v in h.items() if k not in TIMINGS} for h in record["history"]]
        files[path.stem] = {k: record[k] for k in ("id", "config", "status", "metrics", "history", "notes", "data")}
    return files


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """The results of the suite run once without interruption, in this process (one torch thread, like the CLI
    runs below), shared by the tests that compare with it."""
    from typer.testing import CliRunner

    from lossbench.cli import app

    folder = tmp_path_factory.mktemp("uninterrupted")
    suite = folder / "suite.yaml"
    suite.write_text(KILLED_SUITE)
    out = folder / "out"
    done = CliRunner().invoke(app, ["run", str(suite), "--plain", "--no-report", "--threads", "1", "--out", str(out),
                                    "--cache-dir", str(cache_dir)])
    assert done.exit_code == 0, done.output
    assert not list((out / "checkpoints").glob("*.resume.pt"))  # keep: final
    return out


# With --jobs 2 the states travel from the worker processes to the driver; slow only for its process start-ups.
@pytest.mark.parametrize("jobs", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sigkill_mid_cell_then_resume_is_bit_identical(write_suite, tmp_path: Path, cli_env: dict[str, str],
                                                      cache_dir: Path, uninterrupted: Path, jobs: int) -> None:
    from typer.testing import CliRunner

    from lossbench.cli import app

    suite = write_suite(KILLED_SUITE)
    command = [sys.executable, "-m", "lossbench", "run", str(suite), "--plain", "--no-report", "--jobs", str(jobs),
               "--threads", "1"]
    whole, killed = uninterrupted, tmp_path / "killed"
    expected = cell_files(whole)
    assert len(expected) == 2

    proc = subprocess.Popen([*command, "--out", str(killed)], env=cli_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    # Killed once a cell has saved its training state (after epoch 2 or 4 of 8) and before any cell has ended.
    while not list((killed / "checkpoints").glob("*.resume.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    states = list((killed / "checkpoints").glob("*.resume.pt"))
    assert states, "no training state was saved before the deadline"
    assert not list((killed / "cells").glob("*.json")), "a cell ended before the kill: nothing was interrupted"

    # The resume reads the saved state from files: in this process, like the uninterrupted run it must equal.
    again = CliRunner().invoke(app, [*command[3:], "--out", str(killed), "--cache-dir", str(cache_dir)])
    assert again.exit_code == 0, again.output
    assert "continues" in again.output and "from its saved training state" in again.output  # said, per cell
    assert cell_files(killed) == expected
    resumed = [json.loads(p.read_text()) for p in (killed / "cells").glob("*.json")]
    assert any(r["timing"].get("resumed_after_epoch", 0) >= 2 for r in resumed)
    assert not list((killed / "checkpoints").glob("*.resume.pt"))  # keep: final
    for cell_id in expected:
        a = torch.load(whole / "checkpoints" / f"{cell_id}.pt", weights_only=True)
        b = torch.load(killed / "checkpoints" / f"{cell_id}.pt", weights_only=True)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_restore_puts_back_the_grad_scaler_and_every_random_stream(write_suite, small: ImageData) -> None:
    from lossbench.checkpoint import capture_training, restore_training, to_bytes
    from lossbench.components import build_cell

    text = RECIPE
    for key, value in CASES["sgd-cosine-dropout-mixup"].items():
        text = text.replace(key, value)
    (cell,) = expand(load_suite(write_suite(text)), "digits:test")
    opts = EngineOptions(torch.device("cpu"), "fp32")
    parts = build_cell(cell, small, opts)
    parts.scaler = scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    scaler.scale(torch.ones(()))  # the scale tensor exists from the first use
    state = load_training(to_bytes({**capture_training(parts, TrainingProgress(1, 0.0, 0.0, [])), "config": {}}),
                          "x")
    draws = (torch.randperm(10, generator=parts.order), parts.augment_rng.random(3), torch.rand(3))

    fresh = build_cell(cell, small, opts)
    fresh.scaler = fresh_scaler = torch.amp.GradScaler("cpu")
    restore_training(fresh, state)
    assert fresh_scaler.state_dict() == scaler.state_dict() and fresh_scaler.get_scale() == 8.0
    again = (torch.randperm(10, generator=fresh.order), fresh.augment_rng.random(3), torch.rand(3))
    assert torch.equal(draws[0], again[0]) and (draws[1] == again[1]).all() and torch.equal(draws[2], again[2])
