"""One image file of an image-folder dataset, decoded with Pillow within bounds.

An image may hold at most `MAX_IMAGE_PIXELS` pixels (per its header) and a dataset's images together at most
`MAX_DATASET_PIXELS`; what a dataset keeps in memory (its files until decoded, its images after any resize) is
held to the memory budget of `lossbench.data.bounds`. Each bound is checked from the headers, before the pixels
are decoded, so a hostile archive cannot exhaust memory.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np

from lossbench.data.bounds import check_fits_memory
from lossbench.errors import DataError

# Pillow modes that hold one gray channel; every other mode is converted to RGB.
_GRAY_MODES = frozenset({"1", "L", "LA"})
#: Largest image decoded, in pixels (8192 × 8192): a bigger one is an error from its header, before decoding.
MAX_IMAGE_PIXELS = 8192 * 8192
#: Largest number of pixels decoded for one dataset, summed over its images' headers (2**30, 3 GiB as RGB): a
#: small archive of many large images is an error before the pixels past the limit are decoded.
MAX_DATASET_PIXELS = 2**30


class DatasetBudget:
    """Running totals of an image folder's images, checked as each header is read and before its pixels are
    decoded: the decoded pixels against MAX_DATASET_PIXELS, and the bytes the dataset will keep (resized to
    `image_size` when given; 3 channels, the most an image keeps) against the memory budget. A name a tar holds
    twice counts twice, so the totals never undercount."""

    def __init__(self, path: Path, image_size: int | None):
        self.path, self.image_size = path, image_size
        self.images = self.pixels = self.file_bytes = 0

    def add(self, member: str, pixels: int, file_bytes: int = 0) -> None:
        """Count one image of `pixels` (by its header) whose file, held until decoded, takes `file_bytes`."""
        self.images += 1
        self.pixels += pixels
        self.file_bytes += file_bytes
        if self.pixels > MAX_DATASET_PIXELS:
            raise DataError(
                f"{self.path}: its images hold more than {MAX_DATASET_PIXELS:,} pixels by their headers (reached at "
                f"{member}, image {self.images:,}), over the limit of {MAX_DATASET_PIXELS:,} decoded pixels per "
                "dataset",
                details=["a folder this large does not fit in memory as a tensor; use fewer or smaller images"],
            )
        kept = self.images * self.image_size ** 2 if self.image_size else self.pixels
        check_fits_memory(f"{self.path}: {self.images:,} images" + (
            f" resized to {self.image_size}×{self.image_size}" if self.image_size else "") + " and their files",
            3 * kept + self.file_bytes, hint="lower image_size, or use fewer images")


def declared_pixels(data: bytes) -> int:
    """Pixels an image file declares in its header (0 when unreadable: its decode reports it)."""
    try:
        image = open_checked(data, "")
    except BadImage:
        return 0
    width, height = image.size
    image.close()
    return width * height


class BadImage(Exception):
    """One image file that cannot be used; `reason` is a plain sentence without object reprs."""

    def __init__(self, member: str, reason: str):
        super().__init__(f"{member}: {reason}")
        self.member, self.reason = member, reason


def _image_problem(exc: Exception) -> str:
    """Pillow's complaint about a file in plain words: its messages name the in-memory file by its repr."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can read"
    text = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>", "the file", str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def open_checked(data: bytes, member: str) -> Any:
    """The Pillow image of `data` with only its header read; raises BadImage when it is unreadable or too big."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
    except Exception as exc:  # Pillow raises many types for bad files; each is a data problem of this file
        raise BadImage(member, _image_problem(exc)) from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise BadImage(member, f"{width}×{height} pixels, over the limit of {MAX_IMAGE_PIXELS:,} pixels per image")
    return image


def decode_image(data: bytes, target: tuple[int, int] | None, member: str) -> tuple[np.ndarray, bool]:
    """An image as [H,W] (gray) or [H,W,3] (RGB) uint8, resized to `target` (width, height) when given."""
    from PIL import Image

    with open_checked(data, member) as image:
        try:
            gray = image.mode in _GRAY_MODES
            converted = image.convert("L" if gray else "RGB")
            if target is not None and converted.size != target:
                converted = converted.resize(target, Image.BILINEAR)
            return np.asarray(converted), gray
        except Exception as exc:  # a truncated or corrupt body behind a valid header
            raise BadImage(member, _image_problem(exc)) from None


def resize_image(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`array` ([H,W] or [H,W,3] uint8) resized to `size` = (width, height) with Pillow's antialiased bilinear."""
    from PIL import Image

    return np.asarray(Image.fromarray(array).resize(size, Image.BILINEAR))
