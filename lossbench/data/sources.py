"""Dataset sources: where each named dataset's images come from, how to name that source, how to decode it.

A source is a class registered in DATASETS. It answers two questions about a root (a path or None):
`describe(root)`, a cheap string naming the data (what follows `<name>:` in a dataset identity), and
`decode(root, ...)`, every image of both splits as uint8 tensors, which `load_dataset` calls once per cache key.
Both raise DataError when the root cannot be used, naming the path and what was expected.

This module holds the base class, the registry, what the sources share, and `image_folder` (your own images).
The other sources live one family per module: digits, cifar, mnist (the IDX family), svhn and stl10, on
`lossbench.data.torchvision_source` where torchvision has the dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from lossbench.data.base import ImageData, ImageShape
from lossbench.data.folder import check_folder_images, describe_folder, read_folder
from lossbench.errors import DataError
from lossbench.registry import Contract, Registry

ROOT_HINT = "pass --data-root PATH or set dataset.root in the suite"


@dataclass(frozen=True)
class TorchvisionRoot:
    """Data that torchvision.datasets reads from `path` (None: download into the cache directory)."""

    path: Path | None


@dataclass(frozen=True)
class FolderRoot:
    """An image folder or archive with train/<class>/ and test/<class>/ folders."""

    path: Path


class DatasetSource:
    """Base of every dataset source; subclasses implement `describe` and `decode`."""

    registry_name: ClassVar[str] = ""  # set by DATASETS.register
    #: (train, test) image counts of the official data, which every download has; None where they vary.
    official_sizes: ClassVar[tuple[int, int] | None] = None

    @classmethod
    def known_sizes(cls, root: Path | None) -> tuple[int, int] | None:
        """(train, test) image counts known without reading anything: the official data, when no root is given
        (a local copy may hold a subset). Validation checks subset sizes against them."""
        return cls.official_sizes if root is None else None

    #: The shape of the source's own images, when it is fixed (None: only decoding the files tells).
    shape: ClassVar[ImageShape | None] = None

    def known_shape(self, root: Path | None) -> ImageShape | None:
        """The images' shape without decoding anything, where the source knows it; None otherwise.

        A local image-folder copy of a torchvision dataset may hold other sizes, so only the source's own files
        (root unset, or torchvision's files) are trusted to have the source's shape."""
        if self.shape is None or (root is not None and not self._holds_own_files(root)):
            return None
        return self.shape

    def _holds_own_files(self, root: Path) -> bool:
        return False

    def describe(self, root: Path | None) -> str:
        """A cheap string naming the data at `root` (no decoding), e.g. `torchvision` or `folder:x.zip:1a2b3c4d5e6f`."""
        raise NotImplementedError

    def check_files(self, root: Path | None) -> None:
        """What `validate` checks beyond `describe`, still without decoding pixels (image headers, empty or single
        classes); raises DataError. Nothing by default."""

    def decode_options(self) -> str:
        """Options of this source that change the decoded tensors, appended to the cache key ('' when none)."""
        return ""

    def decode(self, root: Path | None, *, download: bool, download_dir: Path) -> ImageData:
        """Every image of both splits: images [N,C,H,W] uint8, labels [N] int64; name and identity left empty.

        `download_dir` is where torchvision may download to when `root` is None and `download` is true.
        """
        raise NotImplementedError


DATASETS: Registry[DatasetSource] = Registry("datasets", "dataset", Contract(
    DatasetSource, ("describe", "decode"),
    "a custom dataset is a subclass of lossbench.data.sources.DatasetSource which defines describe(root) and "
    "decode(root, *, download, download_dir) returning ImageData",
))


def folder_data(path: Path, image_size: int | None = None) -> ImageData:
    classes, splits = read_folder(path, image_size)
    return ImageData(
        name="",
        identity="",
        classes=classes,
        train_x=splits["train"][0],
        train_y=splits["train"][1],
        test_x=splits["test"][0],
        test_y=splits["test"][1],
    )


def require_exists(root: Path) -> None:
    if not root.exists():
        raise DataError(f"dataset root {root} does not exist", details=[ROOT_HINT])


def fetch_with_torchvision(name: str, root: Path, download: bool, fetch: Callable[[], object]) -> None:
    """Let torchvision download dataset `name` into `root` (`fetch` constructs its dataset with download=True).

    For sources whose files lossbench reads itself once they are there (SVHN, STL-10, EMNIST).
    """
    if not download:
        raise DataError(
            f"{name} is not in {root} and downloads are off (dataset.download: false)",
            details=[f"{ROOT_HINT}, or allow the download"],
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        fetch()
    except Exception as exc:  # urllib, ssl, socket and torchvision each raise their own types
        raise DataError(
            f"could not download {name} with torchvision into {root} (offline?): {exc}",
            details=[f"{ROOT_HINT} pointing at a local copy of torchvision's files"],
        ) from None


@DATASETS.register("image_folder")
class ImageFolder(DatasetSource):
    """Your own images: a directory or .tar.gz/.tgz/.tar/.zip with train/<class>/ and test/<class>/ folders.

    Class order is the sorted folder names. Images are RGB unless all are grayscale. `image_size` resizes every
    image to a square of that many pixels; without it, mixed sizes are resized to the most common one.
    """

    def __init__(self, image_size: int | None = None):
        if image_size is not None and (isinstance(image_size, bool) or image_size < 1):
            raise ValueError(f"image_size must be a positive number of pixels, not {image_size!r}")
        self.image_size = image_size

    def _root(self, root: Path | None) -> Path:
        if root is None:
            raise DataError(
                "dataset 'image_folder' needs a root: a directory or archive with train/<class>/ and test/<class>/",
                details=[ROOT_HINT],
            )
        return root

    def describe(self, root: Path | None) -> str:
        return describe_folder(self._root(root))

    def known_shape(self, root: Path | None) -> ImageShape | None:
        """With `image_size`, every image is that square. The channels (RGB unless every image is grayscale) and
        the classes (the folder names) are only known from the full listing and every header, which validation
        reads separately; they do not decide whether a model fits, so RGB and two classes stand in for them."""
        if self.image_size is None:
            return None
        return ImageShape(channels=3, height=self.image_size, width=self.image_size, num_classes=2)

    def check_files(self, root: Path | None) -> None:
        check_folder_images(self._root(root))

    def decode_options(self) -> str:
        return f"|decode_size={self.image_size}" if self.image_size else ""

    def decode(self, root: Path | None, *, download: bool, download_dir: Path) -> ImageData:
        return folder_data(self._root(root), self.image_size)
