"""What a run shows while it trains: a rich display on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, TextIO

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

from lossbench.grid import Cell
from lossbench.record import CellRecord


class RunDisplay(Protocol):
    """Receives the events of a run; the runner calls it, it never calls back."""

    def start(self, total: int, skipped: int) -> None: ...
    def cell_start(self, cell: Cell) -> None: ...
    def cell_event(self, cell: Cell, event: str, info: dict[str, Any]) -> None: ...
    def cell_end(self, cell: Cell, record: CellRecord) -> None: ...
    def next_round(self, cells: int) -> None: ...
    def finish(self) -> None: ...

    def plan_range(self, fewest: int, most: int) -> None:
        """Adaptive seeding: the run takes between `fewest` and `most` trainings (after `start`)."""


#: A tuning trial measures no test split: its epochs show the validation accuracy it is judged on instead.
_VAL_FOR_TRIALS = (("val_acc", "val acc"),)


def _epoch_stats(info: dict[str, Any]) -> str:
    """`train loss 0.412  train acc 0.871  test acc 0.853`, leaving out what the epoch did not measure
    (embedding losses have no train accuracy; a diverged epoch has no test accuracy)."""
    parts = [f"train loss {info['train_loss']:.4f}"]
    for key, name in (("train_acc", "train acc"), ("test_acc", "test acc"), *_VAL_FOR_TRIALS):
        if info.get(key) is not None and (key != "val_acc" or info.get("test_acc") is None):
            parts.append(f"{name} {info[key]:.4f}")
    return "  ".join(parts)


def _epoch_figures_by_priority(info: dict[str, Any]) -> list[str]:
    """The last epoch's figures, most wanted first: a narrow line keeps the first ones that fit."""
    figures = []
    for key, name in (("test_acc", "test acc"), *_VAL_FOR_TRIALS, ("train_loss", "train loss"),
                      ("train_acc", "train acc"), ("test_loss", "test loss")):
        if info.get(key) is not None and (key != "val_acc" or info.get("test_acc") is None):
            figures.append(f"{name} {info[key]:.4f}")
    return figures


def _seed_text(cell: Cell) -> str:
    """` · seed 0`; for a tuning trial (lossbench/tune.py) its number in its cell's study, ` · tuning trial 3`."""
    if cell.trial is not None:
        return f" · tuning trial {cell.trial.number}"
    return f" · seed {cell.seed}"


def _cell_name(cell: Cell) -> str:
    return f"{cell.label}{_seed_text(cell)}"


def _result_detail(record: CellRecord) -> tuple[str, bool]:
    """(`test acc 0.9120`, True); for a tuning trial, which reads no test split, its `val acc 0.9010`; else (the
    error, False)."""
    for value, name in ((record.metrics.test_acc, "test acc"), (record.metrics.val_acc, "val acc")):
        if value is not None:
            return f"{name} {value:.4f}", True
    return record.error or "", False


