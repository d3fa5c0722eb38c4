"""Hostile and careless inputs met as a user meets them: the CLI in a subprocess against the file, its exit code
and what it prints. Each is an error with exit 2, a location, no traceback and nothing written, in bounded memory;
none may hang (the generous subprocess timeout only keeps a regression from blocking the test run)."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_SUITE

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


@pytest.mark.parametrize("name", ["f.tar.gz", "data"])
def test_a_fifo_as_dataset_root_is_refused_at_once(tmp_path: Path, name: str) -> None:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    suite = suite_with(tmp_path, f"dataset:\n  name: cifar10\n  root: {fifo}\n")
    work = tmp_path / "cwd"
    work.mkdir()
    result = lossbench("validate", str(suite), cwd=work)
    assert_refused(result, "suite.yaml:4", "is a FIFO (named pipe), not a regular file or a directory")
    result = lossbench("run", str(suite), "--out", str(tmp_path / "out"), cwd=work)
    assert_refused(result, "is a FIFO")
    assert not (tmp_path / "out").exists() and os.listdir(work) == []


def test_a_device_as_dataset_root_is_refused_at_once(tmp_path: Path) -> None:
    suite = suite_with(tmp_path, "dataset:\n  name: cifar10\n")
    result = lossbench("validate", str(suite), "--data-root", "/dev/zero", cwd=tmp_path)
    assert_refused(result, "--data-root /dev/zero", "/dev/zero is a character device")


def test_a_fifo_in_an_idx_folder_is_named_as_such(tmp_path: Path) -> None:
    from lossbench.data.sources import Kmnist
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
