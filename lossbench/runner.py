"""Which cells still need running, where, and how: turns a validated suite into result files.

`plan()` expands the grid and finds the cells without a final result; an executor trains them and hands each
record back as it finishes; the runner writes it at once (so a killed run loses only the cells in flight) and
adds its row to results.csv, at the same cost for the first cell as for the 100,000th: the directory is read once,
when the run is planned, and everything after works from memory. Executors are interchangeable: `LocalExecutor`
trains one cell after another in this process; others run several at once. All of them call `execute_cell`, the same pure function.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import platform
import socket
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lossbench import __version__
from lossbench.checkpoint import (
    CheckpointError, CheckpointPolicy, checkpoint_path, final_payload, load_training, read_resume, resume_path,
    to_bytes,
)
from lossbench.components import build_cell
from lossbench.config import Suite, suite_to_yaml
from lossbench.data import ImageData, dataset_identity, load_dataset
from lossbench.data.cache import DEFAULT_CACHE
from lossbench.device import resolve_device, resolve_precision
from lossbench.engine import CellResult, EngineOptions, ProgressFn, train
from lossbench.errors import ConfigError, DataError, ForeignDirectoryError, Location, ResultsWriteError
from lossbench.grid import Cell, expand
from lossbench.machine import MachineSample, load_block
from lossbench.progress import RunDisplay, SilentDisplay
from lossbench.record import CellRecord
from lossbench.shift.evaluate import ShiftPlan
from lossbench.store import ResultsStore, atomic_write_bytes, check_results_dir, write_error
from lossbench.threads import ThreadChoice, ThreadSetting, apply_threads, choose_threads

if TYPE_CHECKING:
    from lossbench.seed_rounds import SeedRounds


@dataclass(frozen=True)
class DataRequest:
    """Everything needed to load the suite's dataset in any process (picklable)."""

    name: str
    root: str | None
    download: bool
    train_subset: int | float | None
    test_subset: int | float | None
    val_fraction: float
    image_size: int | None
    cache_dir: str
    #: The source's own parameters (emnist's split, svhn's extra) as sorted (name, value) pairs.
    source_params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_suite(cls, suite: Suite, cache_dir: Path) -> DataRequest:
        d = suite.dataset
        return cls(d.name, d.root, d.download, d.train_subset, d.test_subset, d.val_fraction, d.image_size,
                   str(cache_dir), tuple(sorted(d.source_params.items())))

    def load(self) -> ImageData:
        return load_dataset(
            self.name, self.root, cache_dir=Path(self.cache_dir), download=self.download,
            train_subset=self.train_subset, test_subset=self.test_subset, val_fraction=self.val_fraction,
            image_size=self.image_size, source_params=dict(self.source_params),
        )

    def identity(self) -> str:
        """The dataset identity that enters cell ids, including every option that changes the tensors."""
        return dataset_identity(
            self.name, self.root, train_subset=self.train_subset, test_subset=self.test_subset,
            val_fraction=self.val_fraction, image_size=self.image_size, source_params=dict(self.source_params),
        )


@dataclass(frozen=True)
class EngineSettings:
    """The suite's training recipe as the engine needs it, with the device still as requested (picklable)."""

    device: str
    precision: str
    epochs: int
    batch_size: int
    eval_batch_size: int
    compile: bool = False
    #: torch threads per cell on the CPU: `auto` or a whole number (lossbench/threads.py).
    threads: ThreadSetting = "auto"
    #: Cells trained together as one batched model (lossbench/packing.py); 1 trains one cell at a time.
    pack: int = 1
    #: What each cell saves (train.checkpoint).
    checkpoint: CheckpointPolicy = CheckpointPolicy()
    #: Evaluate on the test split every this many epochs, and after the last one.
    eval_every: int = 1

    @classmethod
    def from_suite(cls, suite: Suite) -> EngineSettings:
        t = suite.train
        return cls(t.device, t.precision, t.epochs, t.batch_size, t.eval_batch_size, t.compile, t.threads, t.pack,
                   CheckpointPolicy(t.checkpoint.every, t.checkpoint.keep), t.eval_every)

    def options(self) -> EngineOptions:
        device = resolve_device(self.device)
        return EngineOptions(
            device=device,
            precision=resolve_precision(self.precision, device),
            epochs=self.epochs,
            batch_size=self.batch_size,
            eval_batch_size=self.eval_batch_size,
            # Measured faster on CPU as well (docs/performance.md); MPS is left in the default layout.
            channels_last=device.type in ("cuda", "cpu"),
            compile=self.compile,
            eval_every=self.eval_every,
            checkpoint=self.checkpoint,
        )