def format_duration(seconds: float | None) -> str:
    """`h:mm:ss`, or `-:--:--` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-:--:--"
    whole = int(round(max(seconds, 0.0)))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class GridWork:
    """How much of a grid is done, counted in epochs of all cells, and the ETA that follows from it.

    The rate is all the work done since the start divided by the time since the start, so the estimate exists
    as soon as any epoch has progressed and stays steady with cells of hours (a fixed time window would see no
    progress between two cell ends). Cells not started yet count as many epochs as the last cell that started.
    """

    def __init__(self, total_cells: int, started_at: float):
        self.total_cells = total_cells
        self.started_at = started_at
        self.finished_cells = 0
        self.finished_epochs = 0.0
        self.running: dict[str, tuple[float, float]] = {}  # cell id -> (epochs done, epochs in the cell)
        self.epochs_per_cell: float | None = None
        #: Under adaptive seeding, the most cells the rounds can still take (total_cells are the fewest so far).
        self.most_cells: int | None = None

    def cell_started(self, cell_id: str) -> None:
        self.running[cell_id] = (0.0, self.epochs_per_cell or 0.0)

    def cell_sized(self, cell_id: str, epochs: int) -> None:
        self.epochs_per_cell = float(epochs)
        done, _ = self.running.get(cell_id, (0.0, 0.0))
        self.running[cell_id] = (done, float(epochs))

    def cell_progressed(self, cell_id: str, epochs_done: float) -> None:
        _, size = self.running.get(cell_id, (0.0, self.epochs_per_cell or 0.0))
        self.running[cell_id] = (epochs_done, size)

    def cell_finished(self, cell_id: str) -> None:
        """A finished cell counts its whole budget, also when it stopped early (diverged or failed)."""
        _, size = self.running.pop(cell_id, (0.0, self.epochs_per_cell or 0.0))
        self.finished_cells += 1
        self.finished_epochs += size or self.epochs_per_cell or 0.0

    def done(self) -> float:
        return self.finished_epochs + sum(done for done, _ in self.running.values())

    @property
    def planned_cells(self) -> int:
        """The cells the bar counts against: the most the run can take (adaptive seeding), else the total."""
        return max(self.total_cells, self.most_cells or 0)

    def total(self, cells: int | None = None) -> float | None:
        """Epochs of the whole run if it trains `cells` cells (default: the cells known so far)."""
        if self.epochs_per_cell is None:
            return None
        cells = self.total_cells if cells is None else cells
        sizes = sum(size or self.epochs_per_cell for _, size in self.running.values())
        waiting = cells - self.finished_cells - len(self.running)
        return self.finished_epochs + sizes + max(waiting, 0) * self.epochs_per_cell

    def eta(self, now: float, cells: int | None = None) -> float | None:
        """Seconds left if the run trains `cells` cells (default: those known so far), or None before any work."""
        done, total, elapsed = self.done(), self.total(cells), now - self.started_at
        if total is None or done <= 0 or elapsed <= 0:
            return None
        return max(total - done, 0.0) / (done / elapsed)

    def eta_text(self, now: float) -> str:
        """`eta 0:01:10`, or under adaptive seeding the range from the fewest to the most cells left."""
        low = self.eta(now)
        if self.planned_cells == self.total_cells:
            return f"eta {format_duration(low)}"
        return f"eta {format_duration(low)}–{format_duration(self.eta(now, self.planned_cells))}"

    def count_text(self) -> str:
        """`14/16 cells`, or under adaptive seeding `14/16–40 cells` (the fewest and the most cells to train)."""
        if self.planned_cells == self.total_cells:
            return f"{self.finished_cells}/{self.total_cells} cells"
        return f"{self.finished_cells}/{self.total_cells}–{self.planned_cells} cells"


def _fit(required: list[str], optional: list[str], width: int, sep: str = "  ") -> str:
    """`required` joined, then as many of `optional` (in order) as fit in `width` characters."""
    line = sep.join(required)
    for part in optional:
        if len(line) + len(sep) + len(part) > width:
            break
        line += sep + part
    return line


def _bar(fraction: float, width: int) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "━" * filled + "─" * (width - filled)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


@dataclass
class _RunningCell:
    name: str
    epochs: int | None = None
    steps_per_epoch: int = 1
    done: float = 0.0  # epochs, with the running one as a fraction
    resumed: int = 0  # epochs trained by an earlier run (mid-cell resume): not this run's work
    figures: list[str] = field(default_factory=list)


class GridView:
    """The live lines of a run, laid out for the console's width at every refresh.

    The grid line keeps its count and ETA at any width (the bar and elapsed time give way first); a running
    cell's line keeps its epoch count, then as much of its name as fits, then its last figures by priority.
    """

    def __init__(self, work: GridWork, clock: Callable[[], float]):
        self.work = work
        self.clock = clock
        self.cells: dict[str, _RunningCell] = {}
        self.lock = threading.Lock()

    def grid_line(self, width: int) -> str:
        now = self.clock()
        work = self.work
        count = work.count_text()
        eta = work.eta_text(now)
        elapsed = format_duration(now - work.started_at)
        # Against the most cells the run can take: under adaptive seeding the bar never goes backwards.
        total = work.total(work.planned_cells)
        fraction = work.done() / total if total else work.finished_cells / max(work.planned_cells, 1)
        percent = f"{fraction:4.0%}"
        fixed = f"grid {count}  {elapsed}  {eta}"
        bar_width = min(40, width - len(fixed) - len(percent) - 3)
        if bar_width >= 8:
            return f"grid {_bar(fraction, bar_width)} {percent} {count}  {elapsed}  {eta}"
        return _fit([f"grid {count}", eta], [elapsed], width)

    def cell_line(self, cell: _RunningCell, width: int) -> str:
        epochs = f"epoch {min(int(cell.done) + 1, cell.epochs)}/{cell.epochs}" if cell.epochs else "starting"
        indent = "  "
        room_for_name = width - len(indent) - len(epochs) - 2
        name_width = min(len(cell.name), max(room_for_name, 12))
        head = f"{indent}{_shorten(cell.name, name_width)}  {epochs}"
        return _fit([head], cell.figures, width)

    def lines(self, width: int) -> list[str]:
        with self.lock:
            cells = list(self.cells.values())
        return [self.grid_line(width)] + [self.cell_line(c, width) for c in cells]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        for line in self.lines(width):
            yield Text(line, no_wrap=True, overflow="ellipsis", style="bold" if line.startswith("grid") else "")


class RichDisplay:
    """A grid line (bar, done/total, elapsed, ETA from the epochs done) and one line per running cell with its
    epoch and last figures, redrawn for the terminal's width; a finished cell leaves one line above them."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic, auto_refresh: bool = True):
        self.console = console
        self.clock = clock
        self.work = GridWork(0, clock())
        self.view = GridView(self.work, clock)
        # Prints of this process (a warning, say) go above the live lines, as with rich's progress bars.
        self.live = Live(self.view, console=console, auto_refresh=auto_refresh, refresh_per_second=4,
                         transient=True)

    def start(self, total: int, skipped: int) -> None:
        if skipped:
            self.console.print(f"[dim]{skipped} cell(s) already have results and are skipped (--force reruns them)[/]")
        self.work.total_cells = total
        self.work.started_at = self.clock()
        self.live.start()

    def plan_range(self, fewest: int, most: int) -> None:
        """Adaptive seeding: the run trains between `fewest` and `most` cells (the total so far is the fewest)."""
        with self.view.lock:
            self.work.most_cells = most

    def next_round(self, cells: int) -> None:
        """Adaptive seeding added a round of `cells` cells: the grid grows by that much."""
        with self.view.lock:
            self.work.total_cells += cells
        self.console.print(f"[dim]next round of adaptive seeding: {cells} more cell(s)[/]")

    def cell_start(self, cell: Cell) -> None:
        with self.view.lock:
            self.view.cells[cell.id] = _RunningCell(_cell_name(cell))
            self.work.cell_started(cell.id)

    def cell_event(self, cell: Cell, event: str, info: dict[str, Any]) -> None:
        with self.view.lock:
            running = self.view.cells.get(cell.id)
            if running is None:
                return
            if event == "cell_start":
                running.epochs = info["epochs"]
                running.steps_per_epoch = info.get("steps_per_epoch") or 1
                running.done = running.resumed = info.get("first_epoch", 1) - 1
                # The ETA counts this run's work: a resumed cell's epochs from an earlier run are not part of it.
                self.work.cell_sized(cell.id, info["epochs"] - running.resumed)
            elif event == "step":
                running.done = info["epoch"] - 1 + info["step"] / running.steps_per_epoch
                self.work.cell_progressed(cell.id, running.done - running.resumed)
            elif event == "epoch":
                running.done = float(info["epoch"])
                running.figures = _epoch_figures_by_priority(info)
                self.work.cell_progressed(cell.id, running.done - running.resumed)

    def cell_end(self, cell: Cell, record: CellRecord) -> None:
        with self.view.lock:
            self.view.cells.pop(cell.id, None)
            self.work.cell_finished(cell.id)
        self.console.print(finished_line(cell, record, self.console.width), highlight=False)
        self.live.refresh()

    def finish(self) -> None:
        self.live.stop()
        self.console.print(Text(self.view.grid_line(self.console.width), no_wrap=True, overflow="ellipsis"))


