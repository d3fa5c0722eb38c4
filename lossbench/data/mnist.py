"""The MNIST family (MNIST, Fashion-MNIST, KMNIST, EMNIST): IDX files in a system root or a given folder, an
image folder or archive of the same classes, or a torchvision download."""

from __future__ import annotations

import hashlib
import string
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch

from lossbench.data.base import ImageData, ImageShape
from lossbench.data.fingerprint import content_digest
from lossbench.data.folder_files import is_archive
from lossbench.data.idx import IdxFiles, find_idx_files
from lossbench.data.sources import DATASETS, FolderRoot, TorchvisionRoot, fetch_with_torchvision, require_exists
from lossbench.data.torchvision_source import TorchvisionSource
from lossbench.errors import DataError

# Where MNIST-style datasets are found without a download: each directory is searched for the IDX files
# directly and in torchvision's `<dir>/<MNIST|FashionMNIST>/raw` layout.
SYSTEM_ROOTS: dict[str, tuple[Path, ...]] = {
    "mnist": (Path("/usr/share/datasets/mnist"), Path("/usr/local/share/datasets/mnist")),
    "fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"), Path("/usr/local/share/datasets/fashion-mnist")),
}


class _IdxDataset(TorchvisionSource):
    """MNIST-style data: IDX files in a system root or a given folder, else a torchvision download."""

    class_names: ClassVar[tuple[str, ...]]
    # MD5 of the uncompressed IDX files of the official release (train images, train labels, test images, test
    # labels). A matching set is the data a torchvision download gives, wherever it was found and however it
    # was gzipped (Debian's dataset-fashion-mnist re-gzips the files), so it gets the identity of a download.
    official_md5: ClassVar[tuple[str, ...]] = ()  # empty where the official files' content MD5s are not recorded
    other_md5: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]] = ()  # (dataset name, MD5s) of look-alikes

    def _locate(self, root: Path | None) -> TorchvisionRoot | FolderRoot | IdxFiles:
        if root is None:
            for directory in SYSTEM_ROOTS.get(self.registry_name, ()):
                found = self._idx_in(directory)
                if found is not None:
                    return found
            return TorchvisionRoot(None)
        require_exists(root)
        if root.is_file() and not is_archive(root):
            raise DataError(
                f"dataset root {root} is a file but not an archive",
                details=[f"expected {self._local_files(root)}, or an archive with train/ and test/ class folders"],
            )
        return self._idx_in(root) or FolderRoot(root)

    def _local_files(self, root: Path) -> str:
        return (f"IDX files train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                f"t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] in {root} or "
                f"{root}/{self.torchvision_class}/raw")

    def _idx_in(self, directory: Path) -> IdxFiles | None:
        return find_idx_files(directory) or find_idx_files(directory / self.torchvision_class / "raw")

    def _describe_local(self, where: object) -> str:
        """`torchvision` for the official release, else `idx:` and 12 hex digits of the files' content."""
        assert isinstance(where, IdxFiles)
        headers = where.check_headers()  # before any content is hashed: a header may declare a bomb
        try:
            md5s = tuple(content_digest(p, "md5", max_bytes=h.header_bytes + h.data_bytes)
                         for p, h in zip(where.paths, headers, strict=True))
        except ValueError as exc:
            raise DataError(f"IDX file {exc}, more than its header declares",
                            details=["the file is damaged or not a dataset file"]) from None
        if self.official_md5 and md5s == self.official_md5:
            return "torchvision"
        for other, digests in self.other_md5:
            if md5s == digests:
                raise DataError(
                    f"the IDX files in {where.train_images.parent} are the official '{other}' files, "
                    f"not '{self.registry_name}'",
                    details=[f"point dataset.root at the {self.torchvision_class} files, or use dataset '{other}'"],
                )
        return f"idx:{hashlib.sha256('|'.join(md5s).encode()).hexdigest()[:12]}"

    def _decode_local(self, where: object) -> ImageData:
        assert isinstance(where, IdxFiles)
        return self._checked(where, *where.read())

    def _checked(self, where: IdxFiles, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray) -> ImageData:
        """The decoded arrays as ImageData, once every label is known to name one of `class_names`."""
        for path, labels in ((where.train_labels, train_y), (where.test_labels, test_y)):
            if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
                raise DataError(f"{path} has labels outside 0..{len(self.class_names) - 1}")
        return ImageData(
            name="",
            identity="",
            classes=self.class_names,
            train_x=torch.from_numpy(train_x.copy()).unsqueeze(1).contiguous(),
            train_y=torch.from_numpy(train_y),
            test_x=torch.from_numpy(test_x.copy()).unsqueeze(1).contiguous(),
            test_y=torch.from_numpy(test_y),
        )

    def _classes(self, dataset: object) -> tuple[str, ...]:
        return self.class_names


_MNIST_MD5 = (
    "6bbc9ace898e44ae57da46a324031adb",
    "a25bea736e30d166cdddb491f175f624",
    "2646ac647ad5339dbf082846283269ea",
    "27ae3e4e09519cfbb04c329615203637",
)
_FASHION_MD5 = (
    "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "9018921c3c673c538a1fc5bad174d6f9",
    "8181f5470baa50b63fa0f6fddb340f0a",
    "15d484375f8d13e6eb1aabb0c3f46965",
)