@dataclass(frozen=True)
class Job:
    """What every executor needs to train any cell of one suite."""

    suite_name: str
    data: DataRequest
    engine: EngineSettings
    #: The suite's `evaluate:` block, scored on each cell's model right after training (None: no such block).
    evaluate: ShiftPlan | None = None
    #: The results directory, where the driver reads and writes checkpoints (checkpoint.py); None: nowhere.
    results_dir: str | None = None


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and hardware, recorded in every result file."""
    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "lossbench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": device.type,
        "device_name": name,
        "threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "git_commit": project_commit(),
    }


@functools.cache  # the processor does not change while a process runs
def cpu_name() -> str:
    """The processor's model name where the OS tells it (Linux /proc/cpuinfo), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache  # a git subprocess per cell would cost tens of milliseconds each
def project_commit() -> str | None:
    """The git commit of the lossbench checkout in use, when it runs from one: the commit when this process first
    asked, which is the code it imported."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def train_cell(cell: Cell, data: ImageData, options: EngineOptions, progress: ProgressFn | None = None,
               shift: ShiftPlan | None = None, resume: bytes | None = None) -> CellResult:
    """Build and train one cell, then score `shift` (the suite's `evaluate:` block) on the trained model. An
    exception (while building or training) becomes a `failed` result.

    `sys.exit()` in a user's loss or component is an exception of its cell too: only Ctrl-C stops the grid.
    `resume` is the cell's saved training state (checkpoint.py): the cell continues from it. The training states
    that `options.checkpoint` asks for are sent as `checkpoint` events, {"epoch": N, "state": file bytes}, for
    the process that writes the results directory.
    """
    report = progress or (lambda event, info: None)

    def save_state(state: dict[str, Any]) -> None:
        state["config"] = cell.config
        report("checkpoint", {"epoch": state["epoch"], "state": to_bytes(state)})

    try:
        should_stop = None
        if cell.trial is not None or "tuned" in cell.config:
            # A tuned cell or a trial carries its own recipe: its batch size may be a tuned value.
            recipe = cell.config["train"]
            options = replace(options, epochs=recipe["epochs"], batch_size=recipe["batch_size"])
        if cell.trial is not None:
            from lossbench.tune import epoch_reporter

            # A tuning trial: validation only (the test split is never read), a report to its study each epoch,
            # and no scoring under shift.
            options, shift = replace(options, evaluate_test=False), None
            should_stop = epoch_reporter(cell.trial)
        parts = build_cell(cell, data, options)
        state, unusable = None, None
        if resume is not None and cell.trial is None:
            try:
                state = load_training(resume, "its saved training state")
            except CheckpointError as exc:  # damaged, or of another layout: the cell starts over instead
                unusable = exc.message
        result = train(parts, cell.loss.name, options, report, should_stop, state,
                       save_state if cell.trial is None else None)
        if unusable is not None:
            result.notes.append(f"trained from its first epoch: {unusable}")
        if state is not None:
            # The timings of a resumed cell add up the runs that trained it.
            result.timing["resumed_after_epoch"] = state["epoch"]
        if shift is not None and result.status == "done":
            from lossbench.shift.evaluate import score_into

            score_into(result.metrics, result.notes, shift, parts.model, parts.loss, data, options)
        return result
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        return CellResult(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())


def execute_cell(
    cell: Cell, job: Job, data: ImageData, options: EngineOptions,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
    threads: ThreadChoice | None = None,
    resume: bytes | None = None,
) -> CellRecord:
    """Train one cell on data already on `options.device`; returns its complete result record.

    `resume`: the cell's saved training state (checkpoint.read_resume), to continue from; see train_cell.

    `threads`, when given, is applied to torch before the cell and recorded with it (thread count, policy, ceiling
    and the busy cores it saw); without it the cell trains with torch's current thread count."""
    started, before, t0 = _now(), MachineSample.now(), time.perf_counter()
    if threads is not None:
        apply_threads(threads)
    result = train_cell(cell, data, options, progress, job.evaluate, resume)
    record = _record(cell, job, result, options.precision, _trained_env(options, threads), started)
    if job.evaluate is not None:
        from lossbench.shift.evaluate import stamp_checkpoint

        stamp_checkpoint(record.metrics, record.weights)
    record.load = load_block(before, MachineSample.now())
    add_wall_time(record, time.perf_counter() - t0)
    return record


def _final_weights(cell: Cell, job: Job, result: CellResult) -> bytes | None:
    """The bytes of the cell's final-weights file, when the cell finished and the suite keeps its weights."""
    if result.weights is None or not job.engine.checkpoint.saves_final or cell.trial is not None:
        return None  # a tuning trial's weights are not kept: only its verdict cell's
    return to_bytes(final_payload(result.weights["model"], result.weights["loss"], cell.config, len(result.history)))


def add_wall_time(record: CellRecord, seconds: float, pack_size: int = 1) -> None:
    """Record the cell's share of the wall time (`cell_s`) and its overhead (`overhead_s`: building the model,
    loss and optimizer, choosing threads, the record itself: whatever is neither training nor evaluation).

    A pack's cells share its training time and overhead: each gets 1/`pack_size` of them and its own evaluation,
    so the cell_s of a pack's cells add up to the pack's wall time. Seconds throughout."""
    timing = record.timing
    train = float(timing.get("train_time_s") or 0.0)
    evaluation = float(timing.get("eval_time_s") or 0.0)
    timing["overhead_s"] = max(seconds - train - evaluation, 0.0) / pack_size
    timing["cell_s"] = train / pack_size + evaluation + timing["overhead_s"]


def _trained_env(options: EngineOptions, threads: ThreadChoice | None) -> dict[str, Any]:
    """The environment block of a record: versions and device, plus the thread choice the cell trained with."""
    env = environment(options.device)
    if threads is not None:
        env.update(threads.as_env())
    return env


def execute_pack(
    cells: list[Cell], job: Job, data: ImageData, options: EngineOptions,
    progress: list[Callable[[str, dict[str, Any]], None]], threads: ThreadChoice | None = None,
) -> list[CellRecord]:
    """Train `cells` together as one batched model (lossbench/packing.py); one complete record per cell."""
    from lossbench.packing import train_pack

    started, before, t0 = _now(), MachineSample.now(), time.perf_counter()
    if threads is not None:
        apply_threads(threads)
    results = train_pack(cells, data, options, progress)
    env = _trained_env(options, threads)
    env["pack_size"] = len(cells)
    load = load_block(before, MachineSample.now())  # the pack's, shared by its cells like its timing
    records = [_record(cell, job, result, options.precision, dict(env), started)
               for cell, result in zip(cells, results)]
    # The pack's time that is neither its (shared) training nor any cell's own evaluation, shared equally.
    shared = time.perf_counter() - t0 - sum(float(r.timing.get("eval_time_s") or 0.0) for r in records)
    for record in records:
        record.load = dict(load)
        add_wall_time(record, shared + float(record.timing.get("eval_time_s") or 0.0), len(records))
    return records


def failed_record(cell: Cell, job: Job, error: str, traceback_text: str) -> CellRecord:
    """The record of a cell that failed outside the engine (an executor lost it or could not start it)."""
    return _record(cell, job, CellResult(status="failed", error=error, traceback=traceback_text),
                   job.engine.precision, {}, _now())


def _record(cell: Cell, job: Job, result: CellResult, precision: str, env: dict[str, Any],
            started: str) -> CellRecord:
    return CellRecord(
        id=cell.id,
        label=cell.label,
        suite=job.suite_name,
        seed=cell.seed,
        axes=cell.axes,
        config=cell.config,
        status=result.status,
        diverged_epoch=result.diverged_epoch,
        error=result.error,
        traceback=result.traceback,
        notes=result.notes,
        metrics=result.metrics,
        history=[asdict(h) for h in result.history],
        weights=_final_weights(cell, job, result),
        timing=result.timing,
        data=result.data,
        precision=precision,
        env=env,
        started_at=started,
        finished_at=_now(),
    )


OnEvent = Callable[[Cell, str, dict[str, Any]], None]
OnResult = Callable[[Cell, CellRecord], None]


class LocalExecutor:
    """Trains the cells one after another in this process, on the dataset loaded once; with `train.pack` N > 1,
    cells that share a model train N at a time as one batched model (lossbench/packing.py)."""

    def __init__(self, data: ImageData | None = None):
        self._data = data

    def prepare(self, job: Job) -> None:
        """Load the data now, before the runner writes anything, so that a data error leaves no files behind."""
        if self._data is None:
            self._data = job.data.load()

    def run(self, cells: list[Cell], job: Job, on_start: Callable[[Cell], None], on_event: OnEvent,
            on_result: OnResult) -> None:
        options = job.engine.options()
        data = (self._data or job.data.load()).to(options.device)
        if job.engine.pack > 1:
            from lossbench.packing import group_cells

            groups = group_cells(cells, job.engine.pack, options, data)
        else:
            groups = [[cell] for cell in cells]
        for group in groups:
            for cell in group:
                on_start(cell)
            threads = choose_threads(job.engine.threads, on_cpu=options.device.type == "cpu")
            if len(group) == 1:
                cell = group[0]
                records = [execute_cell(cell, job, data, options, lambda ev, info, c=cell: on_event(c, ev, info),
                                        threads, read_resume(job.results_dir, cell.id))]
            else:
                records = execute_pack(group, job, data, options,
                                       [lambda ev, info, c=cell: on_event(c, ev, info) for cell in group], threads)
            for cell, record in zip(group, records):
                on_result(cell, record)


@dataclass
class RunPlan:
    """The cells of a suite and which of them still need to run.

    Under adaptive seeding (`rounds` set) `cells` holds every seed a cell may run (0 … max−1), `pending` the
    first round still to train, and `rounds` decides each later round from the results.
    """

    suite: Suite
    job: Job
    cells: list[Cell]
    pending: list[Cell]
    store: ResultsStore
    #: (file, why) for every file of cells/ that is not a cell record: ignored, and its cell (if any) retrained.
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    #: Every cell record the directory held when the run was planned, by id (each file read once, by `plan`).
    existing: dict[str, CellRecord] = field(default_factory=dict)
    rounds: SeedRounds | None = None
    #: Cells the plan needs that already have a final result.
    skipped: int = 0
    #: --force: earlier results are ignored (and overwritten).
    forced: bool = False


@dataclass
class RunSummary:
    """What a run did: the records of every cell of the suite (including those skipped), and counts."""

    records: list[CellRecord] = field(default_factory=list)
    ran: int = 0
    #: Tuning trials trained by this run (a suite with `tune:`); not among `records`.
    trials: int = 0
    skipped: int = 0
    failed: int = 0
    diverged: int = 0


def plan(suite: Suite, out_dir: Path, *, force: bool = False, cache_dir: Path = DEFAULT_CACHE,
         check_device: bool = True) -> RunPlan:
    """Check the device, dataset and results directory, expand the grid and find the pending cells. Writes nothing.

    `check_device=False` skips checking the device on this machine, for executors that train elsewhere.
    """
    try:
        if check_device:
            resolve_precision(suite.train.precision, resolve_device(suite.train.device))
    except ValueError as exc:
        raise ConfigError(message=str(exc), location=suite.locate(["train", "device"])) from None
    job = Job(suite.name, DataRequest.from_suite(suite, cache_dir), EngineSettings.from_suite(suite),
              ShiftPlan.from_suite(suite, cache_dir), str(out_dir))
    try:
        identity = job.data.identity()
    except DataError as exc:
        raise located_data_error(suite, exc) from None
    if suite.evaluate is not None:
        from lossbench.shift.checks import check_ood_data

        check_ood_data(suite)
    cells = expand(suite, identity)
    check_results_dir(out_dir)
    store = ResultsStore(out_dir)
    in_the_way = [c for c in cells if store.cell_path(c.id).is_dir()]
    if in_the_way:
        path = store.cell_path(in_the_way[0].id)
        raise ResultsWriteError(
            message=f"{path} is a directory, where the result of cell {in_the_way[0].label} (seed "
                    f"{in_the_way[0].seed}) goes",
            value=str(path),
            details=["move that directory away: lossbench does not remove what it did not write"],
        )
    scan = store.scan()  # the one read of every cell file: the run works from memory after this
    other = None if force else store.other_suite(suite.name, identity, scan.records.values())
    if other:
        raise ForeignDirectoryError(
            message=other, location=Location(option=f"--out {out_dir}"), value=str(out_dir),
            details=["a results directory belongs to one suite on one dataset: give --out another directory, or "
                     "--force to train this suite there anyway (results.csv tells the rows apart by its suite, "
                     "dataset and settings columns)"])
    pending, rounds, skipped = _schedule(suite, cells, scan.records, force)
    return RunPlan(suite, job, cells, pending, store, ignored=scan.ignored, existing=scan.records, rounds=rounds,
                   skipped=skipped, forced=force)


def _schedule(suite: Suite, cells: list[Cell], records: dict[str, CellRecord],
              force: bool) -> tuple[list[Cell], SeedRounds | None, int]:
    """(cells still to train, the adaptive rounds or None, cells skipped because they have a final result)."""
    if suite.adaptive is not None:
        from lossbench.seed_rounds import SeedRounds  # pandas and scipy, only for adaptive seeding

        rounds = SeedRounds(suite.adaptive, cells)
        kept = [] if force else _final_records(records, cells)
        pending = rounds.pending(kept)
        return pending, rounds, len(rounds.required(rounds.decisions(kept))) - len(pending)
    finished = set() if force else {r.id for r in _final_records(records, cells)}
    pending = [c for c in cells if c.id not in finished]
    return pending, None, len(cells) - len(pending)


def _final_records(records: dict[str, CellRecord], cells: list[Cell]) -> list[CellRecord]:
    """The final (done or diverged) records among `records` of the given cells."""
    found = (records.get(c.id) for c in cells)
    return [r for r in found if r is not None and r.is_final]


def located_data_error(suite: Suite, exc: DataError) -> DataError:
    """A data error pointed at the suite key (or option) behind it: a subset size, else the root or the name."""
    if exc.location is None:
        key = next((k for k in ("train_subset", "test_subset", "val_fraction") if exc.message.startswith(k)),
                   "root" if suite.dataset.root else "name")
        exc.location = suite.locate(["dataset", key])
    return exc


def _outcome(record: CellRecord) -> str:
    """`done with test accuracy 0.9123`, `failed`, ...: one cell's ending in words."""
    accuracy = record.metric("test_acc")
    return record.status + (f" with test accuracy {accuracy:.4f}" if isinstance(accuracy, float) else "")


@dataclass
class RunClock:
    """Where one run's wall time went, in seconds: recorded in runs.json so that a reader can check that the
    cells' own times (their `cell_s`) and the run's other work add up to the wall time."""

    started_at: str = field(default_factory=_now)
    start: float = field(default_factory=time.perf_counter)
    #: The process's time before the run: interpreter start, imports, loading and planning the suite (0 when the
    #: caller does not say, e.g. a library call inside a longer process).
    startup_s: float = 0.0
    #: Loading (and decoding) the dataset before the first cell.
    data_s: float = 0.0
    #: Writing cell files (and checkpoints) and their rows of results.csv.
    write_s: float = 0.0
    #: The sum of the `cell_s` of the cells this run trained.
    cells_s: float = 0.0
    cells: int = 0

    def entry(self, jobs: int, interrupted: bool) -> dict[str, Any]:
        wall = time.perf_counter() - self.start + self.startup_s
        return {"started_at": self.started_at, "finished_at": _now(), "wall_s": wall, "startup_s": self.startup_s,
                "data_s": self.data_s,
                "write_s": self.write_s, "cells_s": self.cells_s, "cells": self.cells, "jobs": jobs,
                "other_s": wall - self.startup_s - self.data_s - self.write_s - self.cells_s,
                "interrupted": interrupted}


def process_age_s() -> float:
    """Seconds since this process started (Linux: /proc; 0 elsewhere): the run's startup, for its RunClock."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - float(fields[19]) / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return 0.0


def run(run_plan: RunPlan, *, executor: Any = None, display: RunDisplay | None = None,
        startup_s: float = 0.0) -> RunSummary:
    """Train the pending cells of a plan, writing each result as it arrives. Holds the directory's lock.

    A run that trains anything adds its entry to runs.json (RunClock), also when it is interrupted; `startup_s` is
    the process's time before this call (the CLI passes process_age_s())."""
    display = display or SilentDisplay()
    store = run_plan.store
    executor = executor or LocalExecutor()
    clock = RunClock(startup_s=startup_s)
    if run_plan.pending and hasattr(executor, "prepare"):
        # The data stage completes before anything is written: a bad image or a subset larger than its split
        # must not leave a lock, a header-only results.csv or a suite.yaml behind.
        try:
            executor.prepare(run_plan.job)
        except DataError as exc:
            raise located_data_error(run_plan.suite, exc) from None
        clock.data_s = time.perf_counter() - clock.start
    summary = RunSummary(skipped=run_plan.skipped)
    latest = dict(run_plan.existing)  # every record of the directory, as this run leaves it
    with store:
        store.write_suite(suite_to_yaml(run_plan.suite))
        store.open_csv()
        if run_plan.forced:  # --force trains every cell from its start, not from a state saved before
            for cell in run_plan.pending:
                _remove(resume_path(store.root, cell.id))
        tuner = None
        if run_plan.suite.tune is not None:
            from lossbench.tune import Tuner

            tuner = Tuner(run_plan.suite.tune, run_plan.cells, store.root, run_plan.suite.train.epochs,
                          run_plan.suite.seed_list)
            tuner.recover()
            if tuner.trials_left():
                # Before tuning the verdict cells are unknown; the grid's cells are their count.
                display.start(tuner.trials_left() + len(run_plan.pending) + run_plan.skipped, 0)
            else:  # tuned already: the verdict cells, and which of them have results, are known now
                pending, _, skipped = _schedule(run_plan.suite, tuner.outcome(run_plan.job).cells,
                                                run_plan.existing, run_plan.forced)
                display.start(len(pending), skipped)
        else:
            display.start(len(run_plan.pending), run_plan.skipped)
        if run_plan.rounds is not None and hasattr(display, "plan_range"):
            # The bar counts against the most trainings the rule can take; the ETA spans fewest to most.
            fewest, most = run_plan.rounds.bounds()
            display.plan_range(max(fewest - run_plan.skipped, len(run_plan.pending)),
                               max(most - run_plan.skipped, len(run_plan.pending)))

        def on_event(cell: Cell, event: str, info: dict[str, Any]) -> None:
            if event == "checkpoint":  # a cell's training state, from wherever it trains: saved here
                atomic_write_bytes(resume_path(store.root, cell.id), info["state"])
            else:
                display.cell_event(cell, event, info)

        def on_result(cell: Cell, record: CellRecord) -> None:
            t_write = time.perf_counter()
            try:
                _write_checkpoint(store, record, run_plan.job.engine.checkpoint)
                store.add_cell(record)
            except ResultsWriteError as exc:
                # The disk filled up or turned read-only mid-run: stop, and say what this cell measured.
                exc.details.insert(0, f"cell {cell.label} (seed {cell.seed}) ended {_outcome(record)}, but its "
                                      f"result could not be saved; the results saved before it are intact")
                raise
            latest[cell.id] = record
            if run_plan.rounds is not None:
                run_plan.rounds.fresh[cell.id] = record
            clock.write_s += time.perf_counter() - t_write
            clock.cells_s += float(record.timing.get("cell_s") or 0.0)
            clock.cells += 1
            summary.ran += 1
            summary.failed += record.status == "failed"
            summary.diverged += record.status == "diverged"
            display.cell_end(cell, record)

        def on_trial(record: CellRecord) -> None:
            clock.cells_s += float(record.timing.get("cell_s") or 0.0)
            clock.cells += 1

        try:
            # An executor that can keep its workers (processes, a Ray connection) keeps them for every round,
            # tuning's included.
            with executor if hasattr(executor, "__enter__") else contextlib.nullcontext():
                if tuner is not None:
                    _tune(run_plan, tuner, executor, display, on_result, on_trial, summary)
                pending, attempted = run_plan.pending, set()
                while pending:
                    executor.run(pending, run_plan.job, display.cell_start, on_event, on_result)
                    attempted.update(c.id for c in pending)
                    # A cell is tried at most once per run, even if an executor lost its result.
                    pending = [c for c in _next_round(run_plan) if c.id not in attempted]
                    if pending:
                        display.next_round(len(pending))
        except BaseException:
            # A display whose pipe closed (`lossbench run S | head -1`) must not keep the results from closing.
            with contextlib.suppress(OSError):
                display.finish()
            with contextlib.suppress(ResultsWriteError):  # the first error is the one to report
                store.close_csv()
                if clock.cells:
                    store.record_run(clock.entry(_jobs(executor), interrupted=True))
            raise
        display.finish()
        store.close_csv()
        if clock.cells:
            store.record_run(clock.entry(_jobs(executor), interrupted=False))
    summary.records = [latest[c.id] for c in run_plan.cells if c.id in latest]
    return summary


def _write_checkpoint(store: ResultsStore, record: CellRecord, policy: CheckpointPolicy) -> None:
    """Save the cell's final weights before its result, so that a final result always has its weights; a cell
    trained again without final weights (diverged, failed, `keep: none`) loses the file of its earlier training.
    The cell's training state goes too, except the state after the last epoch of a finished cell with `keep: last`.
    """
    path = checkpoint_path(store.root, record.id)
    if record.weights is not None:
        atomic_write_bytes(path, record.weights)
        record.weights = None  # written: the bytes need not stay in memory
    else:
        _remove(path)
    if not (record.status == "done" and policy.keep == "last"):
        _remove(resume_path(store.root, record.id))


def _remove(path: Path) -> None:
    """Delete a file lossbench wrote, if it is there."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise write_error(path, exc) from None


def _jobs(executor: Any) -> int:
    """How many cells the executor trains at once (1 for the local executor)."""
    jobs = getattr(executor, "jobs", 1)
    return jobs if isinstance(jobs, int) and jobs > 0 else 1


def _tune(run_plan: RunPlan, tuner: Any, executor: Any, display: RunDisplay, on_result: OnResult,
          on_trial: Callable[[CellRecord], None], summary: RunSummary) -> None:
    """Tune every grid cell (lossbench/tune.py), then point the plan at the verdict cells it chose."""
    from lossbench.tune import run_tuning

    outcome = run_tuning(tuner, run_plan.job, executor, display, on_trial)
    summary.trials = outcome.trials_run
    run_plan.cells = outcome.cells
    run_plan.pending, run_plan.rounds, run_plan.skipped = _schedule(run_plan.suite, outcome.cells,
                                                                    run_plan.existing, run_plan.forced)
    summary.skipped = run_plan.skipped
    for cell, record in outcome.failed:
        on_result(cell, record)


def _next_round(run_plan: RunPlan) -> list[Cell]:
    """Adaptive seeding: the cells of the next round, decided from every result so far ([] once settled)."""
    rounds = run_plan.rounds
    if rounds is None:
        return []
    # With --force, results from before this run count for nothing: the rounds start again from seed 0. The
    # records of this run are in rounds.fresh, so the earlier ones come from the plan's one read of the directory.
    return rounds.pending([] if run_plan.forced else _final_records(run_plan.existing, rounds.cells))
