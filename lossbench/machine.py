"""How busy the machine was around a cell: the 1-minute load average, this process's CPU time and the number of
cores this process may use. Timings measured on a loaded machine are not comparable with idle ones; the report
reads these figures to say so."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, else all cores)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average_1m() -> float | None:
    """The 1-minute load average (runnable processes, all cores together), or None where the OS has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


@dataclass(frozen=True)
class MachineSample:
    """One look at the machine: load average, this process's CPU time (s, all threads) and usable cores."""

    load_1m: float | None
    cpu_time_s: float
    cores: int

    @staticmethod
    def now() -> MachineSample:
        return MachineSample(load_average_1m(), time.process_time(), usable_cores())


def load_block(start: MachineSample, end: MachineSample) -> dict[str, float | int | None]:
    """The record's `load` block: both samples, prefixed `start_`/`end_`, and the usable cores."""
    out: dict[str, float | int | None] = {"cores": end.cores}
    for prefix, sample in (("start", start), ("end", end)):
        values = asdict(sample)
        out[f"{prefix}_load_1m"] = values["load_1m"]
        out[f"{prefix}_cpu_time_s"] = values["cpu_time_s"]
    return out