def finished_line(cell: Cell, record: CellRecord, width: int) -> Text:
    """`✓ <cell> · seed 0  test acc 0.9120  12.3 s`: the mark, figure and time are kept, the name is shortened."""
    marks = {"done": ("✓", "green"), "diverged": ("diverged", "yellow"), "failed": ("failed", "red")}
    mark, style = marks[record.status]
    detail, measured = _result_detail(record)
    secs = record.timing.train_time_s
    timing = f"  {secs:.1f} s" if secs else ""
    seed = _seed_text(cell)
    # An error message gives way to a name of at least 8 characters; the seed and the time stay whole.
    if not measured:
        detail = _shorten(detail, max(width - len(mark) - len(timing) - len(seed) - 4 - 8, 12))
    name_width = max(width - len(mark) - len(detail) - len(timing) - len(seed) - 4, 8)
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(mark, style=style)
    # The label gives way, never the seed: the seeds of one cell must stay told apart at any width.
    line.append(f" {_shorten(cell.label, name_width)}{seed}  {detail}")
    line.append(timing, style="dim")
    return line


class PlainDisplay:
    """One line per started cell, per epoch and per finished cell, for logs and pipes.

    While several cells train at once (--jobs, Ray), epoch lines name their cell's id so they can be told apart.
    """

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.total = 0
        self.started = 0
        self.finished = 0
        self.running: set[str] = set()
        self.t0 = time.perf_counter()
        #: Under adaptive seeding, the most cells the run can take.
        self.most: int | None = None

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, total: int, skipped: int) -> None:
        self.total = total
        self._print(f"{total} cell(s) to run, {skipped} already done")

    def plan_range(self, fewest: int, most: int) -> None:
        self.most = most
        self._print(f"adaptive seeding: {fewest}–{most} cell(s) in all, as the rounds decide")

    def next_round(self, cells: int) -> None:
        self.total += cells
        self._print(f"next round of adaptive seeding: {cells} more cell(s)")

    def cell_start(self, cell: Cell) -> None:
        self.started += 1
        self.running.add(cell.id)
        self._print(f"[{self.started}/{self.total}] {_cell_name(cell)}  ({cell.id})")

    def cell_event(self, cell: Cell, event: str, info: dict[str, Any]) -> None:
        if event == "cell_start" and info.get("first_epoch", 1) > 1:
            owner = f" ({cell.id})" if len(self.running) > 1 else ""
            self._print(f"    continues{owner} after epoch {info['first_epoch'] - 1} of {info['epochs']}, from its "
                        f"saved training state")
        elif event == "epoch":
            owner = f" ({cell.id})" if len(self.running) > 1 else ""
            line = f"    epoch {info['epoch']}{owner}: {_epoch_stats(info)}"
            if info.get("epoch_s") is not None:
                line += f"  ({info['epoch_s']:.1f} s)"
            self._print(line)

    def cell_end(self, cell: Cell, record: CellRecord) -> None:
        self.finished += 1
        self.running.discard(cell.id)
        detail, _ = _result_detail(record)
        per_cell = (time.perf_counter() - self.t0) / self.finished
        eta = format_duration(per_cell * (self.total - self.finished))
        count = f"{self.finished}/{self.total}"
        if self.most is not None and self.most > self.total:
            count += f"–{self.most}"
            eta += f"–{format_duration(per_cell * (self.most - self.finished))}"
        self._print(f"    {record.status}: {_cell_name(cell)} ({cell.id}): {detail}  [grid {count}, eta {eta}]")

    def finish(self) -> None:
        return None


