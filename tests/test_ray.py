"""The Ray executor on a real single-machine Ray cluster bound to 127.0.0.1 (one cluster shared by the module).

Checked against the local executor: same results.csv rows for the same seeds, resume, a killed worker's cell
retried and written once, failures recorded with their tracebacks, and the CLI flags.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from lossbench import execution, runner
from lossbench.cli import app
from lossbench.suite import load_suite
from lossbench.grid import Cell, ResolvedComponent
from lossbench.progress import SilentDisplay
from lossbench.ray_executor import KILL_ONCE_ENV, RayExecutor
from lossbench.record import CellRecord
from lossbench.results_csv import MACHINE_COLUMNS

SUITE = """\
name: tiny-ray
dataset:
  name: digits
  train_subset: 300
  test_subset: 150
model:
  name: tutorial_cnn
train:
  epochs: 2
  batch_size: 32
  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
  device: cpu
seeds: [0]
grid:
  loss: [cross_entropy, {name: mse, over: probabilities}]
"""
# Columns that measure the machine rather than the training (they differ between any two runs).
TIMING_COLUMNS = set(MACHINE_COLUMNS)

# Keeps every address of the test cluster on the loopback interface, and Ray's network features off.
RAY_TEST_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # single-machine mode: Ray binds 127.0.0.1 instead of the host IP
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A 2-CPU Ray instance on 127.0.0.1 whose workers may be asked to die once (KILL_ONCE_ENV)."""
    marker_dir = tmp_path_factory.mktemp("ray-kill")
    patch = pytest.MonkeyPatch()
    for key, value in {**RAY_TEST_ENV, KILL_ONCE_ENV: str(marker_dir / "kill-once")}.items():
        patch.setenv(key, value)
    import ray
    import ray._private.ray_constants as ray_constants

    # Read when ray is first imported; set here too in case another test imported it earlier.
    patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False, raising=False)
    patch.setattr(ray_constants, "RAY_ENABLE_UV_RUN_RUNTIME_ENV", False, raising=False)
    # A short private directory: Ray's socket paths must stay under ~100 characters.
    temp_dir = tempfile.mkdtemp(prefix="lbray-", dir="/tmp")
    _init_ray(ray, temp_dir)
    try:
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        yield ray, marker_dir / "kill-once"
    finally:
        started = _descendants(os.getpid())  # Ray's daemons, their workers and agents
        ray.shutdown()
        patch.undo()
        deadline = time.monotonic() + _SLOW_MACHINE_S
        while (left := [p for p in started if _alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"processes left after ray.shutdown(): {left}"


# How long a check waits for Ray to settle (processes gone, CPUs free) before it fails. Generous because on a busy
# machine Ray's daemons take seconds to run; the checks still fail when the thing never happens.
_SLOW_MACHINE_S = 60.0


def _init_ray(ray: Any, temp_dir: str, attempts: int = 3) -> None:
    """ray.init for the tests, tried again when Ray's node does not come up within its fixed 30 s.

    Ray gives its raylet a hard-coded 30 s to register; on a machine busy with other work it sometimes needs more
    ("The current node timed out during startup"). That says nothing about lossbench, so the fixture retries.
    """
    for attempt in range(attempts):
        try:
            ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", _temp_dir=temp_dir,
                     object_store_memory=100 * 1024**2, logging_level="warning", log_to_driver=False)
            return
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == attempts - 1:
                raise
            ray.shutdown()


def _proc_stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, from /proc; None once it is gone (or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[1]), fields[19]) if fields[0] != "Z" else None


