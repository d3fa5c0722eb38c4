"""Content digests of dataset files, computed once per process while a file stays unchanged.

Dataset identities enter every cell id, so they are asked for often; hashing a 100 MB archive each time would
make `validate` slow. A result is remembered under the file's stat (inode, size, mtime, ctime).
"""

from __future__ import annotations

import gzip
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# A file written twice within one tick of the filesystem clock keeps its mtime, so a stat signature taken
# shortly after a write proves nothing; like git's "racily clean" rule, only files still for this long are
# remembered by their stat.
_SETTLED_SECONDS = 2.0

_memo: dict[tuple[str, str], tuple[tuple[int, int, int, int], object]] = {}


def memoized_by_stat(path: Path, tag: str, compute: Callable[[], T]) -> T:
    """`compute()` for the file at `path`, reused while the file's stat signature is unchanged."""
    stat = path.stat()
    signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    key = (str(path.resolve()), tag)
    hit = _memo.get(key)
    if hit is not None and hit[0] == signature:
        return hit[1]  # type: ignore[return-value]
    value = compute()
    if time.time() - max(stat.st_mtime_ns, stat.st_ctime_ns) / 1e9 > _SETTLED_SECONDS:
        _memo[key] = (signature, value)
    return value


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of the bytes of the file at `path` (read in 1 MiB chunks)."""

    def compute() -> str:
        digest = hashlib.new(algorithm)
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    return memoized_by_stat(path, algorithm, compute)


def content_digest(path: Path, algorithm: str = "md5", max_bytes: int | None = None) -> str:
    """Hex digest of what the file at `path` holds: its decompressed bytes when its name ends in `.gz`.

    The same data gzipped twice differs in its gzip header (a time stamp, a file name), so only the content
    identifies a re-packaged copy of a dataset. With `max_bytes`, decompressing stops there: content beyond it
    raises ValueError, so that a small file that inflates without end is not read to its end.
    """
    if not path.name.endswith(".gz"):
        return file_digest(path, algorithm)

    def compute() -> str:
        digest = hashlib.new(algorithm)
        seen = 0
        with gzip.open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                seen += len(chunk)
                if max_bytes is not None and seen > max_bytes:
                    raise ValueError(f"{path} decompresses to more than {max_bytes:,} bytes")
                digest.update(chunk)
        return digest.hexdigest()

    return memoized_by_stat(path, f"{algorithm}-content", compute)
