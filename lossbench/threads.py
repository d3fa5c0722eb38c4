"""How many torch threads a cell trains with on the CPU: a fixed count, or `auto`, which looks at how busy the cores
are just before each cell and leaves the busy ones alone.

Why: torch's OpenMP threads wait for each other at the end of every operation. When another process holds one of
the cores, every operation waits for the thread that was descheduled, and a 2-thread process trains several times
slower than a 1-thread one (docs/performance.md measures it). `auto` therefore trains with as many threads as there
are idle cores, at least one and at most the ceiling: the cores this process may use (its affinity mask, or its
share of it under `--jobs`), and never more than torch was given by `OMP_NUM_THREADS` or `torch.set_num_threads`
before lossbench first chose.

How busy the cores are is read from the kernel's CPU counters (/proc/stat) over a short window, minus this
process's own CPU time in that window; elsewhere (macOS) from the 1-minute load average.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from lossbench.machine import usable_cores

ThreadSetting = int | Literal["auto"]
#: How long `auto` watches the CPU counters before a cell (seconds): long enough to see a busy neighbour
#: (the kernel counts in 10 ms ticks), short against a cell.
SAMPLE_S = 0.1
#: A core counts as taken when others keep it at least this busy (fraction of one core); rounding a 1.0 neighbour
#: measured at 0.9 down to "idle" would give the thread that then waits at every operation.
_TAKEN_FRACTION = 0.5


@dataclass(frozen=True)
class ThreadChoice:
    """The torch threads one cell trains with, and why: recorded in the cell's result."""

    threads: int
    #: `auto` (chosen from the busy cores) or `fixed` (train.threads / --threads / the executor's split).
    policy: str
    #: The most threads the policy could choose: this process's cores (its affinity mask, or its share under
    #: --jobs), capped by torch's thread count when lossbench first chose.
    ceiling: int
    #: Cores that other processes kept busy just before the cell (None with a fixed count or off the CPU: not
    #: measured).
    busy_cores: float | None

    def as_env(self) -> dict[str, object]:
        return {"threads": self.threads, "thread_policy": self.policy, "thread_ceiling": self.ceiling,
                "busy_cores_at_start": None if self.busy_cores is None else round(self.busy_cores, 2)}


def threads_for_idle_cores(ceiling: int, total_cores: int, busy_cores: float) -> int:
    """The `auto` rule: one thread per core that others leave idle, at least 1, at most `ceiling`."""
    taken = math.floor(busy_cores + (1.0 - _TAKEN_FRACTION))  # 0.5 → 1 core taken, 0.4 → none
    return max(1, min(ceiling, total_cores - taken))


def parse_proc_stat(text: str, cores: set[int] | None = None) -> tuple[float, float]:
    """(busy, total) jiffies summed over `cores` (the per-core `cpuN` lines; None: the aggregate `cpu` line).

    Busy is user + nice + system + irq + softirq + steal; idle and iowait are not busy; guest time is already
    counted in user and nice."""
    busy_sum = total_sum = 0.0
    found = 0
    for line in text.splitlines():
        fields = line.split()
        if not fields or not fields[0].startswith("cpu"):
            continue
        name = fields[0]
        if cores is None and name != "cpu":
            continue
        if cores is not None and (name == "cpu" or int(name[3:]) not in cores):
            continue
        values = [float(v) for v in fields[1:9]] + [0.0] * max(0, 9 - len(fields))
        user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
        busy = user + nice + system + irq + softirq + steal
        busy_sum += busy
        total_sum += busy + idle + iowait
        found += 1
    if found == 0:
        raise ValueError("no matching cpu lines in /proc/stat")
    return busy_sum, total_sum


def busy_cores_of_others(window_s: float = SAMPLE_S, read_stat: Callable[[], str] | None = None) -> float:
    """How many of this process's cores other processes kept busy over the next `window_s` seconds (this
    process's own CPU time excluded)."""
    stat = Path("/proc/stat")
    if read_stat is None and not stat.exists():
        return max(0.0, os.getloadavg()[0])
    read = read_stat or stat.read_text
    cores = _affinity()
    busy0, total0 = parse_proc_stat(read(), cores)
    own0 = _own_cpu_s()
    time.sleep(window_s)
    busy1, total1 = parse_proc_stat(read(), cores)
    own1 = _own_cpu_s()
    total = total1 - total0
    if total <= 0:
        return 0.0
    counted = len(cores) if cores is not None else (os.cpu_count() or 1)
    own_jiffies = (own1 - own0) * os.sysconf("SC_CLK_TCK")
    # total / counted is the window's length in jiffies of one core.
    return max(0.0, (busy1 - busy0 - own_jiffies) / (total / counted))


def _affinity() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:
        return None


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


_torch_ceiling: int | None = None


def torch_ceiling() -> int:
    """torch's thread count when lossbench first chose, i.e. what OMP_NUM_THREADS or the caller set; later
    choices change torch's count, so it is read once per process."""
    global _torch_ceiling
    if _torch_ceiling is None:
        _torch_ceiling = torch.get_num_threads()
    return _torch_ceiling


def choose_threads(setting: ThreadSetting, share: int | None = None,
                   busy_cores: Callable[[], float] = busy_cores_of_others, *, on_cpu: bool = True) -> ThreadChoice:
    """The threads for the next cell. `share` caps them (a worker's cores under --jobs; default: this process's
    cores and torch's thread count); a whole number in `setting` is used as given.

    A cell trained on a GPU (`on_cpu=False`) keeps the ceiling without sampling: its CPU threads only launch
    device work, and the SAMPLE_S wait would be a real share of a short GPU cell."""
    cores = usable_cores()
    ceiling = max(1, min(share if share is not None else torch_ceiling(), cores))
    if setting != "auto":
        return ThreadChoice(int(setting), "fixed", int(setting), None)
    if not on_cpu:
        return ThreadChoice(ceiling, "auto", ceiling, None)
    seen = busy_cores()
    return ThreadChoice(threads_for_idle_cores(ceiling, cores, seen), "auto", ceiling, seen)


def apply_threads(choice: ThreadChoice) -> None:
    """Make torch train with the chosen number of threads (this process, from now on)."""
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
