"""Files written atomically: a reader, or a crash at any moment, sees the previous file or the new one, whole; a
write that fails raises ResultsWriteError naming the file, the reason and what to do."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from lossbench.errors import ResultsWriteError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader (or a crash) sees either the old file or the new one, whole."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file, fsync, rename). Raises ResultsWriteError when the file cannot
    be written (read-only directory, full disk, a directory in the way); the previous file, if any, is untouched."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a directory of that name is in the way", str(path))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        # mkstemp creates 0600; results are ordinary files, so give them the mode open() would (0666 & ~umask).
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                Path(tmp).unlink(missing_ok=True)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise


def write_error(path: Path, exc: OSError) -> ResultsWriteError:
    """The ResultsWriteError of an OSError met while writing `path`, with what to do about it."""
    reason = exc.strerror or str(exc)
    hints = {
        errno.ENOSPC: "the disk is full: free some space and run the same command again (finished cells are kept)",
        errno.EDQUOT: "the disk quota is used up: free some space and run the same command again",
        errno.EROFS: "the file system is read-only: write elsewhere with --out DIR",
        errno.EACCES: "this user may not write there: write elsewhere with --out DIR",
        errno.EPERM: "this user may not write there: write elsewhere with --out DIR",
        errno.EISDIR: "move that directory away: lossbench does not remove what it did not write",
    }
    hint = hints.get(exc.errno or 0)
    return ResultsWriteError(message=f"cannot write {path}: {reason}", value=str(path),
                             details=[hint] if hint else [])