@DATASETS.register("mnist")
class Mnist(_IdxDataset):
    """MNIST: 60k/10k 28x28 grayscale digits; IDX files in a system root or dataset.root, else torchvision."""

    torchvision_class = "MNIST"
    official_sizes = (60_000, 10_000)
    shape = ImageShape(channels=1, height=28, width=28, num_classes=10)
    class_names = tuple(str(d) for d in range(10))
    official_md5 = _MNIST_MD5
    other_md5 = (("fashion_mnist", _FASHION_MD5),)


@DATASETS.register("fashion_mnist")
class FashionMnist(_IdxDataset):
    """Fashion-MNIST: 60k/10k 28x28 grayscale clothing images; IDX files in a system root, else torchvision."""

    torchvision_class = "FashionMNIST"
    official_sizes = (60_000, 10_000)
    shape = ImageShape(channels=1, height=28, width=28, num_classes=10)
    class_names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
    official_md5 = _FASHION_MD5
    other_md5 = (("mnist", _MNIST_MD5),)


@DATASETS.register("kmnist")
class Kmnist(_IdxDataset):
    """Kuzushiji-MNIST: 60k/10k 28x28 grayscale cursive Japanese characters, 10 classes; IDX files or torchvision."""

    torchvision_class = "KMNIST"
    official_sizes = (60_000, 10_000)
    shape = ImageShape(channels=1, height=28, width=28, num_classes=10)
    # The romanized names of the ten hiragana, in label order (torchvision's KMNIST.classes).
    class_names = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")


EmnistSplit = Literal["byclass", "bymerge", "balanced", "letters", "digits", "mnist"]

#: The classes of each EMNIST split, in label order (as torchvision's EMNIST names them, except `letters`, whose
#: files label a..z as 1..26: lossbench shifts them to 0..25 instead of keeping an empty class 0).
EMNIST_CLASSES: dict[str, tuple[str, ...]] = {
    "byclass": tuple(string.digits + string.ascii_uppercase + string.ascii_lowercase),
    "bymerge": tuple(sorted(set(string.digits + string.ascii_letters) - set("cijklmopsuvwxyz"))),
    "balanced": tuple(sorted(set(string.digits + string.ascii_letters) - set("cijklmopsuvwxyz"))),
    "letters": tuple(string.ascii_lowercase),
    "digits": tuple(string.digits),
    "mnist": tuple(string.digits),
}


@DATASETS.register("emnist")
class Emnist(_IdxDataset):
    """EMNIST handwritten characters, 28x28 grayscale; `split` picks byclass/bymerge/balanced/letters/digits/mnist.

    Read from torchvision's files `EMNIST/raw/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte[.gz]`
    (or the same files directly in dataset.root). The files store each image transposed; lossbench turns them
    upright (torchvision does not), so flips and crops act on upright characters.
    """

    torchvision_class = "EMNIST"

    def __init__(self, split: EmnistSplit = "balanced"):
        if split not in EMNIST_CLASSES:
            raise ValueError(f"split must be one of {', '.join(EMNIST_CLASSES)}; got {split!r}")
        self.split = split
        self.class_names = EMNIST_CLASSES[split]  # type: ignore[misc]

    def describe(self, root: Path | None) -> str:
        return f"{self.split}:{super().describe(root)}"

    def known_shape(self, root: Path | None) -> ImageShape | None:
        """28x28 grayscale with the split's classes, for torchvision's files (not a local image folder)."""
        if root is not None and not self._holds_own_files(root):
            return None
        return ImageShape(channels=1, height=28, width=28, num_classes=len(self.class_names))

    def _local_files(self, root: Path) -> str:
        return (f"IDX files emnist-{self.split}-train-images-idx3-ubyte[.gz], emnist-{self.split}-train-labels-"
                f"idx1-ubyte[.gz], emnist-{self.split}-test-images-idx3-ubyte[.gz] and emnist-{self.split}-test-"
                f"labels-idx1-ubyte[.gz] in {root} or {root}/EMNIST/raw")

    def _idx_in(self, directory: Path) -> IdxFiles | None:
        prefix = f"emnist-{self.split}-"
        return (find_idx_files(directory, prefix=prefix, test_name="test")
                or find_idx_files(directory / "EMNIST" / "raw", prefix=prefix, test_name="test"))

    def _decode_local(self, where: object) -> ImageData:
        assert isinstance(where, IdxFiles)
        train_x, train_y, test_x, test_y = where.read()
        if self.split == "letters":
            train_y, test_y = train_y - 1, test_y - 1
        data = self._checked(where, train_x.transpose(0, 2, 1), train_y, test_x.transpose(0, 2, 1), test_y)
        return data

    def _from_torchvision(self, root: Path, download: bool) -> ImageData:
        found = self._idx_in(root)
        if found is None:
            import torchvision.datasets

            fetch_with_torchvision(
                "EMNIST", root, download,
                lambda: torchvision.datasets.EMNIST(str(root), split=self.split, train=True, download=True),
            )
            found = self._idx_in(root)
            if found is None:
                raise DataError(f"torchvision downloaded EMNIST into {root} but {self._local_files(root)} are absent")
        return self._decode_local(found)
