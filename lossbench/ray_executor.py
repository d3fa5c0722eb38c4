"""Run a suite's pending cells on a Ray cluster: one Ray task per cell, each result sent back to the driver.

`RayExecutor` is an `execution.Executor`, like `LocalExecutor`, so `runner.run` writes every record into the results
store the moment it arrives, on the driver: workers never touch the results directory. Each task asks Ray for
`cpus_per_cell` CPUs and `gpus_per_cell` GPUs (a fraction packs several cells on one GPU) and calls
`execution.execute_cell`, the function every executor calls, so a cell trains the same way wherever it runs.

Data reaches the workers in one of two ways (docs/clusters.md has the measurements behind the default):
- `object_store` (default): the driver loads the dataset once and puts the decoded uint8 tensors into Ray's object
  store; each node fetches them once. Only the driver needs the data root and the cache.
- `worker_cache`: each worker loads the dataset itself through the lossbench tensor cache, so the data root (and
  the cache directory) must exist at the same path on every node.

Progress events travel from the workers to the driver through a small actor and feed the same display as a local
run. Checkpoints need no shared file system: a worker sends a cell's training state (`checkpoint` events, through
the same actor) and its final weights (with the record) to the driver, which writes them into its results
directory; the driver sends a cell's saved training state with the task. A task that Ray retries after losing its
worker continues from the last state the lost worker sent (the actor keeps it while the cell is in flight). A cell whose training raises is recorded `failed` by the engine with its traceback; a task that fails in Ray
itself (its data cannot be loaded on the worker, the worker is killed for memory, retries run out) is recorded
`failed` with Ray's error and traceback. A task whose worker or node is lost is retried by Ray up to `max_retries`
times; a cell is handed to `on_result` once, when its task has finished for good.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from lossbench.errors import ConfigError
from lossbench.executor_session import HeldBetweenCalls

if TYPE_CHECKING:
    from lossbench.data import ImageData
    from lossbench.grid import Cell
    from lossbench.record import CellRecord
    from lossbench.execution import Job, OnEvent, OnResult

# This module imports neither torch nor the engine at the top: the progress actor's process imports it, and
# should start in a moment. Workers import the engine when they run their first cell.

DataTransfer = Literal["object_store", "worker_cache"]
DATA_TRANSFERS: tuple[str, ...] = ("object_store", "worker_cache")

INSTALL_HINT = 'install it with `uv sync --extra ray` (in a checkout) or `pip install "lossbench[ray]"`'

#: Fault injection for tests and failure drills. When this variable names a file that exists, the first worker to
#: delete it dies (`os._exit`, as a lost node would) at the end of its cell's first epoch; Ray then retries the
#: cell. The variable must be in the environment that the Ray workers start with.
KILL_ONCE_ENV = "LOSSBENCH_RAY_KILL_ONCE"

# Step events are forwarded at most this often (seconds); cell_start and epoch events always are.
_STEP_EVENT_INTERVAL_S = 0.5
# What --address accepts: auto, a Ray Client address, or a GCS address.
_ADDRESS = re.compile(r"auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+")
# How long the driver waits for a finished task before it polls the progress events again (seconds).
_POLL_S = 0.2


def _import_ray() -> Any:
    """The `ray` module, or a ConfigError that says how to install it."""
    # Started under `uv run`, Ray would otherwise upload the working directory and have every worker build its
    # own copy of the uv environment; lossbench's workers run in the Python environment of their Ray node
    # instead. Setting the variable to 1 before the run keeps Ray's behaviour (docs/clusters.md).
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError(
            message="--executor ray needs Ray, which is not installed",
            details=[INSTALL_HINT],
        ) from None
    return ray


class RayExecutor(HeldBetweenCalls):
    """Trains each pending cell as a Ray task with the requested resources; results stream back to the driver.

    `address` is where the cluster is: `auto` (the cluster this machine belongs to), `ray://HOST:PORT` (Ray Client),
    `HOST:PORT` (the head's GCS address, from a node of the cluster) or None (Ray's own choice: `RAY_ADDRESS` if
    set, otherwise a new single-machine instance). When Ray is already initialized in this process the executor
    uses that connection and leaves it open; otherwise it connects (or starts an instance) for the run and
    disconnects after it. Inside `with executor:` (the runner holds it for a whole run) the connection, the
    dataset in the object store and the progress actor stay from one `run` call to the next (adaptive seeding's
    rounds, tuning trials) and are let go when the block ends. `cpus_per_cell` (> 0) and `gpus_per_cell` (>= 0; a
    fraction below 1 shares a GPU, above 1 a whole number) are the Ray resources of one cell; a CPU cell trains with
    floor(cpus_per_cell) torch threads (at least one). `data` chooses how the dataset reaches the workers (see the
    module docs); `local_data` is an already loaded dataset to put into the object store instead of loading it on
    the driver. `max_retries` is how often Ray reruns a cell whose worker or node was lost.

    It implements `execution.Executor` without subclassing it: this module imports neither torch nor the engine
    at the top (see below).
    """

    #: How many cells train at once is the cluster's to decide from its free resources; the run counts one (its
    #: entry in runs.json, and one tuning trial per grid cell and round).
    jobs = 1

    def __init__(
        self,
        address: str | None = None,
        *,
        cpus_per_cell: float = 1.0,
        gpus_per_cell: float = 0.0,
        data: DataTransfer = "object_store",
        local_data: ImageData | None = None,
        max_retries: int = 3,
    ):
        self._ray = _import_ray()
        if address is not None and not _ADDRESS.fullmatch(address):
            raise ConfigError(
                message=f"--address {address!r}: expected auto, ray://HOST:PORT (Ray Client, port 10001 by default) "
                        "or HOST:PORT (the head node's GCS port, 6379 by default, from a node of the cluster)",
                value=address,
            )
        if not (isinstance(cpus_per_cell, (int, float)) and math.isfinite(cpus_per_cell) and cpus_per_cell > 0):
            raise ConfigError(message=f"--cpus-per-cell {cpus_per_cell!r}: must be a number above 0",
                              value=cpus_per_cell)
        if not (isinstance(gpus_per_cell, (int, float)) and math.isfinite(gpus_per_cell) and gpus_per_cell >= 0):
            raise ConfigError(message=f"--gpus-per-cell {gpus_per_cell!r}: must be a number, 0 or more",
                              value=gpus_per_cell)
        if gpus_per_cell > 1 and gpus_per_cell != int(gpus_per_cell):
            raise ConfigError(
                message=f"--gpus-per-cell {gpus_per_cell}: above 1 it must be a whole number of GPUs (Ray packs "
                        "fractions only within one GPU)",
                value=gpus_per_cell,
            )
        if data not in DATA_TRANSFERS:
            raise ConfigError(message=f"unknown data transfer {data!r}", value=data, allowed=list(DATA_TRANSFERS))
        if max_retries < 0:
            raise ConfigError(message=f"max_retries {max_retries}: must be 0 or more", value=max_retries)
        self.address = address
        self.cpus_per_cell = float(cpus_per_cell)
        self.gpus_per_cell = float(gpus_per_cell)
        self.data = data
        self.max_retries = max_retries
        self._local_data = local_data
        self._connected_here = False  # this executor called ray.init, so close() shuts Ray down
        self._data_refs: tuple[Any, list[Any]] | None = None  # (the job's DataRequest, [its object ref])
        self._sink: Any = None  # the progress actor

    def close(self) -> None:
        """Let go of the progress actor and the data, and disconnect if this executor connected."""
        ray = self._ray
        if self._sink is not None:
            with contextlib.suppress(Exception):
                ray.kill(self._sink)
        self._sink, self._data_refs = None, None
        if self._connected_here:
            self._connected_here = False
            with contextlib.suppress(Exception):
                ray.shutdown()

    def describe(self) -> str:
        """One line for the run header, e.g. `Ray (auto) · 1 CPU + 0.25 GPU per cell`."""
        where = self.address or "local instance or RAY_ADDRESS"
        gpus = f" + {self.gpus_per_cell:g} GPU" if self.gpus_per_cell else ""
        return f"Ray ({where}) · {self.cpus_per_cell:g} CPU{gpus} per cell"

    def prepare(self, job: Job) -> None:
        """Load the data the driver sends (object_store) before the runner writes anything, so that a data error
        leaves no files behind; with worker_cache the workers load it themselves."""
        if self.data == "object_store" and self._local_data is None:
            self._local_data = job.data.load()

    def run(self, cells: list[Cell], job: Job, on_start: Callable[[Cell], None], on_event: OnEvent,
            on_result: OnResult) -> None:
        """Train `cells` on the cluster; calls `on_result` once per cell on this thread, in order of completion."""
        ray = self._ray
        if job.engine.device == "cuda" and self.gpus_per_cell == 0:
            raise ConfigError(
                message="train.device is 'cuda' but --gpus-per-cell is 0: Ray hides the GPUs from a task that "
                        "asks for none",
                details=["give each cell a GPU or a share of one, e.g. --gpus-per-cell 1 or --gpus-per-cell 0.25"],
            )
        if not ray.is_initialized():
            self._connect()
            self._connected_here = True
        try:
            self._check_fits()
            self._run(cells, job, on_start, on_event, on_result)
        finally:
            if not self._kept:
                self.close()

    # -- driver side ----------------------------------------------------------------------------------------------

    def _connect(self) -> None:
        ray = self._ray
        try:
            # Worker output is not echoed: results, errors and tracebacks come back in the records.
            ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(
                message=f"cannot reach the Ray cluster at {self.address or 'RAY_ADDRESS'}: {exc}",
                details=["start one with `ray start --head` (see docs/clusters.md), or check --address"],
            ) from None

    def _check_fits(self) -> None:
        """Fail now, instead of waiting forever, when no node of the cluster can hold one cell."""
        nodes = [n.get("Resources", {}) for n in self._ray.nodes() if n.get("Alive")]
        if any(r.get("CPU", 0) >= self.cpus_per_cell and r.get("GPU", 0) >= self.gpus_per_cell for r in nodes):
            return
        offers = sorted({f"{r.get('CPU', 0):g} CPU + {r.get('GPU', 0):g} GPU" for r in nodes}) or ["no live node"]
        raise ConfigError(
            message=f"no node of the Ray cluster can run a cell that needs {self.cpus_per_cell:g} CPU and "
                    f"{self.gpus_per_cell:g} GPU",
            details=[f"the nodes offer: {', '.join(offers)}", "lower --cpus-per-cell / --gpus-per-cell, or add nodes"],
        )

    def _run(self, cells: list[Cell], job: Job, on_start: Callable[[Cell], None], on_event: OnEvent,
             on_result: OnResult) -> None:
        ray = self._ray
        pending = self._submit(cells, job)
        shown = _Shown({cell.id: cell for cell in cells}, on_start)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL_S)
                # Events first: a worker waits until its last event is delivered before it returns its record.
                for cell_id, event, info in self._drain_events():
                    cell = shown.live(cell_id)
                    if cell is not None:
                        on_event(cell, event, info)
                for ref in ready:
                    cell = pending.pop(ref)
                    record = self._record(ref, cell, job)
                    shown.finished(cell)
                    if self._sink is not None:
                        with contextlib.suppress(Exception):
                            self._sink.forget.remote(cell.id)
                    on_result(cell, record)
        finally:
            # Also on Ctrl-C or a lost connection: stop the cells still running, and never let a failing clean-up
            # hide the error that got us here.
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    def _submit(self, cells: list[Cell], job: Job) -> dict[Any, Cell]:
        """Start one Ray task per cell, with the job's data sent once and the progress actor started once; returns
        the cells by their task's reference."""
        from lossbench.checkpoint import read_resume

        ray = self._ray
        if self._data_refs is None or self._data_refs[0] != job.data:
            # Wrapped in a list so that Ray hands the worker the reference, not the value: a worker keeps the
            # tensors it fetched for the next cell of the same run (and of its later rounds).
            refs = [ray.put(self._local_data or job.data.load())] if self.data == "object_store" else []
            self._data_refs = (job.data, refs)
        data_refs = self._data_refs[1]
        if self._sink is None:
            self._sink = ray.remote(num_cpus=0)(_EventSink).remote()
        task = ray.remote(_train_on_worker)
        threads = max(1, int(self.cpus_per_cell))
        return {
            task.options(
                name=f"lossbench {cell.id}", num_cpus=self.cpus_per_cell, num_gpus=self.gpus_per_cell,
                max_retries=self.max_retries, retry_exceptions=False,
            ).remote(cell, job, data_refs, self._sink, threads, read_resume(job.results_dir, cell.id)): cell
            for cell in cells
        }

    def _drain_events(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The progress events the workers sent since the last call (none once the progress actor is lost)."""
        if self._sink is None:
            return []
        try:
            return self._ray.get(self._sink.drain.remote())
        except self._ray.exceptions.RayActorError:  # its node was lost: train on, without progress events
            self._sink = None
            return []

    def _record(self, ref: Any, cell: Cell, job: Job) -> CellRecord:
        """The record a finished task returned; a failed record for every way a Ray task can fail."""
        from lossbench.execution import failed_record

        try:
            return self._ray.get(ref)
        except Exception as exc:
            return failed_record(cell, job, *_describe_failure(exc))


class _Shown:
    """Which cells of one `run` call the display has been told about: each starts once, before its first event or
    its record; events of cells not in the call, or already finished, are dropped."""

    def __init__(self, by_id: dict[str, Cell], on_start: Callable[[Cell], None]):
        self.by_id, self.on_start = by_id, on_start
        self.started: set[str] = set()
        self.done: set[str] = set()

    def live(self, cell_id: str) -> Cell | None:
        """The cell an event is about, started on the display if it was not; None for late events of a cancelled
        earlier call and of finished cells."""
        if cell_id in self.done or cell_id not in self.by_id:
            return None
        cell = self.by_id[cell_id]
        self._start(cell)
        return cell

    def finished(self, cell: Cell) -> None:
        self._start(cell)
        self.done.add(cell.id)

    def _start(self, cell: Cell) -> None:
        if cell.id not in self.started:
            self.started.add(cell.id)
            self.on_start(cell)


def _describe_failure(exc: BaseException) -> tuple[str, str]:
    """(one-line error, traceback text) of a Ray task that did not return a record."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        # RayTaskError: the exception raised in the task; its text carries the worker's traceback.
        return f"{type(cause).__name__}: {cause}".splitlines()[0], str(exc)
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}", text


