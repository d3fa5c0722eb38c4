"""Which cells still need running, where, and how: turns a validated suite into result files.

`plan()` expands the grid and finds the cells without a final result; an executor trains them and hands each
record back as it finishes; the runner writes it at once (so a killed run loses only the cells in flight) and
adds its row to results.csv, at the same cost for the first cell as for the 100,000th: the directory is read once,
when the run is planned, and everything after works from memory. Executors are interchangeable (the `Executor`
protocol of execution.py): `LocalExecutor` trains one cell after another in this process; others run several at
once. All of them call `execute_cell`, the same pure function. A suite with `tune:` is tuned first (tune.py), its
rounds of trials trained by the same executor.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossbench.checkpoint import CheckpointPolicy, checkpoint_path, resume_path
from lossbench.config.schema import Suite, suite_to_yaml
from lossbench.data.cache import DEFAULT_CACHE
from lossbench.data.request import DataRequest, located_data_error
from lossbench.device import resolve_device, resolve_precision
from lossbench.errors import ConfigError, DataError, ForeignDirectoryError, Location, ResultsWriteError
from lossbench.execution import EngineSettings, Executor, Job, LocalExecutor, OnResult, failed_record
from lossbench.grid import Cell, expand
from lossbench.progress import RunDisplay, SilentDisplay
from lossbench.record import CellRecord
from lossbench.run_clock import RunClock
from lossbench.shift.evaluate import ShiftPlan
from lossbench.atomic_write import atomic_write_bytes, write_error
from lossbench.store import ResultsStore, check_results_dir

if TYPE_CHECKING:
    from lossbench.seed_rounds import SeedRounds
    from lossbench.tune import Tuner


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


def _outcome(record: CellRecord) -> str:
    """`done with test accuracy 0.9123`, `failed`, ...: one cell's ending in words."""
    accuracy = record.value("test_acc")
    return record.status + (f" with test accuracy {accuracy:.4f}" if isinstance(accuracy, float) else "")


def run(run_plan: RunPlan, *, executor: Executor | None = None, display: RunDisplay | None = None,
        startup_s: float = 0.0) -> RunSummary:
    """Train the pending cells of a plan, writing each result as it arrives. Holds the directory's lock.

    A run that trains anything adds its entry to runs.json (RunClock), also when it is interrupted; `startup_s` is
    the process's time before this call (the CLI passes process_age_s())."""
    display = display or SilentDisplay()
    executor = executor or LocalExecutor()
    clock = RunClock(startup_s=startup_s)
    if run_plan.pending:
        # The data stage completes before anything is written: a bad image or a subset larger than its split
        # must not leave a lock, a header-only results.csv or a suite.yaml behind.
        try:
            executor.prepare(run_plan.job)
        except DataError as exc:
            raise located_data_error(run_plan.suite, exc) from None
        clock.data_s = time.perf_counter() - clock.start
    book = _RunBook(run_plan, display, clock)
    store = run_plan.store
    with store:
        store.write_suite(suite_to_yaml(run_plan.suite))
        store.open_csv()
        if run_plan.forced:  # --force trains every cell from its start, not from a state saved before
            for cell in run_plan.pending:
                _remove(resume_path(store.root, cell.id))
        tuner = _open_tuner(run_plan)
        _start_display(run_plan, tuner, display)
        try:
            # An executor that can keep its workers (processes, a Ray connection) keeps them for every round,
            # tuning's included.
            with executor:
                if tuner is not None:
                    _tune(run_plan, tuner, executor, book)
                _train_rounds(run_plan, executor, book)
        except BaseException:
            _finish(run_plan, display, clock, executor.jobs, interrupted=True)
            raise
        _finish(run_plan, display, clock, executor.jobs, interrupted=False)
    book.summary.records = [book.latest[c.id] for c in run_plan.cells if c.id in book.latest]
    return book.summary


class _RunBook:
    """What the runner does with each event and record of a run: checkpoints and records written at once, the
    display told, the run's counts and clock kept."""

    def __init__(self, run_plan: RunPlan, display: RunDisplay, clock: RunClock):
        self.plan, self.display, self.clock = run_plan, display, clock
        self.summary = RunSummary(skipped=run_plan.skipped)
        self.latest = dict(run_plan.existing)  # every record of the directory, as this run leaves it

    def on_event(self, cell: Cell, event: str, info: dict[str, Any]) -> None:
        if event == "checkpoint":  # a cell's training state, from wherever it trains: saved here
            atomic_write_bytes(resume_path(self.plan.store.root, cell.id), info["state"])
        else:
            self.display.cell_event(cell, event, info)

    def on_result(self, cell: Cell, record: CellRecord) -> None:
        t_write = time.perf_counter()
        try:
            _write_checkpoint(self.plan.store, record, self.plan.job.engine.checkpoint)
            self.plan.store.add_cell(record)
        except ResultsWriteError as exc:
            # The disk filled up or turned read-only mid-run: stop, and say what this cell measured.
            exc.details.insert(0, f"cell {cell.label} (seed {cell.seed}) ended {_outcome(record)}, but its "
                                  f"result could not be saved; the results saved before it are intact")
            raise
        self.latest[cell.id] = record
        if self.plan.rounds is not None:
            self.plan.rounds.fresh[cell.id] = record
        self.clock.write_s += time.perf_counter() - t_write
        self._count(record)
        self.summary.ran += 1
        self.summary.failed += record.status == "failed"
        self.summary.diverged += record.status == "diverged"
        self.display.cell_end(cell, record)

    def on_trial(self, cell: Cell, record: CellRecord) -> None:
        """A tuning trial's record: shown and timed, not written (its study and tuning.csv keep it)."""
        self.display.cell_end(cell, record)
        self._count(record)

    def _count(self, record: CellRecord) -> None:
        self.clock.cells_s += float(record.timing.cell_s or 0.0)
        self.clock.cells += 1