class SilentDisplay:
    """Shows nothing (library use and tests)."""

    def start(self, total: int, skipped: int) -> None: ...
    def cell_start(self, cell: Cell) -> None: ...
    def cell_event(self, cell: Cell, event: str, info: dict[str, Any]) -> None: ...
    def cell_end(self, cell: Cell, record: CellRecord) -> None: ...
    def next_round(self, cells: int) -> None: ...
    def finish(self) -> None: ...
    def plan_range(self, fewest: int, most: int) -> None: ...


class DisplayGroup:
    """Passes every event of a run to several displays in turn (the screen and TensorBoard, say)."""

    def __init__(self, displays: list[RunDisplay]):
        self.displays = displays

    def start(self, total: int, skipped: int) -> None:
        for d in self.displays:
            d.start(total, skipped)

    def cell_start(self, cell: Cell) -> None:
        for d in self.displays:
            d.cell_start(cell)

    def cell_event(self, cell: Cell, event: str, info: dict[str, Any]) -> None:
        for d in self.displays:
            d.cell_event(cell, event, info)

    def cell_end(self, cell: Cell, record: CellRecord) -> None:
        for d in self.displays:
            d.cell_end(cell, record)

    def plan_range(self, fewest: int, most: int) -> None:
        for d in self.displays:
            d.plan_range(fewest, most)

    def next_round(self, cells: int) -> None:
        for d in self.displays:
            d.next_round(cells)

    def finish(self) -> None:
        for d in self.displays:
            d.finish()
