"""Where one run's wall time went (runs.json), and the timestamps of records and runs."""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def utc_now() -> str:
    """The time now in UTC, ISO 8601 to the second: when a cell or a run started and finished."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunClock:
    """Where one run's wall time went, in seconds: recorded in runs.json so that a reader can check that the
    cells' own times (their `cell_s`) and the run's other work add up to the wall time."""

    started_at: str = field(default_factory=utc_now)
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
        return {"started_at": self.started_at, "finished_at": utc_now(), "wall_s": wall, "startup_s": self.startup_s,
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
