"""Content digests of dataset files, computed once per process while a file stays unchanged.

Dataset identities enter every cell id, so they are asked for often; hashing a 100 MB archive each time would
make `validate` slow. A result is remembered under the file's stat (inode, size, mtime, ctime).

Slower checks (listing a compressed archive, reading 60,000 image headers) are also remembered across runs, in
small files of `<cache>/checks/` keyed by the identity of what was checked (`remembered_check`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
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


#: Bump when what a remembered check proves changes; older entries are then simply not found.
CHECKS_FORMAT = 1


def remembered_check(key: str, compute: Callable[[], str], cache_dir: Path | None = None) -> str:
    """`compute()` for `key`, kept in `<cache_dir>/checks/` so that later runs skip it.

    `key` must name everything the result depends on (the content's identity, the limits checked against);
    `compute` raises when the check fails, and a failure is never remembered, so a broken dataset is reported
    again on every run. A missing or unreadable cache is no error: the check is simply run.
    """
    if cache_dir is None:
        from lossbench.data.cache import DEFAULT_CACHE

        cache_dir = DEFAULT_CACHE
    full_key = f"{CHECKS_FORMAT}|{key}"
    path = cache_dir / "checks" / f"{hashlib.sha256(full_key.encode()).hexdigest()[:24]}.json"
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(entry, dict) and entry.get("key") == full_key and isinstance(entry.get("value"), str):
            return entry["value"]
    except (OSError, ValueError):
        pass
    value = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"key": full_key, "value": value}, f)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache costs only speed
    return value
