"""Several cells at once on one machine: `lossbench run --jobs N` trains N cells at a time in N worker processes.

`ProcessExecutor` is an `execution.Executor`, like `LocalExecutor`. Each worker process loads the suite's dataset once,
through the same tensor cache as a sequential run, puts it on the device and then trains one cell after another
with `execution.execute_cell`, the function every executor calls. Cells are handed out one at a time from a shared
queue, so a worker that finishes early takes the next cell. Records travel back to the driver, which hands each to
`on_result` the moment it arrives (the runner writes it there); workers never touch the results directory.

- CPU: the cores are split between the workers (torch threads per worker = cores // N, at least 1).
- GPU: every worker trains on the same device (each holds its own copy of the uint8 dataset, 1 byte per pixel);
  with several GPUs and an unindexed `cuda` device, workers are spread over them round-robin.
- Progress is coarser than in a sequential run: a worker forwards `cell_start` and `epoch` events, not steps.
- Checkpoints: a worker sends a cell's training state (`checkpoint` events) and final weights (in the record) to
  the driver, which writes them; the driver reads a cell's saved state and hands it over with the cell.
- Results do not depend on which worker trains a cell or on what trains beside it. Float reductions on the CPU do
  depend on the number of torch threads, so a parallel run matches a sequential run bit for bit when both give a
  cell the same number of threads (`threads_per_job`, or `torch.set_num_threads` for the sequential run).
- Workers that stay: inside `with executor:` (the runner holds it for a whole run) the workers started by the
  first `run` call train the cells of every later call too (adaptive seeding's rounds, tuning trials), so the
  processes start and load the data once per run, not once per round. Outside a `with`, each call starts and
  stops its own workers.
- Ctrl-C: the workers ignore SIGINT; the driver hands on the records that already arrived (they are saved),
  terminates the workers it started and raises KeyboardInterrupt again. A worker that dies mid-cell (killed for
  memory, say) costs only its cell, which is recorded `failed` and rerun by the next run.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess
from typing import Any

import torch

from lossbench.checkpoint import read_resume
from lossbench.data.request import DataRequest
from lossbench.errors import ConfigError
from lossbench.execution import Executor, Job, OnEvent, OnResult, execute_cell, failed_record
from lossbench.executor_session import HeldBetweenCalls
from lossbench.grid import Cell
from lossbench.machine import usable_cores
from lossbench.threads import choose_threads

# How long the driver waits for a message before it checks that its workers are alive (seconds).
_POLL_S = 0.2
# How long a worker may take to exit after its last cell, or after SIGTERM, before it is killed (seconds).
_EXIT_GRACE_S = 10.0
# Worker events passed on to the display; per-step events would cost a message per optimizer step.
_FORWARDED_EVENTS = ("cell_start", "epoch", "checkpoint")
# Imported once by the fork server, so that every worker forks with them loaded instead of importing them itself
# (seconds each: torch.optim imports torch._dynamo when it builds the first optimizer).
_FORKSERVER_PRELOAD = ["lossbench.parallel", "torch._dynamo", "torchvision"]


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process needs: its slot number, the job, its torch threads and its device (picklable)."""

    slot: int
    job: Job
    threads: int  # fixed, or the most that the `auto` thread policy may choose (this worker's share of the cores)
    device: str | None = None  # overrides the job's device, e.g. `cuda:1`; None keeps it
    auto_threads: bool = False  # choose the threads before each cell from the idle cores (lossbench/threads.py)