def _descendants(root: int) -> list[tuple[int, str]]:
    """(pid, start time) of every live process below `root` (Linux /proc)."""
    stats = {int(p.name): _proc_stat(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    parents = {pid: stat for pid, stat in stats.items() if stat is not None}
    found, frontier = [], {root}
    while frontier:
        children = {pid for pid, (ppid, _) in parents.items() if ppid in frontier}
        found += [(pid, parents[pid][1]) for pid in children]
        frontier = children
    return found


def _alive(process: tuple[int, str]) -> bool:
    stat = _proc_stat(process[0])
    return stat is not None and stat[1] == process[1]  # the same process, not a later one with its pid


class Recorder(SilentDisplay):
    """A run display that keeps every call, to check what the driver reported and when."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.events: list[tuple[str, str]] = []
        self.ended: list[str] = []
        self.records: dict[str, dict[str, Any]] = {}

    def cell_start(self, cell: Cell) -> None:
        self.started.append(cell.id)

    def cell_event(self, cell: Cell, event: str, info: dict[str, Any]) -> None:
        assert cell.id in self.started and cell.id not in self.ended
        self.events.append((cell.id, event))

    def cell_end(self, cell: Cell, record: CellRecord) -> None:
        self.ended.append(cell.id)
        self.records[cell.id] = record.to_dict()

    def run(self, executor: RayExecutor, cells: list[Cell], job: execution.Job) -> None:
        """Drive `executor` directly, as runner.run does, without a results directory."""
        executor.run(cells, job, self.cell_start, self.cell_event, self.cell_end)


def _rows(out_dir: Path) -> list[dict[str, str]]:
    with open(out_dir / "results.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "tiny.yaml"
    path.write_text(SUITE)
    return path


@pytest.fixture(scope="module")
def local_run(suite_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite through the local executor, with the one torch thread that a 1-CPU Ray cell trains with."""
    out = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = runner.run(runner.plan(load_suite(suite_file), out))
    finally:
        torch.set_num_threads(threads)
    assert summary.ran == 2 and summary.failed == 0
    return out


@pytest.fixture(scope="module")
def ray_run(cluster: Any, suite_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Recorder]:
    out = tmp_path_factory.mktemp("ray")
    display = Recorder()
    summary = runner.run(runner.plan(load_suite(suite_file), out, check_device=False),
                         executor=RayExecutor(cpus_per_cell=1), display=display)
    assert summary.ran == 2 and summary.failed == 0
    return out, display


def test_ray_gives_the_rows_of_the_local_executor(local_run: Path, ray_run: tuple[Path, Recorder]) -> None:
    out, display = ray_run
    local, remote = _rows(local_run), _rows(out)
    assert len(remote) == 2
    assert remote == local  # every metric to the last digit, ids, labels, statuses
    # Each cell was shown once: started, its epochs streamed back from the worker, then ended.
    assert sorted(display.started) == sorted(display.ended) == sorted(r["id"] for r in local)
    for cell_id in display.ended:
        kinds = Counter(event for cid, event in display.events if cid == cell_id)
        assert kinds["cell_start"] == 1 and kinds["epoch"] == 2
    # The record came from a worker process, not from the driver.
    assert all(r["env"]["device"] == "cpu" for r in display.records.values())


def test_a_killed_worker_is_retried_and_its_cell_written_once(cluster: Any, suite_file: Path,
                                                              local_run: Path) -> None:
    _, marker = cluster
    plan = runner.plan(load_suite(suite_file), Path("unused"), check_device=False)
    cell = plan.cells[0]
    marker.touch()  # the first worker to reach the end of an epoch deletes it and dies
    display = Recorder()
    display.run(RayExecutor(max_retries=1), [cell], plan.job)
    assert not marker.exists(), "no worker died: the retry was not exercised"
    assert display.ended == [cell.id] and display.started == [cell.id]
    # The dead attempt had begun (its first epoch was reported); the retry trained the cell from the start.
    assert Counter(e for _, e in display.events)["cell_start"] == 2
    record = display.records[cell.id]
    assert record["status"] == "done"
    expected = runner.ResultsStore(local_run).read_cell(cell.id)
    assert record["metrics"]["test_acc"] == expected.metrics.test_acc
    assert record["metrics"]["test_nll"] == expected.metrics.test_nll


def test_checkpoints_travel_between_ray_workers_and_the_driver(cluster: Any, suite_file: Path, local_run: Path,
                                                              tmp_path: Path) -> None:
    """A saved training state goes from the driver's results directory to the worker, which resumes the cell from
    it; the states and final weights a worker produces come back and are written by the driver."""
    from lossbench.checkpoint import load_final, load_training, resume_path

    suite = load_suite(suite_file, ["train.checkpoint.every=1", "train.checkpoint.keep=last"])
    out = tmp_path / "out"
    with runner.ResultsStore(out):  # a results directory of an earlier run, killed after the first epoch of a cell
        pass
    plan = runner.plan(suite, out, check_device=False)
    cell = plan.cells[0]
    states: list[bytes] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a 1-CPU Ray cell trains
    try:
        execution.train_cell(cell, plan.job.data.load(), plan.job.engine.options(),
                             lambda event, info: states.append(info["state"]) if event == "checkpoint" else None,
                             checkpoint=plan.job.engine.checkpoint)
    finally:
        torch.set_num_threads(threads)
    resume_path(out, cell.id).parent.mkdir()
    resume_path(out, cell.id).write_bytes(states[0])  # the state after epoch 1 of 2

    summary = runner.run(plan, executor=RayExecutor(cpus_per_cell=1), display=Recorder())
    assert summary.ran == 2 and summary.failed == 0
    local = runner.ResultsStore(local_run)
    for record in runner.ResultsStore(out).records():
        expected = local.read_cell(record.id)
        assert record.metrics.test_acc == expected.metrics.test_acc
        assert record.metrics.test_nll == expected.metrics.test_nll
        assert [h.train_loss for h in record.history] == [h.train_loss for h in expected.history]
        assert record.timing.resumed_after_epoch == (1 if record.id == cell.id else None)
        # keep: last — the state after the last epoch, sent by the worker, written by the driver
        assert load_training(resume_path(out, record.id).read_bytes(), "state")["epoch"] == 2
        assert load_final(out / "checkpoints" / f"{record.id}.pt")["epoch"] == 2


def test_a_retried_task_continues_from_the_state_its_lost_worker_sent(cluster: Any, suite_file: Path,
                                                                     local_run: Path, tmp_path: Path) -> None:
    _, marker = cluster
    out = tmp_path / "out"
    plan = runner.plan(load_suite(suite_file, ["train.checkpoint.every=1"]), out, check_device=False)
    plan.pending = plan.pending[:1]
    marker.touch()  # the first worker to end an epoch deletes it and dies, after sending that epoch's state
    summary = runner.run(plan, executor=RayExecutor(cpus_per_cell=1, max_retries=1), display=Recorder())
    assert not marker.exists(), "no worker died: the retry was not exercised"
    assert summary.ran == 1 and summary.failed == 0
    record = runner.ResultsStore(out).read_cell(plan.pending[0].id)
    expected = runner.ResultsStore(local_run).read_cell(record.id)
    assert record.timing.resumed_after_epoch == 1
    assert record.metrics.test_acc == expected.metrics.test_acc
    assert record.metrics.test_nll == expected.metrics.test_nll


def test_failures_are_recorded_with_tracebacks_and_the_rest_go_on(cluster: Any, suite_file: Path) -> None:
    _, marker = cluster
    plan = runner.plan(load_suite(suite_file), Path("unused"), check_device=False)
    # An exception inside training: the engine turns it into a failed record on the worker.
    broken = dataclasses.replace(plan.cells[0], loss=ResolvedComponent("no_such_loss", {}))
    display = Recorder()
    marker.touch()
    # No retries: the worker that dies takes its cell with it, and Ray's error becomes the record.
    display.run(RayExecutor(max_retries=0), [broken, *plan.cells], plan.job)
    assert not marker.exists()
    assert sorted(display.ended) == sorted([broken.id, *(c.id for c in plan.cells)])
    records = display.records
    failed = {cid for cid, r in records.items() if r["status"] == "failed"}
    assert broken.id in failed and "no_such_loss" in records[broken.id]["traceback"]
    # Which of the two trainable cells reached an epoch end first and died is up to the scheduler.
    assert len(failed) == 2
    died = (failed - {broken.id}).pop()
    assert records[died]["error"].startswith("WorkerCrashedError"), records[died]["error"]
    assert "died" in records[died]["traceback"]
    survivor = ({c.id for c in plan.cells} - {died}).pop()
    assert records[survivor]["status"] == "done"


def test_data_that_cannot_be_loaded_on_the_workers_fails_every_cell(cluster: Any, suite_file: Path,
                                                                    tmp_path: Path) -> None:
    plan = runner.plan(load_suite(suite_file), Path("unused"), check_device=False)
    missing = tmp_path / "not-here.tar.gz"
    dataset = plan.job.data.dataset.model_copy(update={"name": "cifar10", "root": str(missing)})
    job = dataclasses.replace(plan.job, data=dataclasses.replace(plan.job.data, dataset=dataset))
    display = Recorder()
    display.run(RayExecutor(data="worker_cache"), plan.cells[:2], job)
    assert len(display.records) == 2
    for record in display.records.values():
        assert record["status"] == "failed"
        assert record["error"].startswith("DataError") and "not-here.tar.gz" in record["traceback"]


def test_cli_runs_on_ray_and_resumes(cluster: Any, suite_file: Path, local_run: Path,
                                     ray_run: tuple[Path, Recorder], tmp_path: Path) -> None:
    # A run that was interrupted after one cell: the other cell's file is missing.
    out = tmp_path / "cli"
    shutil.copytree(ray_run[0], out)
    gone, kept = sorted((out / "cells").glob("*.json"))
    kept_bytes = kept.read_bytes()
    gone.unlink()
    args = ["run", str(suite_file), "--out", str(out), "--executor", "ray", "--cpus-per-cell", "1", "--plain",
            "--no-report"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "Ray (" in first.output and "ran 1, skipped 1" in first.output
    assert f"({gone.stem})" in first.output and f"({kept.stem})" not in first.output
    assert kept.read_bytes() == kept_bytes
    assert _rows(out) == _rows(local_run)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "ran 0, skipped 2" in again.output


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--executor", "ray", "--gpus-per-cell", "0.5"], "no node of the Ray cluster can run a cell"),
        (["--executor", "ray", "--cpus-per-cell", "0"], "--cpus-per-cell 0.0: must be a number above 0"),
        (["--executor", "ray", "--gpus-per-cell", "1.5"], "above 1 it must be a whole number"),
        (["--executor", "ray", "--address", "head-node"], "expected auto, ray://HOST:PORT"),
        (["--executor", "ray", "--device", "cuda"], "--gpus-per-cell is 0"),
        (["--executor", "rya"], "did you mean 'ray'"),
        (["--gpus-per-cell", "1"], "--gpus-per-cell only apply with --executor ray"),
    ],
)
def test_cli_rejects_bad_cluster_options(cluster: Any, suite_file: Path, tmp_path: Path, flags: list[str],
                                         message: str) -> None:
    result = CliRunner().invoke(app, ["run", str(suite_file), "--out", str(tmp_path / "x"), *flags])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_cli_without_ray_says_how_to_install_it(suite_file: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    result = CliRunner().invoke(app, ["run", str(suite_file), "--out", str(tmp_path / "x"), "--executor", "ray"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "uv sync --extra ray" in text and 'pip install "lossbench[ray]"' in text
    assert not (tmp_path / "x").exists()


def test_an_interrupt_keeps_finished_cells_and_cancels_the_others(cluster: Any, suite_file: Path,
                                                                  tmp_path: Path) -> None:
    ray, _ = cluster

    class Interrupted(Recorder):
        def cell_end(self, cell: Cell, record: CellRecord) -> None:
            super().cell_end(cell, record)
            raise KeyboardInterrupt  # Ctrl-C right after the first result was written

    out = tmp_path / "interrupted"
    display = Interrupted()
    with pytest.raises(KeyboardInterrupt):
        runner.run(runner.plan(load_suite(suite_file), out, check_device=False), executor=RayExecutor(),
                   display=display)
    assert [p.stem for p in (out / "cells").glob("*.json")] == display.ended
    # The other cell's task was cancelled: soon nothing holds the cluster's CPUs.
    deadline = time.monotonic() + _SLOW_MACHINE_S
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray.available_resources().get("CPU", 0) == 2
    resumed = runner.plan(load_suite(suite_file), out, check_device=False)
    assert [c.id for c in resumed.pending] == [c.id for c in resumed.cells if c.id not in display.ended]


def test_adaptive_seeding_rounds_run_on_ray(cluster: Any, suite_file: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Each round of adaptive seeding is one executor call; with a target no run reaches, both cells go to
    max: round 1 trains seeds 0 and 1 of both, round 2 seed 2 of both (the baseline keeps pace)."""
    adaptive = tmp_path / "adaptive.yaml"
    adaptive.write_text(SUITE.replace("seeds: [0]", "seeds: {min: 2, max: 3, target: {half_width: 0.001}}"))

    class Rounds(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.rounds = [0]

        def next_round(self, cells: int) -> None:
            self.rounds.append(len(self.ended))

    display = Rounds()
    out = tmp_path / "adaptive"
    import ray

    executor = RayExecutor()
    puts, real_put = [], ray.put
    monkeypatch.setattr(ray, "put", lambda value, **kw: puts.append(1) or real_put(value, **kw))
    summary = runner.run(runner.plan(load_suite(adaptive), out, check_device=False), executor=executor,
                         display=display)
    assert summary.ran == 6 and summary.failed == 0
    assert display.rounds == [0, 4]
    assert len(puts) == 1  # the dataset went into the object store once, for both rounds
    assert executor._sink is None and executor._data_refs is None  # let go when the run ended
    assert sorted((r.label, r.seed) for r in summary.records) == sorted(
        (label, s) for label in ("cross_entropy | none | none", "mse(over=probabilities) | none | none")
        for s in (0, 1, 2))
    assert runner.plan(load_suite(adaptive), out, check_device=False).pending == []


def test_one_connection_serves_every_call_inside_a_with_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adaptive rounds and tuning trials call `run` many times: Ray is started (or connected to) once for them
    all when the executor is held with `with`, and once per call otherwise."""
    calls: list[str] = []

    class FakeRay:
        initialized = False

        def is_initialized(self) -> bool:
            return self.initialized

        def init(self, **kwargs: Any) -> None:
            calls.append("init")
            self.initialized = True

        def shutdown(self) -> None:
            calls.append("shutdown")
            self.initialized = False

    executor = RayExecutor()
    monkeypatch.setattr(executor, "_ray", FakeRay())
    monkeypatch.setattr(executor, "_check_fits", lambda: None)
    monkeypatch.setattr(executor, "_run", lambda *args: calls.append("run"))
    from types import SimpleNamespace

    job = SimpleNamespace(engine=SimpleNamespace(device="cpu"))  # all that run() reads before _run
    for _ in range(2):
        executor.run([], job, lambda c: None, lambda *a: None, lambda c, r: None)  # type: ignore[arg-type]
    assert calls == ["init", "run", "shutdown"] * 2
    calls.clear()
    with executor:
        for _ in range(3):
            executor.run([], job, lambda c: None, lambda *a: None, lambda c, r: None)  # type: ignore[arg-type]
        assert calls == ["init", "run", "run", "run"]
    assert calls[-1] == "shutdown"


TUNED_SUITE = SUITE.replace("  test_subset: 150\n", "  test_subset: 150\n  val_fraction: 0.25\n").replace(
    "seeds: [0]", "seeds: [0]\ntune:\n  trials: 2\n  pruner: none\n  space:\n"
                  "    train.optimizer.lr: {low: 1.0e-2, high: 0.3, log: true}")


def test_tuning_runs_on_ray_without_a_pruner(cluster: Any, tmp_path: Path) -> None:
    """Trials are cells for Ray like any other: every cell gets its budget, then its verdict."""
    suite = tmp_path / "tuned.yaml"
    suite.write_text(TUNED_SUITE)
    out = tmp_path / "tuned"
    summary = runner.run(runner.plan(load_suite(suite), out, check_device=False), executor=RayExecutor())
    assert summary.trials == 4 and summary.ran == 2 and summary.failed == 0
    rows = list(csv.DictReader(open(out / "tuning.csv", newline="")))
    assert Counter(r["cell"] for r in rows) == {"cross_entropy | none | none": 2,
                                                "mse(over=probabilities) | none | none": 2}
    assert all(r["state"] == "complete" for r in rows)
    assert all("tuned" in r.config for r in summary.records)


def test_cli_refuses_a_pruner_on_ray(tmp_path: Path) -> None:
    suite = tmp_path / "pruned.yaml"
    suite.write_text(TUNED_SUITE.replace("pruner: none", "pruner: hyperband"))
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(tmp_path / "x"), "--executor", "ray"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "tune.pruner hyperband" in text and "pruner: none" in text and "pruned.yaml" in text
    assert not (tmp_path / "x").exists()
