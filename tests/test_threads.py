"""The thread policy: `auto` trains with one thread per idle core and survives a busy neighbour; fixed counts are
used as given; the choice and what it saw are recorded in every result; --threads and train.threads are checked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from conftest import TINY_SUITE
from lossbench import runner
from lossbench.suite import load_suite
from lossbench.errors import ConfigError
from lossbench.machine import usable_cores
from lossbench.threads import (
    ThreadChoice,
    busy_cores_of_others,
    choose_threads,
    parse_proc_stat,
    threads_for_idle_cores,
)

_STAT = """\
cpu  100 5 50 1000 20 3 2 1 0 0
cpu0 60 5 30 400 10 2 1 1 0 0
cpu1 40 0 20 600 10 1 1 0 0 0
intr 12345
"""


def test_proc_stat_sums_busy_and_total_jiffies_per_core_and_overall() -> None:
    # busy = user + nice + system + irq + softirq + steal; total adds idle + iowait.
    assert parse_proc_stat(_STAT) == (100 + 5 + 50 + 3 + 2 + 1, 161 + 1000 + 20)
    assert parse_proc_stat(_STAT, {0}) == (60 + 5 + 30 + 2 + 1 + 1, 99 + 400 + 10)
    assert parse_proc_stat(_STAT, {1}) == (40 + 20 + 1 + 1, 62 + 600 + 10)
    with pytest.raises(ValueError):
        parse_proc_stat(_STAT, {7})


@pytest.mark.parametrize(
    ("ceiling", "cores", "busy", "expected"),
    [
        (2, 2, 0.0, 2),    # idle machine: every core
        (2, 2, 0.3, 2),    # a little background work does not take a core
        (2, 2, 0.6, 1),    # a neighbour mostly on one core: leave it that core
        (2, 2, 1.0, 1),    # one busy-looping neighbour
        (2, 2, 7.0, 1),    # overloaded: never fewer than one
        (8, 16, 10.0, 6),  # 16 cores, 10 busy: the 6 idle ones
        (4, 16, 2.0, 4),   # a worker's share caps it
        (1, 2, 0.0, 1),    # OMP_NUM_THREADS=1 or --jobs 2 on 2 cores
    ],
)
def test_auto_takes_one_thread_per_idle_core(ceiling: int, cores: int, busy: float, expected: int) -> None:
    assert threads_for_idle_cores(ceiling, cores, busy) == expected


def _snapshots(busy_per_core: list[float], cores: set[int]) -> list[str]:
    """Two /proc/stat texts 10 ticks apart on every core, with the given busy fraction per core."""
    def text(t: int) -> str:
        lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
        for core in sorted(cores):
            busy = round(busy_per_core[core % len(busy_per_core)] * 10 * t)
            lines.append(f"cpu{core} {busy} 0 0 {10 * t - busy} 0 0 0 0 0 0")
        return "\n".join(lines) + "\n"
    return [text(0), text(1)]


def test_busy_cores_are_read_from_the_counters_of_this_process_cores() -> None:
    cores = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    texts = iter(_snapshots([1.0, 0.0], cores))
    seen = busy_cores_of_others(window_s=0.0, read_stat=lambda: next(texts))
    expected = sum(1.0 if core % 2 == 0 else 0.0 for core in cores)
    # window 0: this process's own CPU time in it is ~0, so all the busy time counts as others'.
    assert seen == pytest.approx(expected, abs=0.05)


def test_auto_off_the_cpu_keeps_the_ceiling_without_sampling() -> None:
    def never() -> float:
        raise AssertionError("a GPU cell must not wait to sample the CPU")

    choice = choose_threads("auto", share=2, busy_cores=never, on_cpu=False)
    assert choice == ThreadChoice(min(2, usable_cores()), "auto", min(2, usable_cores()), None)
    with pytest.raises(AssertionError):
        choose_threads("auto", share=2, busy_cores=never)  # on the CPU it samples


def test_choose_threads_fixed_and_auto() -> None:
    assert choose_threads(3) == ThreadChoice(3, "fixed", 3, None)
    busy = choose_threads("auto", share=2, busy_cores=lambda: 1.0)
    assert busy.policy == "auto" and busy.busy_cores == 1.0
    assert busy.threads == threads_for_idle_cores(min(2, usable_cores()), usable_cores(), 1.0)
    idle = choose_threads("auto", share=1, busy_cores=lambda: 0.0)
    assert idle.threads == 1 and idle.ceiling == 1


def test_every_record_says_its_threads_policy_and_the_busy_cores_it_saw(write_suite, tmp_path: Path,
                                                                        cache_dir: Path) -> None:
    assert torch.get_num_threads() == 1  # conftest; `auto` never goes above what torch was given
    fixed_suite = load_suite(write_suite(TINY_SUITE + "\n"), settings={"threads": 1})
    fixed = runner.run(runner.plan(fixed_suite, tmp_path / "fixed", cache_dir=cache_dir))
    auto = runner.run(runner.plan(load_suite(write_suite()), tmp_path / "auto", cache_dir=cache_dir))
    fixed_records = [r.to_dict() for r in fixed.records]
    auto_records = [r.to_dict() for r in auto.records]
    for record in fixed_records:
        env = record["env"]
        assert (env["threads"], env["thread_policy"], env["busy_cores_at_start"]) == (1, "fixed", None)
    for record in auto_records:
        env = record["env"]
        assert env["threads"] == 1 and env["thread_policy"] == "auto" and env["thread_ceiling"] == 1
        assert env["busy_cores_at_start"] >= 0.0
    # The thread policy is how a cell trains, not what it is: the same ids, the same metrics at equal threads.
    assert [r["id"] for r in fixed_records] == [r["id"] for r in auto_records]
    assert [r["metrics"] for r in fixed_records] == [r["metrics"] for r in auto_records]


def test_train_threads_in_a_suite_is_validated(write_suite) -> None:
    suite = load_suite(write_suite(TINY_SUITE.replace("  device: cpu\n", "  device: cpu\n  threads: 2\n")))
    assert suite.train.threads == 2
    assert load_suite(write_suite()).train.threads == "auto"
    with pytest.raises(ConfigError) as err:
        load_suite(write_suite(TINY_SUITE.replace("  device: cpu\n", "  device: cpu\n  threads: 0\n")))
    assert "train.threads" in err.value.render()


def test_threads_option_of_the_cli(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    from typer.testing import CliRunner

    from lossbench.cli import app

    # In this process: one thread is what the conftest gives torch here already.
    suite = write_suite()
    bad = CliRunner().invoke(app, ["run", str(suite), "--threads", "atuo", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2
    assert "--threads 'atuo'" in bad.output and "did you mean 'auto'" in bad.output
    assert not (tmp_path / "bad").exists()
    ok = CliRunner().invoke(app, ["run", str(suite), "--threads", "1", "--no-report", "--plain", "--out",
                                  str(tmp_path / "ok"), "--cache-dir", str(cache_dir)])
    assert ok.exit_code == 0, ok.output
    records = [json.loads(p.read_text()) for p in (tmp_path / "ok" / "cells").glob("*.json")]
    assert len(records) == 4 and {(r["env"]["threads"], r["env"]["thread_policy"]) for r in records} == {(1, "fixed")}
