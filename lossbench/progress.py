"""What a run shows while it trains: a rich display on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lossbench.grid import Cell


class RunDisplay(Protocol):
    """Receives the events of a run; the runner calls it, it never calls back."""

    def start(self, total: int, skipped: int) -> None: ...
    def cell_start(self, cell: Cell) -> None: ...
    def cell_event(self, cell: Cell, event: str, info: dict[str, Any]) -> None: ...
    def cell_end(self, cell: Cell, record: dict[str, Any]) -> None: ...
    def finish(self) -> None: ...


def _epoch_stats(info: dict[str, Any]) -> str:
    """`train loss 0.412  train acc 0.871  test acc 0.853`, leaving out what the epoch did not measure
    (embedding losses have no train accuracy; a diverged epoch has no test accuracy)."""
    parts = [f"train loss {info['train_loss']:.4f}"]
    for key, name in (("train_acc", "train acc"), ("test_acc", "test acc")):
        if info.get(key) is not None:
            parts.append(f"{name} {info[key]:.4f}")
    return "  ".join(parts)


def _cell_name(cell: Cell) -> str:
    return f"{cell.label} · seed {cell.seed}"


class RichDisplay:
    """A grid bar with ETA and one epoch bar per running cell, with the last epoch's loss and accuracy."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            refresh_per_second=8,
        )
        self.grid: TaskID | None = None
        self.cells: dict[str, TaskID] = {}
        self.steps: dict[str, int] = {}

    def start(self, total: int, skipped: int) -> None:
        if skipped:
            self.console.print(f"[dim]{skipped} cell(s) already have results and are skipped (--force reruns them)[/]")
        self.progress.start()
        self.grid = self.progress.add_task("[bold]grid[/]", total=total, stats="")

    def cell_start(self, cell: Cell) -> None:
        self.cells[cell.id] = self.progress.add_task(f"  {_cell_name(cell)}", total=None, stats="")

    def cell_event(self, cell: Cell, event: str, info: dict[str, Any]) -> None:
        task = self.cells.get(cell.id)
        if task is None:
            return
        if event == "cell_start":
            self.steps[cell.id] = info["steps_per_epoch"]
            self.progress.update(task, total=info["epochs"], completed=0)
        elif event == "step":
            per_epoch = self.steps.get(cell.id, 1)
            self.progress.update(task, completed=info["epoch"] - 1 + info["step"] / per_epoch)
        elif event == "epoch":
            self.progress.update(task, completed=info["epoch"], stats=_epoch_stats(info))

    def cell_end(self, cell: Cell, record: dict[str, Any]) -> None:
        task = self.cells.pop(cell.id, None)
        if task is not None:
            self.progress.remove_task(task)
        status = record["status"]
        acc = (record.get("metrics") or {}).get("test_acc")
        mark = {"done": "[green]✓[/]", "diverged": "[yellow]diverged[/]", "failed": "[red]failed[/]"}[status]
        detail = f"test acc {acc:.4f}" if acc is not None else (record.get("error") or "")
        secs = (record.get("timing") or {}).get("train_time_s")
        timing = f" [dim]{secs:.1f} s[/]" if secs else ""
        self.progress.console.print(f"{mark} {_cell_name(cell)}  {detail}{timing}")
        if self.grid is not None:
            self.progress.advance(self.grid)

    def finish(self) -> None:
        self.progress.stop()


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

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, total: int, skipped: int) -> None:
        self.total = total
        self._print(f"{total} cell(s) to run, {skipped} already done")

    def cell_start(self, cell: Cell) -> None:
        self.started += 1
        self.running.add(cell.id)
        self._print(f"[{self.started}/{self.total}] {_cell_name(cell)}  ({cell.id})")

    def cell_event(self, cell: Cell, event: str, info: dict[str, Any]) -> None:
        if event == "epoch":
            owner = f" ({cell.id})" if len(self.running) > 1 else ""
            line = f"    epoch {info['epoch']}{owner}: {_epoch_stats(info)}"
            if info.get("epoch_s") is not None:
                line += f"  ({info['epoch_s']:.1f} s)"
            self._print(line)

    def cell_end(self, cell: Cell, record: dict[str, Any]) -> None:
        self.finished += 1
        self.running.discard(cell.id)
        acc = (record.get("metrics") or {}).get("test_acc")
        detail = f"test acc {acc:.4f}" if acc is not None else (record.get("error") or "")
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.finished * (self.total - self.finished)
        self._print(f"    {record['status']}: {_cell_name(cell)} ({cell.id}): {detail}  "
                    f"[grid {self.finished}/{self.total}, eta {eta:.0f} s]")

    def finish(self) -> None:
        return None


class SilentDisplay:
    """Shows nothing (library use and tests)."""

    def start(self, total: int, skipped: int) -> None: ...
    def cell_start(self, cell: Cell) -> None: ...
    def cell_event(self, cell: Cell, event: str, info: dict[str, Any]) -> None: ...
    def cell_end(self, cell: Cell, record: dict[str, Any]) -> None: ...
    def finish(self) -> None: ...
