"""The IDX format of MNIST, Fashion-MNIST, KMNIST and EMNIST, read with numpy, and the file sets it comes in.

An IDX file is a 4-byte magic (two zero bytes, a type code, the number of dimensions), one big-endian uint32
per dimension, then the values in C order. Distributions gzip each file.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lossbench.data.bounds import not_file_or_directory
from lossbench.errors import DataError

_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# (split, kind, rank) of the four files; `t10k` is the original name of the test split.
_PARTS = (("train", "images", 3), ("train", "labels", 1), ("t10k", "images", 3), ("t10k", "labels", 1))


#: Largest IDX file read, in bytes once decompressed (1 GiB; EMNIST byclass's training images, the largest
#: official file, hold 547 MB): a header that declares more is an error before anything is decompressed.
MAX_IDX_BYTES = 2**30


@dataclass(frozen=True)
class IdxHeader:
    """What an IDX file's header declares: the array's shape and value type, and its size in bytes."""

    shape: tuple[int, ...]
    dtype: np.dtype
    header_bytes: int

    @property
    def data_bytes(self) -> int:
        """Bytes of values the header declares (exact: Python ints do not overflow)."""
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        return f"{'×'.join(str(d) for d in self.shape)} {self.dtype.name} values"


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")  # type: ignore[return-value]


def _read_header(path: Path, f: BinaryIO) -> IdxHeader:
    """The header at the start of the open IDX stream `f`, checked against MAX_IDX_BYTES (and, for an
    uncompressed file, against the file's size) before any value is read."""
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {magic.hex() or 'empty'})")
    dtype, rank = _TYPES[magic[2]], magic[3]
    dims = f.read(4 * rank)
    if len(dims) < 4 * rank:
        raise DataError(f"IDX file {path} is truncated inside its header")
    header = IdxHeader(tuple(int.from_bytes(dims[i:i + 4], "big") for i in range(0, 4 * rank, 4)), dtype,
                       4 + 4 * rank)
    if header.data_bytes > MAX_IDX_BYTES:
        raise DataError(
            f"IDX file {path}: its header declares {header.describe()}, {header.data_bytes:,} bytes, over the "
            f"limit of {MAX_IDX_BYTES:,} bytes per IDX file",
            details=["the file is damaged or not a dataset file"],
        )
    if not path.name.endswith(".gz"):
        held = path.stat().st_size - header.header_bytes
        if held != header.data_bytes:
            raise DataError(f"IDX file {path} holds {held} data bytes; its header {header.shape} of {dtype} "
                            f"needs {header.data_bytes}")
    return header


def read_idx_header(path: Path) -> IdxHeader:
    """The checked header of the IDX file at `path`, reading only its first bytes (gzip-decompressed when its
    name ends in `.gz`). Raises DataError for a bad magic, a truncated header, or a declared size over
    MAX_IDX_BYTES."""
    try:
        with _open(path) as f:
            return _read_header(path, f)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None


def read_idx(path: Path) -> np.ndarray:
    """The array stored in the IDX file at `path` (gzip-compressed when its name ends in `.gz`).

    The header is checked first, and at most the declared bytes (plus one, to find extra data) are read, so a
    small compressed file cannot decompress into more memory than MAX_IDX_BYTES.
    """
    try:
        with _open(path) as f:
            header = _read_header(path, f)
            raw = f.read(header.data_bytes + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) != header.data_bytes:
        held = f"{len(raw)}" if len(raw) <= header.data_bytes else f"more than {header.data_bytes}"
        raise DataError(
            f"IDX file {path} holds {held} data bytes; its header {header.shape} of {header.dtype} needs "
            f"{header.data_bytes}"
        )
    count = math.prod(header.shape)
    return np.frombuffer(raw, dtype=header.dtype, count=count).reshape(header.shape)


@dataclass(frozen=True)
class IdxFiles:
    """The four files of an MNIST-style dataset: training and test images and labels."""

    train_images: Path
    train_labels: Path
    test_images: Path
    test_labels: Path

    @property
    def paths(self) -> tuple[Path, Path, Path, Path]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)

    def check_headers(self) -> tuple[IdxHeader, IdxHeader, IdxHeader, IdxHeader]:
        """The four files' headers (in `paths` order), checked without reading their values: uint8 images
        [N, H, W] with N ≥ 1, integer labels [N], each file within MAX_IDX_BYTES. Raises DataError."""
        headers = tuple(read_idx_header(p) for p in self.paths)
        pairs = ((self.train_images, headers[0], self.train_labels, headers[1]),
                 (self.test_images, headers[2], self.test_labels, headers[3]))
        for images_path, images, labels_path, labels in pairs:
            if len(images.shape) != 3 or images.dtype != np.uint8:
                raise DataError(f"{images_path} should hold uint8 images [N, H, W]; found {images.describe()}")
            if len(labels.shape) != 1 or labels.dtype.kind not in "iu":
                raise DataError(f"{labels_path} should hold integer labels [N]; found {labels.describe()}")
            if images.shape[0] != labels.shape[0]:
                raise DataError(f"{images_path} has {images.shape[0]} images but {labels_path} has "
                                f"{labels.shape[0]} labels")
            if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
                raise DataError(f"{images_path} holds no images (its header declares {images.describe()})",
                                details=["a model needs training and test images to learn from and be scored on"])
        return headers  # type: ignore[return-value]

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Training images [N,H,W] uint8, training labels [N] int64, then the same for the test split.

        Every header is checked before any file's values are read."""
        self.check_headers()
        train_x, train_y, test_x, test_y = (read_idx(p) for p in self.paths)
        return train_x, train_y.astype(np.int64), test_x, test_y.astype(np.int64)


def find_idx_files(directory: Path, prefix: str = "", test_name: str = "t10k") -> IdxFiles | None:
    """The IDX file set directly inside `directory`, or None when it holds none of the four files.

    Accepts the original names (`train-images-idx3-ubyte`) and the common `train-images.idx3-ubyte` variant,
    each optionally gzipped (the gzipped file wins when both are there, as torchvision keeps both). `prefix` and
    `test_name` give other releases' names: EMNIST's are `emnist-<split>-test-images-idx3-ubyte`.
    A directory holding only some of the four files is an error that names the missing ones.
    """
    if not directory.is_dir():
        return None
    parts = [(test_name if split == "t10k" else split, kind, rank) for split, kind, rank in _PARTS]
    found: list[Path | None] = []
    for split, kind, rank in parts:
        names = [f"{prefix}{split}-{kind}{sep}idx{rank}-ubyte{ext}" for ext in (".gz", "") for sep in ("-", ".")]
        for n in names:
            problem = not_file_or_directory(directory / n)
            if problem:  # a FIFO would block the read, a device never end: name it rather than call it missing
                raise DataError(f"IDX file {problem}", details=["replace it with the dataset's file"])
        found.append(next((directory / n for n in names if (directory / n).is_file()), None))
    if all(p is None for p in found):
        return None
    if any(p is None for p in found):
        missing = [f"{prefix}{s}-{k}-idx{r}-ubyte[.gz]" for (s, k, r), p in zip(parts, found, strict=True) if p is None]
        raise DataError(f"{directory} holds only part of an IDX dataset; missing: {', '.join(missing)}")
    return IdxFiles(*found)  # type: ignore[arg-type]