def _open_tuner(run_plan: RunPlan) -> Tuner | None:
    """The tuner of a suite with `tune:`, its studies opened and the trials a killed run left running recovered."""
    if run_plan.suite.tune is None:
        return None
    from lossbench.tune import Tuner

    tuner = Tuner(run_plan.suite.tune, run_plan.cells, run_plan.store.root, run_plan.suite.train.epochs,
                  run_plan.suite.seed_list)
    tuner.recover()
    return tuner


def _start_display(run_plan: RunPlan, tuner: Tuner | None, display: RunDisplay) -> None:
    """Tell the display how many trainings the run plans (and how many it skips)."""
    if tuner is None:
        display.start(len(run_plan.pending), run_plan.skipped)
    elif tuner.trials_left():
        # Before tuning the verdict cells are unknown; the grid's cells are their count.
        display.start(tuner.trials_left() + len(run_plan.pending) + run_plan.skipped, 0)
    else:  # tuned already: the verdict cells, and which of them have results, are known now
        pending, _, skipped = _schedule(run_plan.suite, tuner.outcome().cells, run_plan.existing, run_plan.forced)
        display.start(len(pending), skipped)
    if run_plan.rounds is not None:
        # The bar counts against the most trainings the rule can take; the ETA spans fewest to most.
        fewest, most = run_plan.rounds.bounds()
        display.plan_range(max(fewest - run_plan.skipped, len(run_plan.pending)),
                           max(most - run_plan.skipped, len(run_plan.pending)))


def _train_rounds(run_plan: RunPlan, executor: Executor, book: _RunBook) -> None:
    """Train the pending cells, then each round adaptive seeding asks for, until it is settled."""
    pending, attempted = run_plan.pending, set()
    while pending:
        executor.run(pending, run_plan.job, book.display.cell_start, book.on_event, book.on_result)
        attempted.update(c.id for c in pending)
        # A cell is tried at most once per run, even if an executor lost its result.
        pending = [c for c in _next_round(run_plan) if c.id not in attempted]
        if pending:
            book.display.next_round(len(pending))


def _finish(run_plan: RunPlan, display: RunDisplay, clock: RunClock, jobs: int, interrupted: bool) -> None:
    """Close the display and results.csv, and add the run's entry to runs.json if it trained anything. After an
    error or Ctrl-C (`interrupted`) nothing here may hide it: a display whose pipe closed (`lossbench run S |
    head -1`) must not keep the results from closing, and the first write error is the one to report."""
    store = run_plan.store
    if not interrupted:
        display.finish()
        store.close_csv()
        if clock.cells:
            store.record_run(clock.entry(jobs, interrupted=False))
        return
    with contextlib.suppress(OSError):
        display.finish()
    with contextlib.suppress(ResultsWriteError):
        store.close_csv()
        if clock.cells:
            store.record_run(clock.entry(jobs, interrupted=True))


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


def _tune(run_plan: RunPlan, tuner: Tuner, executor: Executor, book: _RunBook) -> None:
    """Tune every grid cell (lossbench/tune.py), then point the plan at the verdict cells it chose. Trials train
    unpacked, and are not scored on the suite's `evaluate:` block (only the verdict cells are)."""
    from lossbench.tune import run_tuning

    job = replace(run_plan.job, engine=replace(run_plan.job.engine, pack=1), evaluate=None)

    def train(trials: list[Cell], on_trial: OnResult) -> None:
        executor.run(trials, job, book.display.cell_start, book.display.cell_event, on_trial)

    outcome = run_tuning(tuner, train, executor.jobs, book.on_trial)
    book.summary.trials = outcome.trials_run
    run_plan.cells = outcome.cells
    run_plan.pending, run_plan.rounds, run_plan.skipped = _schedule(run_plan.suite, outcome.cells,
                                                                    run_plan.existing, run_plan.forced)
    book.summary.skipped = run_plan.skipped
    for cell, error in outcome.failed:
        book.on_result(cell, failed_record(cell, run_plan.job, error, ""))


def _next_round(run_plan: RunPlan) -> list[Cell]:
    """Adaptive seeding: the cells of the next round, decided from every result so far ([] once settled)."""
    rounds = run_plan.rounds
    if rounds is None:
        return []
    # With --force, results from before this run count for nothing: the rounds start again from seed 0. The
    # records of this run are in rounds.fresh, so the earlier ones come from the plan's one read of the directory.
    return rounds.pending([] if run_plan.forced else _final_records(run_plan.existing, rounds.cells))