class ProcessExecutor(HeldBetweenCalls, Executor):
    """Trains up to `jobs` cells at once, each worker process on its own share of the CPU, or on a shared GPU.

    `threads_per_job` fixes the torch threads of each worker (default: the cores split evenly, at least 1).
    `start_method` is the multiprocessing start method: by default `forkserver` where the OS has it (workers fork
    from a clean server process that has imported torch once), else `spawn`. Both are safe with CUDA and with
    torch's thread pools, which a plain `fork` of the driver is not.
    """

    def __init__(self, jobs: int, *, threads_per_job: int | None = None, start_method: str | None = None):
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ConfigError(message=f"--jobs {jobs!r}: must be a whole number, 1 or more", value=jobs)
        if threads_per_job is not None and (not isinstance(threads_per_job, int) or threads_per_job < 1):
            raise ConfigError(message=f"threads_per_job {threads_per_job!r}: must be a whole number, 1 or more",
                              value=threads_per_job)
        if start_method is None:
            start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self.jobs = jobs
        self.threads_per_job = threads_per_job
        self.start_method = start_method
        self._prepared: DataRequest | None = None  # the data request already loaded into the cache by prepare()
        self._pool: _WorkerPool | None = None  # the workers, kept between calls inside `with`
        #: Worker processes started over this executor's life (a run that keeps its workers starts `jobs`).
        self.workers_started = 0

    def close(self) -> None:
        """Let the workers finish and exit (those that do not within a grace period are terminated)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop(graceful=True)

    def threads_for(self, workers: int) -> int:
        """Torch threads each of `workers` worker processes trains with (with `auto` threads: at most)."""
        return self.threads_per_job or max(1, usable_cores() // max(workers, 1))

    def describe(self) -> str:
        """One line for the run header, e.g. `2 jobs × 1 torch thread`."""
        threads = self.threads_for(self.jobs)
        plural = "s" if threads != 1 else ""
        if self.threads_per_job is None:
            return f"{self.jobs} jobs × up to {threads} torch thread{plural} (auto)"
        return f"{self.jobs} jobs × {threads} torch thread{plural}"

    def worker_specs(self, job: Job, workers: int) -> list[WorkerSpec]:
        """The workers of a run: threads split on the CPU; several GPUs shared round-robin."""
        options = job.engine.options()
        devices: list[str | None] = [None] * workers
        if options.device.type == "cuda" and options.device.index is None and torch.cuda.device_count() > 1:
            devices = [f"cuda:{slot % torch.cuda.device_count()}" for slot in range(workers)]
        fixed = self.threads_per_job or (job.engine.threads if job.engine.threads != "auto" else None)
        threads = fixed or self.threads_for(workers)
        return [WorkerSpec(slot, job, threads, devices[slot], auto_threads=fixed is None) for slot in range(workers)]

    def prepare(self, job: Job) -> None:
        """Decode (or read) the dataset once here, so that the workers all find it in the cache instead of decoding
        it at the same time; a data error surfaces here, before the runner writes anything."""
        job.data.load()
        self._prepared = job.data

    def run(self, cells: list[Cell], job: Job, on_start: Callable[[Cell], None], on_event: OnEvent,
            on_result: OnResult) -> None:
        """Train `cells` in worker processes; calls back on this thread, `on_result` once per cell."""
        if not cells:
            return
        if self._prepared != job.data:
            self.prepare(job)
        if self._pool is not None and self._pool.job != job:
            self.close()  # workers hold another job's data
        if self._pool is None:
            self._pool = _WorkerPool(self, job)
        pool = self._pool
        pool.start(min(self.jobs, len(cells)))
        for index, cell in enumerate(cells):
            # A cell's saved training state, read here (the driver owns the results directory), goes with it.
            pool.tasks.put((index, cell, read_resume(job.results_dir, cell.id)))
        session = _Session(cells, job, pool.workers, pool.messages, on_start, on_event, on_result)
        finished = False
        try:
            session.drive()
            finished = True
        except KeyboardInterrupt:
            session.deliver_finished()
            raise
        finally:
            if not finished or not self._kept:
                self._pool = None
                pool.stop(graceful=finished)


class _WorkerPool:
    """The worker processes of one job, with their task and message queues; grows up to `jobs` workers."""

    def __init__(self, executor: ProcessExecutor, job: Job):
        self.executor, self.job = executor, job
        self.context = multiprocessing.get_context(executor.start_method)
        if executor.start_method == "forkserver":
            self.context.set_forkserver_preload(_FORKSERVER_PRELOAD)  # type: ignore[attr-defined]
        self.tasks = self.context.Queue()
        self.messages = self.context.Queue()
        self.workers: dict[int, BaseProcess] = {}
        self._next_slot = 0

    def start(self, wanted: int) -> None:
        """Have `wanted` live workers: those that died in an earlier call are replaced, and the pool grows (it
        never shrinks within a run). A new worker's thread share counts every worker the pool then holds."""
        for slot in [slot for slot, p in self.workers.items() if p.exitcode is not None]:
            del self.workers[slot]
        missing = wanted - len(self.workers)
        if missing <= 0:
            return
        specs = self.executor.worker_specs(self.job, len(self.workers) + missing)[len(self.workers):]
        with _sigint_ignored():  # inherited by the children (and the fork server): Ctrl-C reaches the driver only
            for spec in specs:
                spec = replace(spec, slot=self._next_slot)
                self._next_slot += 1
                process = self.context.Process(target=_worker_main, args=(spec, self.tasks, self.messages),
                                               name=f"lossbench-worker-{spec.slot}", daemon=True)
                process.start()
                self.workers[spec.slot] = process
                self.executor.workers_started += 1

    def stop(self, graceful: bool) -> None:
        """Tell each worker to exit after its cell (graceful), else terminate them; then close the queues."""
        if graceful:
            for _ in self.workers:
                self.tasks.put(None)
        _stop(self.workers.values(), graceful=graceful)
        for q in (self.tasks, self.messages):
            q.cancel_join_thread()  # cells still queued for terminated workers must not block our exit
            q.close()


