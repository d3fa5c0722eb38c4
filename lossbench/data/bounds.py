"""Limits on what reading a dataset may cost, checked before the work from what is known up front (a path's kind,
a file's header, image counts and sizes), so that a hostile or mistaken input is an error instead of a hang or an
exhausted memory.

- A dataset root is a regular file or a directory: a FIFO would block a reader forever and a device such as
  /dev/zero never ends, so both are refused at once, before anything opens them.
- The images a dataset keeps in memory (uint8, after any resize) must fit in the machine's memory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lossbench.errors import DataError

#: Share of the machine's physical memory that a dataset's uint8 images may take: the rest is for the model, the
#: training loop's batches and the float32 working copies of a resize.
MEMORY_SHARE = 0.5


def path_kind(path: Path) -> str | None:
    """'file', 'directory', or what else `path` is ('FIFO', 'character device', ...); None when it does not
    exist. Symbolic links are followed."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    for test, name in ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def not_file_or_directory(path: Path) -> str | None:
    """Why `path` cannot be a dataset root or data file, when it exists but is neither a regular file nor a
    directory (a FIFO, a device, a socket); None otherwise."""
    kind = path_kind(path)
    if kind is None or kind in ("file", "directory"):
        return None
    return f"{path} is a {kind}, not a regular file or a directory"


def check_root_kind(path: Path) -> None:
    """Raise DataError when `path` exists but is neither a regular file nor a directory."""
    problem = not_file_or_directory(path)
    if problem:
        raise DataError(f"dataset root {problem}",
                        details=["point the root at a directory, an archive, or the dataset's own files"])


def physical_memory_bytes() -> int:
    """The machine's physical memory in bytes (0 when the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def memory_budget_bytes() -> int:
    """How many bytes a dataset's images may take in memory: MEMORY_SHARE of the physical memory."""
    return int(physical_memory_bytes() * MEMORY_SHARE)


def check_fits_memory(what: str, nbytes: int, *, hint: str) -> None:
    """Raise DataError when `nbytes` of images (described by `what`) exceed the memory budget.

    Checked from counts and sizes before any image is decoded or resized; `hint` says what to change.
    """
    budget = memory_budget_bytes()
    if budget and nbytes > budget:
        raise DataError(
            f"{what} would take {_size(nbytes)} of memory, over the limit of {_size(budget)} "
            f"({MEMORY_SHARE:.0%} of this machine's {_size(physical_memory_bytes())})",
            details=[hint],
        )


def _size(nbytes: int) -> str:
    """`nbytes` in the largest binary unit that keeps the number at least 1 (e.g. '188.9 GiB')."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} PiB"