class _EventSink:
    """A Ray actor holding progress events pushed by the workers until the driver drains them, and the latest
    training state of each cell in flight, for a retry of its task to continue from."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str, dict[str, Any]]] = []
        self._states: dict[str, bytes] = {}

    def push(self, cell_id: str, event: str, info: dict[str, Any]) -> None:
        self._events.append((cell_id, event, info))
        if event == "checkpoint":
            self._states[cell_id] = info["state"]

    def latest_state(self, cell_id: str) -> bytes | None:
        return self._states.get(cell_id)

    def forget(self, cell_id: str) -> None:
        self._states.pop(cell_id, None)

    def drain(self) -> list[tuple[str, str, dict[str, Any]]]:
        events, self._events = self._events, []
        return events


# -- worker side --------------------------------------------------------------------------------------------------

# The dataset a worker process last used, with its key; a worker runs many cells of one run, one at a time.
_WORKER_DATA: tuple[tuple[str, str], ImageData] | None = None


def _worker_data(job: Job, data_refs: list[Any], device: Any) -> ImageData:
    """The run's dataset on `device`, fetched (or loaded) once per worker process."""
    global _WORKER_DATA
    import ray

    key = (data_refs[0].hex() if data_refs else repr(job.data), str(device))
    if _WORKER_DATA is not None and _WORKER_DATA[0] == key:
        return _WORKER_DATA[1]
    _WORKER_DATA = None  # release the previous run's tensors before fetching the next
    data = ray.get(data_refs[0]) if data_refs else job.data.load()
    _WORKER_DATA = (key, data.to(device))
    return _WORKER_DATA[1]


