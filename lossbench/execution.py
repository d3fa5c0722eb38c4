"""How one cell trains, wherever an executor puts it: the `Job` every executor receives, `execute_cell` (the same
pure function for every executor) and `execute_pack`, the record of a cell, and the `Executor` protocol with its
simplest implementation, `LocalExecutor`, which trains one cell after another in this process.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from lossbench.checkpoint import (
    CheckpointError, CheckpointPolicy, final_payload, load_training, read_resume, restore_training, state_saver,
    to_bytes,
)
from lossbench.components import build_cell
from lossbench.config.schema import Suite
from lossbench.data import ImageData
from lossbench.data.request import DataRequest
from lossbench.device import EngineOptions, engine_options
from lossbench.engine import CellResult, CellRun, ProgressFn, TrainingProgress, quiet, train
from lossbench.environment import environment
from lossbench.grid import Cell
from lossbench.machine import MachineSample, load_block
from lossbench.record import CellRecord, DataSizes, Environment, MachineLoad, Metrics, Timings
from lossbench.run_clock import utc_now
from lossbench.shift.evaluate import ShiftPlan, score_into
from lossbench.threads import ThreadChoice, ThreadSetting, apply_threads, choose_threads


@dataclass(frozen=True)
class EngineSettings:
    """How the suite's cells run, with the device still as requested (picklable). What each cell trains is its
    recipe (grid.Recipe)."""

    device: str
    precision: str
    compile: bool = False
    #: torch threads per cell on the CPU: `auto` or a whole number (lossbench/threads.py).
    threads: ThreadSetting = "auto"
    #: Cells trained together as one batched model (lossbench/packing.py); 1 trains one cell at a time.
    pack: int = 1
    #: What each cell saves (train.checkpoint).
    checkpoint: CheckpointPolicy = CheckpointPolicy()

    @classmethod
    def from_suite(cls, suite: Suite) -> EngineSettings:
        t = suite.train
        return cls(t.device, t.precision, t.compile, t.threads, t.pack,
                   CheckpointPolicy(t.checkpoint.every, t.checkpoint.keep))

    def options(self) -> EngineOptions:
        """The options the cells run with on this machine (device.engine_options)."""
        return engine_options(self.device, self.precision, self.compile)


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


def train_cell(cell: Cell, data: ImageData, options: EngineOptions, progress: ProgressFn | None = None,
               shift: ShiftPlan | None = None, resume: bytes | None = None,
               checkpoint: CheckpointPolicy = CheckpointPolicy()) -> CellResult:
    """Build and train one cell as its recipe says, then score `shift` (the suite's `evaluate:` block) on the
    trained model. An exception (while building or training) becomes a `failed` result.

    `sys.exit()` in a user's loss or component is an exception of its cell too: only Ctrl-C stops the grid.
    `resume` is the cell's saved training state (checkpoint.py): the cell continues from it. The training states
    that `checkpoint` asks for are sent as `checkpoint` events, {"epoch": N, "state": file bytes}, for the process
    that writes the results directory.
    """
    report = progress or quiet
    try:
        should_stop = None
        if cell.trial is not None:
            from lossbench.tune import epoch_reporter

            # A tuning trial: validation only (the test split is never read), a report to its study each epoch,
            # no scoring under shift, no training state saved.
            shift = None
            should_stop = epoch_reporter(cell.trial)
        parts = build_cell(cell, data, options)
        start: TrainingProgress | None = None
        unusable = None
        if resume is not None and cell.trial is None:
            try:
                state = load_training(resume, "its saved training state")
            except CheckpointError as exc:  # damaged, or of another layout: the cell starts over instead
                unusable = exc.message
            else:
                start = restore_training(parts, state)
        save_state = None if cell.trial is not None else state_saver(checkpoint, cell.recipe.epochs, cell.config,
                                                                        report)
        result = train(CellRun(cell, parts, report, should_stop, start, save_state), options)
        if unusable is not None:
            result.notes.append(f"trained from its first epoch: {unusable}")
        if start is not None:
            # The timings of a resumed cell add up the runs that trained it.
            result.timing["resumed_after_epoch"] = start.epoch
        if shift is not None and result.status == "done":
            score_into(result.metrics, result.notes, shift, parts.model, parts.loss, data, options,
                       cell.recipe.eval_batch_size)
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
    started, before, t0 = utc_now(), MachineSample.now(), time.perf_counter()
    if threads is not None:
        apply_threads(threads)
    result = train_cell(cell, data, options, progress, job.evaluate, resume, job.engine.checkpoint)
    record = _record(cell, job, result, options.precision, _trained_env(options, threads), started)
    if job.evaluate is not None:
        from lossbench.shift.evaluate import stamp_checkpoint

        stamp_checkpoint(record.metrics, record.weights)
    record.load = MachineLoad.from_dict(load_block(before, MachineSample.now()))
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
    train = float(timing.train_time_s or 0.0)
    evaluation = float(timing.eval_time_s or 0.0)
    timing.overhead_s = max(seconds - train - evaluation, 0.0) / pack_size
    timing.cell_s = train / pack_size + evaluation + timing.overhead_s


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

    started, before, t0 = utc_now(), MachineSample.now(), time.perf_counter()
    if threads is not None:
        apply_threads(threads)
    results = train_pack(cells, data, options, progress)
    env = _trained_env(options, threads)
    env["pack_size"] = len(cells)
    load = load_block(before, MachineSample.now())  # the pack's, shared by its cells like its timing
    records = [_record(cell, job, result, options.precision, dict(env), started)
               for cell, result in zip(cells, results)]
    # The pack's time that is neither its (shared) training nor any cell's own evaluation, shared equally.
    shared = time.perf_counter() - t0 - sum(float(r.timing.eval_time_s or 0.0) for r in records)
    for record in records:
        record.load = MachineLoad.from_dict(load)
        add_wall_time(record, shared + float(record.timing.eval_time_s or 0.0), len(records))
    return records


def failed_record(cell: Cell, job: Job, error: str, traceback_text: str) -> CellRecord:
    """The record of a cell that failed outside the engine (an executor lost it or could not start it)."""
    return _record(cell, job, CellResult(status="failed", error=error, traceback=traceback_text),
                   job.engine.precision, {}, utc_now())


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
        metrics=Metrics.from_dict(result.metrics),
        history=list(result.history),
        weights=_final_weights(cell, job, result),
        timing=Timings.from_dict(result.timing),
        data=DataSizes.from_dict(result.data),
        precision=precision,
        env=Environment.from_dict(env),
        started_at=started,
        finished_at=utc_now(),
    )


#: A cell's progress: (cell, event name, its details), e.g. an `epoch` event with the epoch's figures.
OnEvent = Callable[[Cell, str, dict[str, Any]], None]
#: A cell's complete record, the moment it finished.
OnResult = Callable[[Cell, CellRecord], None]


class Executor(Protocol):
    """Trains cells somewhere and hands each record back as it finishes: `LocalExecutor` (this process, one cell
    after another), `parallel.ProcessExecutor` (`--jobs N` worker processes), `ray_executor.RayExecutor` (a Ray
    cluster). The runner enters it with `with executor:` for a whole run, so that an executor may keep its workers
    from one `run` call to the next (adaptive seeding's rounds, tuning's trials).

    A class that subclasses it inherits the defaults below: one cell at a time, nothing to prepare or keep."""

    #: How many cells it trains at once.
    jobs: int = 1

    def prepare(self, job: Job) -> None:
        """Load what the cells need before the runner writes anything, so that a data error leaves no files behind;
        raises DataError."""

    def run(self, cells: list[Cell], job: Job, on_start: Callable[[Cell], None], on_event: OnEvent,
            on_result: OnResult) -> None:
        """Train `cells`; calls back on the caller's thread: `on_start` when a cell starts, `on_event` with its
        progress and `on_result` once per cell with its record."""
        raise NotImplementedError

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class LocalExecutor(Executor):
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
