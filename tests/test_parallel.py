"""`lossbench run --jobs N`: the process executor trains several cells at once and gives the same results as a
sequential run; each worker loads the data once; lost workers and Ctrl-C leave every finished cell saved."""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_SUITE
from lossbench import execution, runner
from lossbench.record import CellRecord
from lossbench.cli import app
from lossbench.suite import load_suite
from lossbench.data.request import DataRequest
from lossbench.errors import ConfigError
from lossbench.parallel import ProcessExecutor, WorkerSpec, _Session, _worker_main
from lossbench.progress import SilentDisplay

@pytest.fixture(autouse=True, scope="module")
def _stop_multiprocessing_helpers() -> Iterator[None]:
    """multiprocessing keeps its fork server and resource tracker for the life of the process; stop them after
    these tests, so that later tests in this process find no child processes of ours."""
    yield
    import multiprocessing.forkserver
    import multiprocessing.resource_tracker

    multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]
    multiprocessing.resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]


# Keys of a record that legitimately differ between two runs of the same cell.
_RUN_SPECIFIC = {"timing", "env", "started_at", "finished_at", "load"}


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in _RUN_SPECIFIC}
    out["history"] = [{k: v for k, v in h.items() if k not in ("epoch_s", "train_s", "eval_s")} for h in record["history"]]
    return out


def _plan(write_suite, cache_dir: Path, out: Path, text: str = TINY_SUITE) -> runner.RunPlan:
    return runner.plan(load_suite(write_suite(text)), out, cache_dir=cache_dir)