class _Forwarder:
    """The engine's progress callback on a worker: sends events to the sink, step events at most every 0.5 s."""

    def __init__(self, sink: Any, cell_id: str):
        self._sink = sink
        self._cell_id = cell_id
        self._last_step = 0.0
        self._last_ref: Any = None

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "step":
            now = time.monotonic()
            if now - self._last_step < _STEP_EVENT_INTERVAL_S:
                return
            self._last_step = now
        self._last_ref = self._sink.push.remote(self._cell_id, event, info)
        if event == "epoch" and _kill_requested():
            self.flush()
            os._exit(1)

    def flush(self) -> None:
        """Wait until the sink holds every event sent so far (calls from one caller run in order)."""
        if self._last_ref is not None:
            import ray

            ray.wait([self._last_ref], timeout=10)


def _kill_requested() -> bool:
    """True for the one worker that deletes the KILL_ONCE_ENV file, which then dies (fault injection)."""
    marker = os.environ.get(KILL_ONCE_ENV)
    if not marker:
        return False
    try:
        os.unlink(marker)
    except FileNotFoundError:
        return False
    return True


def _train_on_worker(cell: Cell, job: Job, data_refs: list[Any], sink: Any, threads: int,
                     resume: bytes | None = None) -> CellRecord:
    """The Ray task of one cell: load or fetch the data, train (from `resume`, the cell's saved training state, if
    given), return the record (the driver writes it, and the training states the worker sends as events)."""
    import ray
    import torch

    from lossbench.execution import execute_cell

    torch.set_num_threads(threads)
    options = job.engine.options()
    data = _worker_data(job, data_refs, options.device)
    with contextlib.suppress(Exception):  # without the sink (its node lost), the state the task was given
        # A retry of this task (its worker or node was lost) continues from the last state the lost worker sent.
        resume = ray.get(sink.latest_state.remote(cell.id), timeout=60) or resume
    forward = _Forwarder(sink, cell.id)
    record = execute_cell(cell, job, data, options, forward, resume=resume)
    forward.flush()
    return record
