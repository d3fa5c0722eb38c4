"""Shared fixtures: small real data (scikit-learn's 8×8 digits) and suite files written to a temp dir."""

from __future__ import annotations

import faulthandler
import os
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from lossbench.config.dataset import DatasetConfig

# Tests are small; one thread per process keeps them fast and deterministic on a loaded 2-core machine.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent


def with_recipe(cell, **changes):
    """The cell (grid.Cell) with its recipe changed, e.g. `with_recipe(cell, epochs=1, batch_size=32)`: a test's own
    training length (the id follows the recipe)."""
    from dataclasses import replace

    return replace(cell, recipe=replace(cell.recipe, **changes))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def digits(cache_dir: Path):
    from lossbench.data import load_dataset

    return load_dataset(DatasetConfig(name="digits"), cache_dir=cache_dir)


TINY_SUITE = """\
name: tiny
dataset:
  name: digits
  train_subset: 400
model:
  name: small_cnn
train:
  epochs: 2
  batch_size: 64
  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
  device: cpu
seeds: [0]
grid:
  loss: [cross_entropy, mse]
  regularizer: [none]
  augmentation: [none, crop]
"""


@pytest.fixture
def write_suite(tmp_path: Path) -> Callable[..., Path]:
    """Write a suite file (default: the tiny 2×1×2 digits suite) and return its path."""

    def write(text: str = TINY_SUITE, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli_env(cache_dir: Path) -> dict[str, str]:
    """Environment for running the real CLI in a subprocess."""
    env = dict(os.environ)
    env["LOSSBENCH_CACHE"] = str(cache_dir)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    return env


def run_and_kill_after(command: list[str], env: dict[str, str], finished: int, deadline_s: float = 240) -> int:
    """Start `lossbench run ... --plain` as its own process group, SIGKILL it once `finished` lines starting
    with `done:` have been printed (or after `deadline_s`, a bound for a stuck run, not a timing check), and return
    how many it printed."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    done_lines = 0
    deadline = time.monotonic() + deadline_s
    assert proc.stdout is not None
    for line in proc.stdout:
        done_lines += line.strip().startswith("done:")
        if done_lines == finished or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return done_lines


def errors_of(path: Path) -> list:
    """Every ConfigError that loading the suite at `path` raises (one pass reports them all)."""
    from lossbench.suite import load_suite
    from lossbench.errors import ConfigError, SuiteErrors

    with pytest.raises(ConfigError) as info:
        load_suite(path)
    exc = info.value
    return exc.errors if isinstance(exc, SuiteErrors) else [exc]


def one_error(path: Path):
    """The single ConfigError of the suite at `path` (fails when it has none or several)."""
    errs = errors_of(path)
    assert len(errs) == 1, [e.render() for e in errs]
    return errs[0]


@contextmanager
def no_hang(seconds: float) -> Iterator[None]:
    """Ends the test process with every thread's traceback if the block has not returned after `seconds`: for
    commands run in-process that a regression could block forever (reading a FIFO). A guard against a hang, not a
    speed bound."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
