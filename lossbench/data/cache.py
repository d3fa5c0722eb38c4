"""The decoded-tensor cache: a source is decoded once, then loaded back as uint8 tensors in a fraction of a second.

One file per cache key (the source identity plus any decode option), named by a hash of the key. Files are
written to a temporary name and renamed, so a reader never sees half a file and parallel runs that decode the
same source at once simply write the same content twice. An unreadable file is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import warnings
from pathlib import Path

import torch

from lossbench.data.base import ImageData

#: Where decoded datasets are kept unless --cache-dir says otherwise: $LOSSBENCH_CACHE, else ~/.cache/lossbench.
DEFAULT_CACHE = Path(os.environ.get("LOSSBENCH_CACHE", Path.home() / ".cache" / "lossbench"))

# Bump when the stored layout changes; files of another format are rebuilt silently.
CACHE_FORMAT = 1
_FIELDS = ("train_x", "train_y", "test_x", "test_y")


def cache_path(cache_dir: Path, name: str, key: str) -> Path:
    """The cache file of `key`: `<cache_dir>/<name>-<16 hex of sha256(key)>.pt`."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return cache_dir / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def load_cached(path: Path, key: str) -> ImageData | None:
    """The dataset stored at `path` for `key`, or None when there is no usable file."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file fails in many ways; all mean "decode again"
        warnings.warn(f"ignoring unreadable dataset cache {path} ({type(exc).__name__}); decoding again", stacklevel=2)
        return None
    if not isinstance(blob, dict) or blob.get("format") != CACHE_FORMAT or blob.get("key") != key:
        return None
    problem = _check(blob)
    if problem:
        warnings.warn(f"ignoring dataset cache {path}: {problem}; decoding again", stacklevel=2)
        return None
    return ImageData(
        name=blob["name"],
        identity=blob["identity"],
        classes=tuple(blob["classes"]),
        train_x=blob["train_x"],
        train_y=blob["train_y"],
        test_x=blob["test_x"],
        test_y=blob["test_y"],
    )


def store_cached(path: Path, key: str, data: ImageData) -> None:
    """Write the train and test tensors of `data` to `path` atomically; a failure only warns (the run goes on)."""
    blob = {
        "format": CACHE_FORMAT,
        "key": key,
        "name": data.name,
        "identity": data.identity,
        "classes": list(data.classes),
        **{f: getattr(data, f).contiguous() for f in _FIELDS},
    }
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as f:
            tmp_name = f.name
            torch.save(blob, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        warnings.warn(f"cannot write dataset cache {path} ({exc}); the next run decodes again", stacklevel=2)
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _check(blob: dict) -> str | None:
    """Why `blob` is not a well-formed cache entry, or None when it is."""
    tensors = [blob.get(f) for f in _FIELDS]
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        return "missing tensors"
    train_x, train_y, test_x, test_y = tensors
    if train_x.dtype != torch.uint8 or test_x.dtype != torch.uint8 or train_x.ndim != 4 or test_x.ndim != 4:
        return "images are not [N,C,H,W] uint8"
    if train_y.dtype != torch.int64 or test_y.dtype != torch.int64:
        return "labels are not int64"
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        return "image and label counts differ"
    if not isinstance(blob.get("classes"), list):
        return "missing class names"
    return None
