"""The IDX format of MNIST, Fashion-MNIST, KMNIST and EMNIST, read with numpy, and the file sets it comes in.

An IDX file is a 4-byte magic (two zero bytes, a type code, the number of dimensions), one big-endian uint32
per dimension, then the values in C order. Distributions gzip each file.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

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


def read_idx(path: Path) -> np.ndarray:
    """The array stored in the IDX file at `path` (gzip-compressed when its name ends in `.gz`)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, rank = _TYPES[raw[2]], raw[3]
    header = 4 + 4 * rank
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=rank, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) != header + count * dtype.itemsize:
        raise DataError(
            f"IDX file {path} holds {len(raw) - header} data bytes; its header {shape} of {dtype} needs "
            f"{count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)


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

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Training images [N,H,W] uint8, training labels [N] int64, then the same for the test split."""
        arrays = []
        for images_path, labels_path in ((self.train_images, self.train_labels), (self.test_images, self.test_labels)):
            images, labels = read_idx(images_path), read_idx(labels_path)
            if images.ndim != 3 or images.dtype != np.uint8:
                raise DataError(
                    f"{images_path} should hold uint8 images [N, H, W]; found {images.dtype} {images.shape}"
                )
            if labels.ndim != 1 or labels.dtype.kind not in "iu":
                raise DataError(f"{labels_path} should hold integer labels [N]; found {labels.dtype} {labels.shape}")
            if len(images) != len(labels):
                raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
            arrays += [images, labels.astype(np.int64)]
        return arrays[0], arrays[1], arrays[2], arrays[3]


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