class _Session:
    """The driver's side of one run: routes worker messages to the callbacks and notices lost workers."""

    def __init__(self, cells: list[Cell], job: Job, workers: dict[int, BaseProcess], messages: Any,
                 on_start: Callable[[Cell], None], on_event: OnEvent, on_result: OnResult):
        self.cells, self.job, self.workers, self.messages = cells, job, workers, messages
        self.on_start, self.on_event, self.on_result = on_start, on_event, on_result
        self.pending = set(range(len(cells)))
        self.in_flight: dict[int, int] = {}  # worker slot → index of the cell it trains
        self.lost: dict[int, tuple[str, str]] = {}  # worker slot → (why it stopped, traceback)

    def drive(self) -> None:
        while self.pending:
            try:
                self.handle(self.messages.get(timeout=_POLL_S))
            except queue.Empty:
                self.check_workers()

    def handle(self, message: tuple[Any, ...], results_only: bool = False) -> None:
        kind, slot = message[0], message[1]
        if kind == "result":
            _, _, index, record = message
            self.in_flight.pop(slot, None)
            if index in self.pending:
                self.pending.discard(index)
                self.on_result(self.cells[index], record)
        elif results_only:
            return
        elif kind == "start":
            self.in_flight[slot] = message[2]
            self.on_start(self.cells[message[2]])
        elif kind == "event":
            _, _, index, event, info = message
            self.on_event(self.cells[index], event, info)
        elif kind == "worker_failed":
            self.lost[slot] = (message[2], message[3])

    def check_workers(self) -> None:
        """Record the cell of every worker that died mid-cell as failed; if no worker is left, the rest too."""
        dead = [slot for slot, p in self.workers.items() if p.exitcode is not None and slot not in self.lost]
        if dead:
            self.drain()  # what a worker sent just before it exited is still in the pipe
        for slot in dead:
            code = self.workers[slot].exitcode
            signalled = " (killed by a signal; out of memory?)" if code is not None and code < 0 else ""
            self.lost.setdefault(slot, (f"worker process exited with code {code}{signalled}", ""))
            index = self.in_flight.pop(slot, None)
            if index is not None and index in self.pending:
                self.fail(index, f"lost while training: {self.lost[slot][0]}", self.lost[slot][1])
        if self.pending and len(self.lost) == len(self.workers):
            reason, trace = next(iter(self.lost.values()))
            for index in sorted(self.pending):
                self.fail(index, f"no worker process left to train it: {reason}", trace)

    def fail(self, index: int, error: str, trace: str) -> None:
        self.pending.discard(index)
        cell = self.cells[index]
        self.on_result(cell, failed_record(cell, self.job, error, trace))

    def drain(self) -> None:
        while True:
            try:
                self.handle(self.messages.get_nowait())
            except queue.Empty:
                return

    def deliver_finished(self) -> None:
        """On an interrupt: hand on the records that already arrived, so that they are saved."""
        while True:
            try:
                self.handle(self.messages.get_nowait(), results_only=True)
            except (queue.Empty, OSError, ValueError):
                return


def _worker_main(spec: WorkerSpec, tasks: Any, messages: Any) -> None:
    """A worker process: load the data once, then train cells from `tasks` until it reads None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(spec.threads)
    try:
        options = spec.job.engine.options()
        if spec.device is not None:
            options = replace(options, device=torch.device(spec.device))
        data = spec.job.data.load().to(options.device)
    except Exception as exc:  # nothing can train here; the driver fails this worker's share of the cells
        messages.put(("worker_failed", spec.slot, f"cannot load the data: {type(exc).__name__}: {exc}",
                      traceback.format_exc()))
        return
    while (task := tasks.get()) is not None:
        index, cell, resume = task
        messages.put(("start", spec.slot, index))

        def progress(event: str, info: dict[str, Any], index: int = index) -> None:
            if event in _FORWARDED_EVENTS:
                messages.put(("event", spec.slot, index, event, info))

        try:
            threads = choose_threads("auto" if spec.auto_threads else spec.threads, share=spec.threads,
                                     on_cpu=options.device.type == "cpu")
            record = execute_cell(cell, spec.job, data, options, progress, threads, resume)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # the engine turns training errors into records; this is anything around it
            record = failed_record(cell, spec.job, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        messages.put(("result", spec.slot, index, record))


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while child processes start, so that they inherit SIG_IGN (only the main thread may)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop(processes: Any, graceful: bool) -> None:
    """Wait for the workers to exit after their last cell (graceful), else terminate, then kill, each one."""
    processes = list(processes)
    if graceful:
        for p in processes:
            p.join(_EXIT_GRACE_S)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(_EXIT_GRACE_S)
        if p.is_alive():
            p.kill()
            p.join()
