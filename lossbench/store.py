"""The results directory: one JSON per cell written atomically, a lock, and results.csv derived from them.

Layout of `results/<suite>/`:
  cells/<cell-id>.json   one per cell × seed; written to a temp file, fsynced, then renamed into place
  results.csv            one row per cell file, derived from cells/: a run rewrites it sorted when it starts and
                         ends, appends a row per new cell in between (at constant cost per cell), and rewrites it
                         at most every few seconds when a cell's row changes; it can always be rebuilt
  suite.yaml             the resolved suite of the latest run
  runs.json              one entry per run into the directory: its wall time and where it went (record_run)
  .lock                  held (flock) by the run writing here; the kernel frees it if that process dies
  .lossbench             the marker saying lossbench made this directory: lossbench writes only into an empty
                         directory, one with this marker, or one of its own written before the marker existed

Every file is written atomically, so a full disk or a crash leaves the previous version whole; a write that fails
raises ResultsWriteError naming the file and the reason (lossbench/atomic_write.py); results.csv's rows and its
incremental upkeep are in lossbench/results_csv.py.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lossbench.atomic_write import atomic_write_text, write_error
from lossbench.errors import (
    ForeignDirectoryError, RecordError, RecordSchemaError, ResultsLockedError, ResultsWriteError,
)
from lossbench.record import CellRecord
from lossbench.results_csv import ResultsCsv, csv_row

#: The file listing every run into a results directory with its wall time (ResultsStore.record_run).
RUNS_FILE = "runs.json"
#: The file that marks a directory as a lossbench results directory.
MARKER = ".lossbench"
MARKER_TEXT = "This directory holds lossbench results; lossbench writes here (cells/, results.csv, report.md, plots/).\n"


def is_lossbench_dir(root: Path) -> bool:
    """Whether `root` is a results directory lossbench made: it holds the marker, or (written before the marker
    existed) a suite.yaml of a suite and cells/*.json files."""
    if (root / MARKER).is_file():
        return True
    try:
        suite = yaml.safe_load((root / "suite.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return (isinstance(suite, dict) and {"name", "grid"} <= set(suite)
            and any(p.is_file() for p in (root / "cells").glob("*.json")))


def check_results_dir(root: Path) -> None:
    """Raise ForeignDirectoryError unless lossbench may write into `root`: absent, empty, or a lossbench results
    directory. Another program's directory is never written into."""
    root = Path(root)
    if not root.exists() and not root.is_symlink():
        return
    if not root.is_dir():
        raise ForeignDirectoryError(
            message=f"results directory {root} is a file, not a directory",
            value=str(root), details=["give --out a new or empty directory"])
    try:
        entries = sorted(p.name for p in root.iterdir())
    except OSError as exc:
        raise ResultsWriteError(message=f"cannot read results directory {root}: {exc.strerror or exc}",
                                value=str(root), details=["write elsewhere with --out DIR"]) from None
    if not entries or is_lossbench_dir(root):
        return
    shown = ", ".join(entries[:5]) + (f", … ({len(entries)} entries)" if len(entries) > 5 else "")
    raise ForeignDirectoryError(
        message=f"{root} is not a lossbench results directory (it holds {shown}); lossbench writes only into a new "
                f"or empty directory or one it made",
        value=str(root),
        details=[f"give --out a new directory, e.g. --out {root / 'lossbench'}"],
    )


@dataclass
class DirectoryScan:
    """What one pass over cells/ found: every cell record by id, and the files that are not one."""

    records: dict[str, CellRecord] = field(default_factory=dict)
    #: (file, why) for every file of cells/ that is not a cell record; lossbench leaves them as they are.
    ignored: list[tuple[Path, str]] = field(default_factory=list)


class ResultsStore:
    """Reads and writes one results directory. Knows nothing about training."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self._lock_file: io.TextIOWrapper | None = None
        self._csv: ResultsCsv | None = None

    # -- lock -------------------------------------------------------------------------------------------------

    def acquire_lock(self) -> None:
        """Take the directory for this process; a second concurrent run gets ResultsLockedError.

        Refuses another program's directory (ForeignDirectoryError) and marks the directory as lossbench's.
        """
        check_results_dir(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            f = open(self.root / ".lock", "a+", encoding="utf-8")
        except OSError as exc:
            raise write_error(self.root / ".lock", exc) from None
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            error = self._locked_error(f)
            f.close()
            raise error from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"lossbench pid {os.getpid()}\n")
            f.flush()
            if not (self.root / MARKER).is_file():
                atomic_write_text(self.root / MARKER, MARKER_TEXT)
        except (OSError, ResultsWriteError) as exc:
            f.close()
            raise exc if isinstance(exc, ResultsWriteError) else write_error(self.root / ".lock", exc) from None
        self._lock_file = f
        # Holding the lock, any temp file left here belongs to a writer that died mid-write: remove it.
        for stale in [*self.root.glob(".*.tmp"), *self.cells_dir.glob(".*.tmp"),
                      *(self.root / "checkpoints").glob(".*.tmp")]:
            stale.unlink(missing_ok=True)

    def check_not_locked(self) -> None:
        """Raise ResultsLockedError if another run holds the directory now. Writes nothing, takes nothing.

        Lets `run` refuse a busy directory before it prints anything; the lock itself is taken by acquire_lock.
        """
        try:
            f = open(self.root / ".lock", encoding="utf-8")
        except OSError:  # no lock file (or none readable): nothing holds the directory
            return
        with f:
            try:
                # A shared probe: it fails only against a holder's exclusive lock, and two probes never collide.
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._locked_error(f) from None

    def _locked_error(self, lock_file: io.TextIOBase) -> ResultsLockedError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "another process"
        return ResultsLockedError(
            message=f"results directory {self.root} is in use by {holder}",
            details=["wait for that run to finish, or write elsewhere with --out DIR"],
        )

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

    def write_cell(self, record: CellRecord) -> Path:
        path = self.cell_path(record.id)
        atomic_write_text(path, json.dumps(record.to_dict(), indent=1, allow_nan=True) + "\n")
        return path

    def read_cell(self, cell_id: str) -> CellRecord | None:
        """The record of a cell, or None if it is absent, unreadable or not a cell record of that id (such a file is
        rerun, not trusted).

        A record of a newer schema raises RecordSchemaError: this version must not overwrite what it cannot read.
        """
        record, _ = read_cell_file(self.cell_path(cell_id))
        return record

    def records(self) -> Iterator[CellRecord]:
        """Every cell record of the directory; files that are not one (strays, wrong shapes) are skipped.
        Raises RecordSchemaError on a file of a newer schema."""
        for path in sorted(self.cells_dir.glob("*.json")):
            record, _ = read_cell_file(path)
            if record is not None:
                yield record

    def ignored_files(self) -> list[tuple[Path, str]]:
        """(file, why) for every file of cells/ that is not a cell record; lossbench leaves them as they are."""
        return self.scan().ignored

    def scan(self) -> DirectoryScan:
        """Read every file of cells/ once: the records by id and the files that are not one. Also keeps the rows
        of results.csv in memory, so that a run that follows (`open_csv`, `add_cell`) reads no cell file again.
        Raises RecordSchemaError on a file of a newer schema."""
        scan = DirectoryScan()
        names = sorted(os.listdir(self.cells_dir)) if self.cells_dir.is_dir() else []
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                continue  # a temp file of a writer (or one that died: the next lock holder removes it)
            path = self.cells_dir / name
            record, why = read_cell_file(path)
            if record is None:
                scan.ignored.append((path, why or "not a cell record"))
            else:
                scan.records[record.id] = record
        self._csv = ResultsCsv(self.root / "results.csv", {i: csv_row(r) for i, r in scan.records.items()})
        return scan

    def other_suite(self, suite: str, dataset: str, records: Iterable[CellRecord]) -> str | None:
        """Why this directory holds another suite's results than `suite` on `dataset` (a dataset identity), or
        None when it holds none or only theirs. Judged from its suite.yaml's name and its cell `records` (those
        of `scan`)."""
        held: dict[str, dict[str, None]] = {}  # suite name → dataset identities ('' where unknown), in order
        try:
            written = yaml.safe_load((self.root / "suite.yaml").read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            written = None
        if isinstance(written, dict) and isinstance(written.get("name"), str) and written["name"] != suite:
            held.setdefault(written["name"], {})
        for record in records:
            identity = str((record.config.get("dataset") or {}).get("identity") or "")
            if (record.suite and record.suite != suite) or (identity and identity != dataset):
                held.setdefault(record.suite or suite, {})[identity] = None
        if not held:
            return None
        # The dataset is named where it tells the runs apart.
        other_data = any(i and i != dataset for identities in held.values() for i in identities)
        theirs = ", ".join(f"suite '{name}'" + (f" on {' and '.join(i for i in identities if i)}"
                                                if other_data and any(identities) else "")
                           for name, identities in held.items())
        ours = f"suite '{suite}'" + (f" on {dataset}" if other_data else "")
        return f"results directory {self.root} holds {theirs}; this run is {ours}"

    # -- derived files ----------------------------------------------------------------------------------------

    def write_suite(self, yaml_text: str) -> None:
        atomic_write_text(self.root / "suite.yaml", yaml_text)

    def record_run(self, entry: dict[str, Any]) -> None:
        """Append one run's entry (times in seconds, see run_clock.RunClock) to runs.json, atomically."""
        atomic_write_text(self.root / RUNS_FILE, json.dumps([*read_runs(self.root), entry], indent=1) + "\n")

    def rebuild_csv(self) -> Path:
        """Regenerate results.csv from the cell files (one row each, sorted by label then seed)."""
        self.scan()
        assert self._csv is not None
        self._csv.rewrite()
        return self._csv.path

    # -- results.csv during a run: constant cost per cell ---------------------------------------------------------

    def open_csv(self) -> None:
        """Start keeping results.csv for a run: rewrite it sorted from the rows in memory (from `scan`, which runs
        now if no scan has), so that rows can be appended to it. Call while holding the lock."""
        if self._csv is None:
            self.scan()
        assert self._csv is not None
        self._csv.rewrite()

    def add_cell(self, record: CellRecord) -> Path:
        """Write a cell's file, then its row of results.csv; costs the same at the 10th cell as at the 100,000th."""
        path = self.write_cell(record)
        if self._csv is not None:
            self._csv.put(csv_row(record))
        return path

    def close_csv(self) -> None:
        """Leave results.csv complete and sorted (one rewrite, from memory); the end of a run, also a failed one."""
        if self._csv is not None:
            self._csv.close()


def results_id(root: Path) -> str:
    """The results directory's own id: 12 hex digits kept in its marker file, added there on first use (by the
    process holding the directory's lock). It tells apart two directories of the same suite, wherever they move."""
    marker = Path(root) / MARKER
    try:
        text = marker.read_text(encoding="utf-8")
    except OSError:
        text = MARKER_TEXT
    for line in text.splitlines():
        if line.startswith("id: ") and len(line.split()[1]) == 12:
            return line.split()[1]
    new = uuid.uuid4().hex[:12]
    atomic_write_text(marker, text.rstrip("\n") + f"\nid: {new}\n")
    return new


def read_runs(root: Path) -> list[dict[str, Any]]:
    """The run entries of a results directory's runs.json, oldest first ([] when absent or unreadable: the file
    only explains times, and a results directory without it is still whole)."""
    try:
        runs = json.loads((Path(root) / RUNS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [r for r in runs if isinstance(r, dict)] if isinstance(runs, list) else []


def read_cell_file(path: Path) -> tuple[CellRecord | None, str | None]:
    """(record, None) for a cell file of the right shape, else (None, why not): a file of cells/ may hold anything,
    and a cell whose file is not a record of its own id is simply run again. A record of a newer schema raises
    RecordSchemaError."""
    if not path.name.endswith(".json"):
        return None, "not a .json cell file"
    if path.is_dir():
        return None, "a directory, not a cell file"
    try:
        record = CellRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except RecordSchemaError:
        raise
    except RecordError as exc:
        return None, exc.message
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({type(exc).__name__})"
    cell_id = path.name[: -len(".json")]
    if record.id != cell_id:
        return None, f"holds the record of cell {json.dumps(record.id)[:40]}, not of {cell_id}"
    return record, None
