"""results.csv: the flat row of each cell record, in a fixed column order, and the file kept in step with the cell
files at a constant cost per cell (ResultsCsv)."""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lossbench.atomic_write import atomic_write_text, write_error
from lossbench.axes import AXES, AXIS_NAMES
from lossbench.record import CellRecord

#: results.csv columns, in order. Metrics of failed or diverged cells are empty.
CSV_COLUMNS = [
    "id", "label", *AXIS_NAMES, "seed", "status",
    "test_acc", "test_top5", "test_loss", "test_nll", "ece", "brier", "train_acc", "gap", "val_acc",
    "noise_rate", "epochs", "epochs_run", "train_time_s", "img_per_s", "peak_mem_mb", "device", "diverged_epoch",
    "error", "eval_time_s", "cell_s", "model_params", "loss_params", "start_load_1m", "end_load_1m", "cores",
    "suite", "dataset", "settings", "tuned",
]
#: results.csv columns that measure the machine and the moment (times, memory, load), not the training: they
#: differ between two runs of the same cell, where every other column is the same.
MACHINE_COLUMNS = ("train_time_s", "img_per_s", "peak_mem_mb", "eval_time_s", "cell_s", "start_load_1m",
                   "end_load_1m", "cores")


def csv_row(record: CellRecord) -> dict[str, Any]:
    """The flat results.csv row of one cell record."""
    row: dict[str, Any] = {
        "id": record.id,
        "label": record.label,
        "seed": record.seed,
        "status": record.status,
        "epochs": record.epochs,
        "epochs_run": record.timing.epochs_run,
        "device": record.device,
        "diverged_epoch": record.diverged_epoch,
        "error": record.error_line,
        "val_acc": record.last_val_acc,
        "noise_rate": record.noise_rate,
        # What tells apart rows of one label and seed from runs with other settings (--force into one directory).
        "suite": record.suite,
        "dataset": (record.config.get("dataset") or {}).get("identity"),
        "settings": record.settings_id,
        # A tuned cell's chosen values: its optimizer column names the suite's recipe before tuning.
        "tuned": _tuned_text(record),
    }
    for axis in AXES:
        row[axis.name] = record.axes.get(axis.name, axis.absent)
    for key in ("test_acc", "test_top5", "test_loss", "test_nll", "ece", "brier", "train_acc", "gap"):
        row[key] = record.metrics.get(key)
    for key in ("train_time_s", "img_per_s", "peak_mem_mb", "eval_time_s", "cell_s"):
        row[key] = record.timing.get(key)
    for key in ("model_params", "loss_params"):
        row[key] = record.metrics.get(key)
    # The machine's load around the cell: its times compare with others' only where the load stayed below cores.
    for key in ("start_load_1m", "end_load_1m", "cores"):
        row[key] = record.load.get(key)
    return {k: row.get(k) for k in CSV_COLUMNS}


def _tuned_text(record: CellRecord) -> str | None:
    """The values tuning chose for a cell, as `path=value; ...` (None for a cell that was not tuned)."""
    params = (record.config.get("tuned") or {}).get("params")
    if not isinstance(params, dict) or not params:
        return None
    return "; ".join(f"{path}={value:.6g}" if isinstance(value, float) else f"{path}={value}"
                     for path, value in params.items())


def csv_text(rows: list[dict[str, Any]], header: bool = True) -> str:
    """results.csv lines for `rows` (already flat, in CSV_COLUMNS), with the header line first if asked."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class ResultsCsv:
    """results.csv kept in step with the cell files at a constant cost per cell.

    The rows live in memory, keyed by cell id. A new cell's row is appended to the file with one write; a row that
    changes (a failed cell trained again) waits for the next full rewrite, which is atomic and happens at most
    every `min_interval_s` seconds (and no more often than 20 times its own duration, so that rewriting 100,000
    rows stays a small share of the run), plus once by `close`. A reader, or a crash at any moment, therefore
    finds the previous complete file or that file plus whole appended rows: always a valid CSV whose every row
    matches a cell file, possibly one version behind. The next run rewrites it from the cell files.
    """

    def __init__(self, path: Path, rows: dict[str, dict[str, Any]], *, min_interval_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.path = Path(path)
        self.rows = rows
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._in_file: set[str] = set()  # ids whose current row is in the file
        self._stale = True  # the file lacks a change (a replaced row) or is not sorted
        self._next_rewrite = 0.0
        self._fd: int | None = None

    def rewrite(self) -> None:
        """Write every row, sorted by label then seed, atomically (the old file stays whole until the rename)."""
        started = self.clock()
        self._close_fd()
        rows = sorted(self.rows.values(), key=lambda r: (str(r["label"]), int(r["seed"])))
        atomic_write_text(self.path, csv_text(rows))
        self._in_file = set(self.rows)
        self._stale = False
        took = self.clock() - started
        self._next_rewrite = self.clock() + max(self.min_interval_s, 20 * took)

    def put(self, row: dict[str, Any]) -> None:
        """Take the row of a cell just written: append it, or note the change for the next rewrite."""
        cell_id = row["id"]
        replaced = cell_id in self.rows
        self.rows[cell_id] = row
        self._stale = True  # appended rows are unsorted; close() sorts them
        if replaced:
            self._in_file.discard(cell_id)
            if self.clock() >= self._next_rewrite:
                self.rewrite()
            return
        self._append(row)
        if len(self._in_file) < len(self.rows) and self.clock() >= self._next_rewrite:
            self.rewrite()  # a changed row has waited long enough

    def _append(self, row: dict[str, Any]) -> None:
        line = csv_text([row], header=False).encode("utf-8")
        try:
            if self._fd is None:
                if not self.path.is_file():
                    atomic_write_text(self.path, csv_text([]))
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            # One write of a whole line: a process killed around it leaves the line whole or absent.
            os.write(self._fd, line)
        except OSError as exc:
            raise write_error(self.path, exc) from None
        self._in_file.add(row["id"])

    def close(self) -> None:
        """Rewrite the file sorted if anything changed since the last rewrite, and let go of it."""
        if self._stale:
            self.rewrite()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