def test_parallel_run_matches_sequential_run(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    assert torch.get_num_threads() == 1  # conftest: the sequential run below trains each cell with one thread
    sequential = runner.run(_plan(write_suite, cache_dir, tmp_path / "seq"))
    parallel_plan = _plan(write_suite, cache_dir, tmp_path / "par")
    events: list[tuple[str, str]] = []

    class Recorder(SilentDisplay):
        def cell_event(self, cell, event: str, info: dict[str, Any]) -> None:
            events.append((cell.id, event))

    parallel = runner.run(parallel_plan, executor=ProcessExecutor(2, threads_per_job=1), display=Recorder())

    assert parallel.ran == sequential.ran == 4 and parallel.failed == 0
    seq = {r.id: r.to_dict() for r in sequential.records}
    par = {r.id: r.to_dict() for r in parallel.records}
    assert seq.keys() == par.keys()
    for cell_id, record in par.items():
        assert record["status"] == "done"
        assert record["env"]["threads"] == 1
        assert _comparable(record) == _comparable(seq[cell_id])  # bit for bit: metrics, history, confusion
    # The driver wrote every result: one file per cell and a row each in results.csv.
    out = tmp_path / "par"
    assert {p.stem for p in (out / "cells").glob("*.json")} == set(par)
    assert len((out / "results.csv").read_text().splitlines()) == 5
    # Progress is per epoch: a start and two epochs per cell, no step events.
    assert sorted(e for _, e in events) == sorted(["cell_start", "epoch", "epoch"] * 4)


def test_worker_loads_the_data_once_for_all_its_cells(write_suite, tmp_path: Path, cache_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan(write_suite, cache_dir, tmp_path / "out", TINY_SUITE.replace("epochs: 2", "epochs: 1"))
    loads = []
    real_load = DataRequest.load
    monkeypatch.setattr(DataRequest, "load", lambda self: loads.append(1) or real_load(self))
    tasks: queue.Queue = queue.Queue()
    messages: queue.Queue = queue.Queue()
    for index, cell in enumerate(plan.pending[:3]):
        tasks.put((index, cell, None))  # no saved training state
    tasks.put(None)
    previous = signal.getsignal(signal.SIGINT)
    try:
        _worker_main(WorkerSpec(slot=0, job=plan.job, threads=1), tasks, messages)  # in this process, to count
    finally:
        signal.signal(signal.SIGINT, previous)
        torch.set_num_threads(1)
    assert len(loads) == 1
    sent = [messages.get_nowait() for _ in range(messages.qsize())]
    assert [m[0] for m in sent] == ["start", "event", "event", "result"] * 3
    assert [m[2] for m in sent if m[0] == "result"] == [0, 1, 2]
    assert all(m[3].status == "done" for m in sent if m[0] == "result")


class _FakeProcess:
    def __init__(self) -> None:
        self.exitcode: int | None = None


def test_a_lost_worker_fails_only_its_cell(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    plan = _plan(write_suite, cache_dir, tmp_path / "out")
    cells = plan.pending
    workers = {0: _FakeProcess(), 1: _FakeProcess()}
    messages: queue.Queue = queue.Queue()
    results: dict[str, CellRecord] = {}
    started: list[str] = []
    session = _Session(cells, plan.job, workers, messages, lambda c: started.append(c.id),  # type: ignore[arg-type]
                       lambda *a: None, lambda c, r: results.__setitem__(c.id, r))
    session.handle(("start", 0, 0))
    session.handle(("start", 1, 1))
    done = CellRecord(cells[1].id, cells[1].label, cells[1].seed, "done", cells[1].axes)
    messages.put(("result", 1, 1, done))  # sent just before worker 1 exited
    workers[0].exitcode = -9  # killed while training cell 0
    workers[1].exitcode = 0
    session.check_workers()
    assert results[cells[1].id].status == "done"
    lost = results[cells[0].id]
    assert lost.status == "failed" and "killed by a signal" in lost.error and lost.id == cells[0].id
    # No worker left: the cells nobody started are recorded failed rather than waited for forever.
    assert set(results) == {c.id for c in cells} and not session.pending
    assert all("no worker process left" in results[c.id].error for c in cells[2:])


def test_a_worker_that_cannot_load_the_data_leaves_the_cells_to_the_others(write_suite, tmp_path: Path,
                                                                          cache_dir: Path) -> None:
    plan = _plan(write_suite, cache_dir, tmp_path / "out")
    workers = {0: _FakeProcess(), 1: _FakeProcess()}
    results: dict[str, CellRecord] = {}
    session = _Session(plan.pending, plan.job, workers, queue.Queue(), lambda c: None, lambda *a: None,  # type: ignore[arg-type]
                       lambda c, r: results.__setitem__(c.id, r))
    session.handle(("worker_failed", 0, "cannot load the data: MemoryError: ", "Traceback ..."))
    workers[0].exitcode = 0
    session.check_workers()
    assert not results  # worker 1 is alive and will train them
    workers[1].exitcode = -9
    session.check_workers()
    assert len(results) == 4 and all(r.status == "failed" for r in results.values())


def test_ctrl_c_keeps_finished_cells_and_stops_the_workers(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "out"
    plan = _plan(write_suite, cache_dir, out, TINY_SUITE.replace("epochs: 2", "epochs: 4"))
    workers: list[int] = []

    class CtrlC(SilentDisplay):
        def cell_end(self, cell, record: object) -> None:
            # A terminal sends SIGINT to the whole process group: the workers as well as this driver.
            workers.extend(p.pid for p in multiprocessing.active_children() if p.pid is not None)
            for pid in [*workers, os.getpid()]:
                os.kill(pid, signal.SIGINT)
            time.sleep(1)  # the interrupt arrives here, in the driver, while the workers go on

    # A test process started in the background by a shell without job control inherits SIGINT ignored; a terminal's
    # Ctrl-C reaches a foreground lossbench, whose Python turns it into KeyboardInterrupt.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.run(plan, executor=ProcessExecutor(2, threads_per_job=1), display=CtrlC())
    finally:
        signal.signal(signal.SIGINT, previous)

    saved = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert 1 <= len(saved) < 4 and all(r["status"] == "done" for r in saved)
    assert len((out / "results.csv").read_text().splitlines()) == len(saved) + 1
    assert workers and not multiprocessing.active_children()
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_jobs_option_is_checked() -> None:
    with pytest.raises(ConfigError, match="--jobs 0"):
        ProcessExecutor(0)
    assert ProcessExecutor(2, threads_per_job=3).describe() == "2 jobs × 3 torch threads"
    assert ProcessExecutor(2, threads_per_job=3).threads_for(2) == 3


def test_cli_rejects_jobs_with_ray_and_below_one(write_suite, tmp_path: Path) -> None:
    suite = str(write_suite())
    result = CliRunner().invoke(app, ["run", suite, "--jobs", "0", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--jobs 0" in result.output
    result = CliRunner().invoke(app, ["run", suite, "--jobs", "2", "--executor", "ray", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--jobs applies to the local executor" in result.output


def test_workers_share_one_gpu_or_spread_over_several(write_suite, tmp_path: Path, cache_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from lossbench.device import EngineOptions

    job = _plan(write_suite, cache_dir, tmp_path / "out").job
    cuda = EngineOptions(device=torch.device("cuda"), precision="bf16")
    monkeypatch.setattr(execution.EngineSettings, "options", lambda self: cuda)
    executor = ProcessExecutor(3, threads_per_job=2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert [s.device for s in executor.worker_specs(job, 3)] == [None, None, None]  # all on the one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    specs = executor.worker_specs(job, 3)
    assert [s.device for s in specs] == ["cuda:0", "cuda:1", "cuda:0"] and {s.threads for s in specs} == {2}


def test_workers_stay_for_every_round_of_a_run(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    """Adaptive seeding calls the executor once per round; the same two workers train every round."""
    text = TINY_SUITE.replace("epochs: 2", "epochs: 1").replace("train_subset: 400", "train_subset: 100")
    text = text.replace("seeds: [0]", "seeds: {min: 2, max: 3, target: {half_width: 0.0001}}")
    plan = _plan(write_suite, cache_dir, tmp_path / "out", text)
    rounds: list[int] = []

    class Rounds(SilentDisplay):
        def next_round(self, cells: int) -> None:
            rounds.append(cells)
            rounds.append(len(multiprocessing.active_children()))

    executor = ProcessExecutor(2, threads_per_job=1)
    summary = runner.run(plan, executor=executor, display=Rounds())
    assert summary.ran == 12 and summary.failed == 0  # 4 points × 3 seeds: round 1 seeds 0-1, round 2 seed 2
    assert rounds[0] == 4 and rounds[1] >= 2  # the workers are still alive between the rounds
    assert executor.workers_started == 2
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("lossbench-worker")]


def test_outside_a_with_block_each_call_has_its_own_workers(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    plan = _plan(write_suite, cache_dir, tmp_path / "out", TINY_SUITE.replace("epochs: 2", "epochs: 1"))
    executor = ProcessExecutor(1, threads_per_job=1)
    got: list[str] = []
    for cell in plan.pending[:2]:
        executor.run([cell], plan.job, lambda c: None, lambda *a: None, lambda c, r: got.append(r.status))
        assert not [p for p in multiprocessing.active_children() if p.name.startswith("lossbench-worker")]
    with executor:
        for cell in plan.pending[2:]:
            executor.run([cell], plan.job, lambda c: None, lambda *a: None, lambda c, r: got.append(r.status))
    assert got == ["done"] * 4 and executor.workers_started == 3
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("lossbench-worker")]
