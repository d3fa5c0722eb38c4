"""The machine's load around a cell: the figures come from the OS, each cell's record holds them (with the data
sizes it trained on), and `MachineLoad.overloaded` says when the load exceeded the cores."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lossbench import runner
from lossbench.config.dataset import DatasetConfig
from lossbench.machine import MachineSample, load_average_1m, load_block, usable_cores
from lossbench.record import MachineLoad
from lossbench.suite import load_suite

from conftest import TINY_SUITE


def test_load_average_and_cores_match_the_os() -> None:
    with open("/proc/loadavg") as f:  # the kernel's own figure, read another way
        kernel = float(f.read().split()[0])
    assert load_average_1m() == pytest.approx(kernel, abs=0.5)
    assert usable_cores() == len(os.sched_getaffinity(0)) >= 1


def test_cpu_time_grows_with_work() -> None:
    before = MachineSample.now()
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # busy for 50 ms of CPU time
        pass
    after = MachineSample.now()
    assert after.cpu_time_s - before.cpu_time_s >= 0.05


def test_overloaded_by_hand() -> None:
    block = load_block(MachineSample(1.5, 10.0, 2), MachineSample(3.25, 12.5, 2))
    assert block == {"cores": 2, "start_load_1m": 1.5, "start_cpu_time_s": 10.0, "end_load_1m": 3.25,
                     "end_cpu_time_s": 12.5}
    assert MachineLoad.from_dict(block).overloaded() == 3.25
    at_the_cores = load_block(MachineSample(1.5, 0, 2), MachineSample(2.0, 1, 2))
    assert MachineLoad.from_dict(at_the_cores).overloaded() is None
    assert MachineLoad.from_dict(load_block(MachineSample(None, 0, 2), MachineSample(None, 1, 2))).overloaded() is None
    assert MachineLoad().overloaded() is None


def test_each_record_holds_load_cpu_time_cores_and_data_sizes(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    suite = load_suite(write_suite(TINY_SUITE))
    summary = runner.run(runner.plan(suite, tmp_path / "out", cache_dir=cache_dir))
    assert summary.ran == 4
    for record in summary.records:
        load = record.load
        assert load.cores == usable_cores()
        assert load.start_load_1m >= 0 and load.end_load_1m >= 0
        assert load.end_cpu_time_s > load.start_cpu_time_s  # the cell trained in this process
        # digits: 8×8 grayscale in 10 classes; the tiny suite takes 400 training images; sklearn's split keeps
        # the rest of the 1,797 for testing.
        data = record.data
        assert data.classes == 10 and data.image_size == [1, 8, 8]
        assert data.train == 400 and data.val == 0
        from lossbench.data import load_dataset

        full = load_dataset(DatasetConfig(name="digits"), cache_dir=cache_dir)
        assert data.test == full.test_x.shape[0]
