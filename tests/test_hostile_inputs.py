"""Hostile and careless inputs met as a user meets them: the CLI against the file (in a subprocess where the
process's own streams matter), its exit code and what it prints. Each is an error with exit 2, a location, no
traceback and nothing written, in bounded memory; none may hang (the generous timeouts only keep a regression from
blocking the test run)."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_SUITE, no_hang

# A guard against a hang, not a speed bound: a regression fails here instead of blocking the test run.
_HANG_GUARD_S = 120


def lossbench(*args: str, cwd: Path, env: dict[str, str] | None = None,
              stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "lossbench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=_HANG_GUARD_S, env=full_env, stdin=stdin)


def suite_with(tmp_path: Path, dataset: str) -> Path:
    suite = tmp_path / "suite.yaml"
    suite.write_text(TINY_SUITE.replace("dataset:\n  name: digits\n  train_subset: 400\n", dataset))
    return suite


def assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    text = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text


def in_process(*args: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> subprocess.CompletedProcess[str]:
    """The command run in this process (typer's CliRunner) with the subprocess's result shape: for refusals that
    need no process of their own (test_suite_fuzz.py starts a FIFO and a device root as real processes)."""
    from typer.testing import CliRunner

    from lossbench.cli import app

    monkeypatch.chdir(cwd)
    monkeypatch.setenv("COLUMNS", "200")
    with no_hang(_HANG_GUARD_S):
        result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return subprocess.CompletedProcess(list(args), result.exit_code, result.output, "")


@pytest.mark.parametrize("name", ["f.tar.gz", "data"])
def test_a_fifo_as_dataset_root_is_refused_at_once(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    suite = suite_with(tmp_path, f"dataset:\n  name: cifar10\n  root: {fifo}\n")
    work = tmp_path / "cwd"
    work.mkdir()
    result = in_process("validate", str(suite), cwd=work, monkeypatch=monkeypatch)
    assert_refused(result, "suite.yaml:4", "is a FIFO (named pipe), not a regular file or a directory")
    result = in_process("run", str(suite), "--out", str(tmp_path / "out"), cwd=work, monkeypatch=monkeypatch)
    assert_refused(result, "is a FIFO")
    assert not (tmp_path / "out").exists() and os.listdir(work) == []


def test_a_device_as_dataset_root_is_refused_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite = suite_with(tmp_path, "dataset:\n  name: cifar10\n")
    result = in_process("validate", str(suite), "--data-root", "/dev/zero", cwd=tmp_path, monkeypatch=monkeypatch)
    assert_refused(result, "--data-root /dev/zero", "/dev/zero is a character device")


def test_a_fifo_in_an_idx_folder_is_named_as_such(tmp_path: Path) -> None:
    from lossbench.data.mnist import Kmnist
    from lossbench.errors import DataError

    root = tmp_path / "kmnist"
    root.mkdir()
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (root / name).write_bytes(b"")
    os.mkfifo(root / "train-images-idx3-ubyte")
    with pytest.raises(DataError, match="train-images-idx3-ubyte is a FIFO"):
        Kmnist().describe(root)


@pytest.mark.parametrize("model", ["torchvision:vit_b_16", "torchvision:vit_b_32"])
def test_a_model_that_asserts_its_input_size_is_a_located_error(tmp_path: Path, model: str) -> None:
    from typer.testing import CliRunner

    from lossbench.cli import app

    suite = tmp_path / "suite.yaml"
    suite.write_text(TINY_SUITE)
    result = CliRunner().invoke(app, ["validate", str(suite), f"model.name={model}"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert f"override 'model.name={model}'" in text and "does not fit images of 1×8×8" in text
    assert "Wrong image height" in text and "Traceback" not in text


ONE_CELL = TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: [cross_entropy]").replace(
    "augmentation: [none, crop]", "augmentation: [none]").replace("epochs: 2", "epochs: 1")
TWO_CELLS = ONE_CELL.replace("loss: [cross_entropy]", "loss: [cross_entropy, mse]")


def shell(command: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=_HANG_GUARD_S,
                          env=full_env)


def test_an_ascii_terminal_encoding_still_trains(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(ONE_CELL)
    result = lossbench("run", str(suite), "--plain", "--out", str(tmp_path / "out"), cwd=tmp_path,
                       env={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "tiny: 1 cell(s) ? digits" in result.stdout
    assert (tmp_path / "out" / "results.csv").is_file()


def test_a_closed_stdout_is_no_reason_to_fail(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(ONE_CELL)
    py = f"{sys.executable} -m lossbench"
    result = shell(f"{py} validate {suite} >&-", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = shell(f"{py} run {suite} --out {tmp_path / 'out'} >&-", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # Nothing meant for the terminal went into a file opened while descriptor 1 was free.
    assert (tmp_path / "out" / ".lock").read_text().startswith("lossbench pid")
    assert len(list((tmp_path / "out" / "cells").glob("*.json"))) == 1


def test_a_reader_that_stops_early_ends_the_run_quietly_and_keeps_finished_cells(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(TWO_CELLS)
    out = tmp_path / "out"
    py = f"{sys.executable} -m lossbench"
    # The reader closes the pipe after the header: the next line ends the run, quietly, like other commands.
    result = shell(f"{py} run {suite} --plain --out {out} | head -1; echo \"status ${{PIPESTATUS[0]}}\" >&2",
                   cwd=tmp_path)
    assert result.stdout.startswith("tiny: 2 cell(s)") and result.stdout.count("\n") == 1
    assert result.stderr.strip() == "status 141", result.stderr
    # The reader closes the pipe once the first cell is done: that cell is kept, the rerun trains only the other.
    result = shell(f"{py} run {suite} --plain --out {out} | grep -m1 'done:'; echo \"status ${{PIPESTATUS[0]}}\" >&2",
                   cwd=tmp_path)
    assert result.stderr.strip() == "status 141", result.stderr
    assert len(list((out / "cells").glob("*.json"))) >= 1
    # The rerun needs no pipe of its own: in-process.
    result = in_process("run", str(suite), "--plain", "--out", str(out), cwd=tmp_path, monkeypatch=monkeypatch)
    assert result.returncode == 0, result.stdout
    assert "already done" in result.stdout and "0 already done" not in result.stdout
