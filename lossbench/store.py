"""The results directory: one JSON per cell written atomically, a lock, and results.csv derived from them.

Layout of `results/<suite>/`:
  cells/<cell-id>.json   one per cell × seed; written to a temp file, fsynced, then renamed into place
  results.csv            one row per cell file, rebuilt from cells/ whenever a cell is written
  suite.yaml             the resolved suite of the latest run
  .lock                  held (flock) by the run writing here; the kernel frees it if that process dies
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lossbench.errors import ResultsLockedError

#: results.csv columns, in order. Metrics of failed or diverged cells are empty.
CSV_COLUMNS = [
    "id", "label", "loss", "regularizer", "augmentation", "optimizer", "scenario", "seed", "status",
    "test_acc", "test_top5", "test_loss", "test_nll", "ece", "train_acc", "gap", "val_acc", "noise_rate",
    "epochs", "epochs_run", "train_time_s", "img_per_s", "peak_mem_mb", "device", "diverged_epoch", "error",
]
FINAL_STATUSES = ("done", "diverged")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader (or a crash) sees either the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; results are ordinary files, so give them the mode open() would (0666 & ~umask).
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultsStore:
    """Reads and writes one results directory. Knows nothing about training."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self._lock_file: io.TextIOWrapper | None = None

    # -- lock -------------------------------------------------------------------------------------------------

    def acquire_lock(self) -> None:
        """Take the directory for this process; a second concurrent run gets ResultsLockedError."""
        self.root.mkdir(parents=True, exist_ok=True)
        f = open(self.root / ".lock", "a+", encoding="utf-8")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise ResultsLockedError(
                message=f"results directory {self.root} is in use by {holder}",
                details=["wait for that run to finish, or write elsewhere with --out DIR"],
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"lossbench pid {os.getpid()}\n")
        f.flush()
        self._lock_file = f
        # Holding the lock, any temp file left here belongs to a writer that died mid-write: remove it.
        for stale in [*self.root.glob(".*.tmp"), *self.cells_dir.glob(".*.tmp")]:
            stale.unlink(missing_ok=True)

    def release_lock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> ResultsStore:
        self.acquire_lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release_lock()

    # -- cells ------------------------------------------------------------------------------------------------

    def cell_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def write_cell(self, record: dict[str, Any]) -> Path:
        path = self.cell_path(record["id"])
        atomic_write_text(path, json.dumps(record, indent=1, allow_nan=True) + "\n")
        return path

    def read_cell(self, cell_id: str) -> dict[str, Any] | None:
        """The record of a cell, or None if it is absent or unreadable (an unreadable file is rerun, not trusted)."""
        try:
            return json.loads(self.cell_path(cell_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def records(self) -> Iterator[dict[str, Any]]:
        for path in sorted(self.cells_dir.glob("*.json")):
            try:
                yield json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue

    def finished_ids(self) -> set[str]:
        """Ids of cells whose result is final (done or diverged); failed cells are retried by the next run."""
        return {r["id"] for r in self.records() if r.get("status") in FINAL_STATUSES}

    # -- derived files ----------------------------------------------------------------------------------------

    def write_suite(self, yaml_text: str) -> None:
        atomic_write_text(self.root / "suite.yaml", yaml_text)

    def rebuild_csv(self) -> Path:
        """Regenerate results.csv from the cell files (one row each, sorted by label then seed)."""
        rows = sorted((csv_row(r) for r in self.records()), key=lambda r: (str(r["label"]), int(r["seed"] or 0)))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        path = self.root / "results.csv"
        atomic_write_text(path, buf.getvalue())
        return path


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """The flat results.csv row of one cell record."""
    metrics = record.get("metrics") or {}
    timing = record.get("timing") or {}
    history = record.get("history") or []
    axes = record.get("axes") or {}
    row: dict[str, Any] = {
        "id": record.get("id"),
        "label": record.get("label"),
        "seed": record.get("seed"),
        "status": record.get("status"),
        "epochs": (record.get("config") or {}).get("train", {}).get("epochs"),
        "epochs_run": timing.get("epochs_run"),
        "device": (record.get("env") or {}).get("device"),
        "diverged_epoch": record.get("diverged_epoch"),
        "error": (record.get("error") or "").splitlines()[0][:200] if record.get("error") else None,
        "val_acc": history[-1].get("val_acc") if history else None,
    }
    for axis in ("loss", "regularizer", "augmentation", "optimizer"):
        row[axis] = axes.get(axis)
    # Results written before the scenario axis existed trained on the clean data.
    row["scenario"] = axes.get("scenario", "none")
    row["noise_rate"] = (metrics.get("scenario") or {}).get("noise_rate")
    for key in ("test_acc", "test_top5", "test_loss", "test_nll", "ece", "train_acc", "gap"):
        row[key] = metrics.get(key)
    for key in ("train_time_s", "img_per_s", "peak_mem_mb"):
        row[key] = timing.get(key)
    return {k: row.get(k) for k in CSV_COLUMNS}
