"""Dataset sources: where each named dataset's images come from, how to name that source, how to decode it.

A source is a class registered in DATASETS. It answers two questions about a root (a path or None):
`describe(root)`, a cheap string naming the data (what follows `<name>:` in a dataset identity), and
`decode(root, ...)`, every image of both splits as uint8 tensors, which `load_dataset` calls once per cache key.
Both raise DataError when the root cannot be used, naming the path and what was expected.
"""

from __future__ import annotations

import hashlib
import importlib.util
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch

from lossbench.data.base import ImageData, ImageShape
from lossbench.data.fingerprint import content_digest, file_digest
from lossbench.data.folder import check_folder_images, describe_folder, is_archive, read_folder
from lossbench.data.idx import IdxFiles, find_idx_files
from lossbench.data.splits import stratified_holdout
from lossbench.errors import DataError
from lossbench.registry import Contract, Registry

# Where MNIST-style datasets are found without a download: each directory is searched for the IDX files
# directly and in torchvision's `<dir>/<MNIST|FashionMNIST>/raw` layout.
SYSTEM_ROOTS: dict[str, tuple[Path, ...]] = {
    "mnist": (Path("/usr/share/datasets/mnist"), Path("/usr/local/share/datasets/mnist")),
    "fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"), Path("/usr/local/share/datasets/fashion-mnist")),
}

_ROOT_HINT = "pass --data-root PATH or set dataset.root in the suite"


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


def _folder_data(path: Path, image_size: int | None = None) -> ImageData:
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


def _require_exists(root: Path) -> None:
    if not root.exists():
        raise DataError(f"dataset root {root} does not exist", details=[_ROOT_HINT])


def _fetch_with_torchvision(name: str, root: Path, download: bool, fetch: Callable[[], object]) -> None:
    """Let torchvision download dataset `name` into `root` (`fetch` constructs its dataset with download=True).

    For sources whose files lossbench reads itself once they are there (SVHN, STL-10, EMNIST).
    """
    if not download:
        raise DataError(
            f"{name} is not in {root} and downloads are off (dataset.download: false)",
            details=[f"{_ROOT_HINT}, or allow the download"],
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        fetch()
    except Exception as exc:  # urllib, ssl, socket and torchvision each raise their own types
        raise DataError(
            f"could not download {name} with torchvision into {root} (offline?): {exc}",
            details=[f"{_ROOT_HINT} pointing at a local copy of torchvision's files"],
        ) from None


@DATASETS.register("digits")
class Digits(DatasetSource):
    """scikit-learn's 8x8 handwritten digits (1797 images, no download); a fixed stratified 80/20 split.

    Pixel values 0..16 are scaled to 0..255 (round(v * 255 / 16)). The root is ignored: the data ships inside
    scikit-learn.
    """

    test_fraction: ClassVar[float] = 0.2
    official_sizes = (1438, 359)  # 1797 images, 20 % of them (359) held out for testing

    @classmethod
    def known_sizes(cls, root: Path | None) -> tuple[int, int] | None:
        return cls.official_sizes  # the root is ignored: the data ships inside scikit-learn

    shape = ImageShape(channels=1, height=8, width=8, num_classes=10)

    def _holds_own_files(self, root: Path) -> bool:
        return True  # the root is ignored

    def describe(self, root: Path | None) -> str:
        return "sklearn"

    def decode(self, root: Path | None, *, download: bool, download_dir: Path) -> ImageData:
        values, targets = _sklearn_digits()
        images = torch.from_numpy(np.floor(values * 255 / 16 + 0.5).astype(np.uint8)).reshape(-1, 1, 8, 8)
        labels = torch.from_numpy(targets.astype(np.int64))
        train, test = stratified_holdout(labels, round(self.test_fraction * len(labels)), seed=0, stream=0)
        return ImageData(
            name="",
            identity="",
            classes=tuple(str(d) for d in range(10)),
            train_x=images[train].contiguous(),
            train_y=labels[train],
            test_x=images[test].contiguous(),
            test_y=labels[test],
        )


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits as [1797, 64] pixel values 0..16 and [1797] labels, as `sklearn.datasets.load_digits` gives them.

    The CSV that `load_digits` parses is read directly when it is where scikit-learn keeps it, because importing
    sklearn.datasets (scipy and more) costs seconds of CPU on every process start of the smoke suite.
    """
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    csv = Path(locations[0]) / "datasets" / "data" / "digits.csv.gz" if locations else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",", ndmin=2)
        if table.shape == (1797, 65):
            return table[:, :64], table[:, 64]
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data, bunch.target


class _TorchvisionSource(DatasetSource):
    """A torchvision dataset, or the same classes as an image folder or archive the user points at."""

    torchvision_class: ClassVar[str]

    def _holds_own_files(self, root: Path) -> bool:
        try:
            return not isinstance(self._locate(root), FolderRoot)
        except DataError:
            return False

    def describe(self, root: Path | None) -> str:
        where = self._locate(root)
        if isinstance(where, FolderRoot):
            try:
                return describe_folder(where.path)
            except DataError as exc:
                exc.details.append(f"or {self._local_files(where.path)}")
                raise
        if isinstance(where, TorchvisionRoot):
            return "torchvision"
        return self._describe_local(where)

    def check_files(self, root: Path | None) -> None:
        where = self._locate(root)
        if isinstance(where, FolderRoot):
            check_folder_images(where.path)

    def decode(self, root: Path | None, *, download: bool, download_dir: Path) -> ImageData:
        where = self._locate(root)
        if isinstance(where, FolderRoot):
            return _folder_data(where.path)
        if isinstance(where, TorchvisionRoot):
            return self._from_torchvision(where.path or download_dir, download)
        return self._decode_local(where)

    def _locate(self, root: Path | None) -> object:
        """Where the data at `root` is: a TorchvisionRoot, a FolderRoot, or a source-specific location."""
        raise NotImplementedError

    def _local_files(self, root: Path) -> str:
        """What torchvision's own files for this dataset look like under `root` (for error messages)."""
        raise NotImplementedError

    def _describe_local(self, where: object) -> str:
        """The identity part of a source-specific location returned by `_locate`."""
        raise NotImplementedError

    def _folder_root(self, root: Path) -> FolderRoot:
        """`root` as an image folder or archive of this dataset's classes; a plain file is an error."""
        if root.is_dir() or is_archive(root):
            return FolderRoot(root)
        raise DataError(f"dataset root {root} is a file but not an archive",
                        details=[f"expected {self._local_files(root)}, or an image folder or archive"])

    @staticmethod
    def _files_identity(paths: tuple[Path, ...], official_md5: dict[str, str], kind: str) -> str:
        """`torchvision` when every file has its official MD5 (the data a download gives), else `kind:` and 12
        hex digits of the files' content."""
        md5s = [file_digest(p, "md5") for p in paths]
        if all(official_md5[p.name] == m for p, m in zip(paths, md5s, strict=True)):
            return "torchvision"
        return f"{kind}:{hashlib.sha256('|'.join(md5s).encode()).hexdigest()[:12]}"

    def _decode_local(self, where: object) -> ImageData:
        """Decode a source-specific location returned by `_locate`."""
        raise NotImplementedError

    def _classes(self, dataset: object) -> tuple[str, ...]:
        return tuple(dataset.classes)  # type: ignore[attr-defined]

    def _torchvision_class(self) -> type:
        import torchvision.datasets

        return getattr(torchvision.datasets, self.torchvision_class)

    def _from_torchvision(self, root: Path, download: bool) -> ImageData:
        cls = self._torchvision_class()
        name = self.torchvision_class
        try:
            # Without download first: with it, torchvision re-verifies checksums and prints on every load.
            train, test = cls(str(root), train=True, download=False), cls(str(root), train=False, download=False)
        except RuntimeError:
            if not download:
                raise DataError(
                    f"{name} is not in {root} and downloads are off (dataset.download: false)",
                    details=[f"{_ROOT_HINT}, or allow the download"],
                ) from None
            try:
                root.mkdir(parents=True, exist_ok=True)
                train, test = cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
            except Exception as exc:  # urllib, ssl, socket and torchvision each raise their own types
                raise DataError(
                    f"could not download {name} with torchvision into {root} (offline?): {exc}",
                    details=[
                        f"{_ROOT_HINT} pointing at a local copy: torchvision's files, an image folder, "
                        "or a .tar.gz/.tgz/.tar/.zip with train/ and test/ class folders"
                    ],
                ) from None
        except Exception as exc:
            raise DataError(f"torchvision cannot read {name} from {root}: {exc}") from None

        def images(ds: object) -> torch.Tensor:
            data = torch.as_tensor(np.asarray(ds.data))  # type: ignore[attr-defined]
            # CIFAR stores [N,H,W,C], MNIST [N,H,W].
            return (data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)).contiguous()

        def labels(ds: object) -> torch.Tensor:
            return torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)  # type: ignore[attr-defined]

        return ImageData(
            name="",
            identity="",
            classes=self._classes(train),
            train_x=images(train),
            train_y=labels(train),
            test_x=images(test),
            test_y=labels(test),
        )


class _Cifar(_TorchvisionSource):
    # Names that mark torchvision's own files inside a root: the extracted folder and the downloaded archive.
    batches_dir: ClassVar[str]
    archive_name: ClassVar[str]

    def _locate(self, root: Path | None) -> TorchvisionRoot | FolderRoot:
        if root is None:
            return TorchvisionRoot(None)
        _require_exists(root)
        if root.name in (self.batches_dir, self.archive_name):
            return TorchvisionRoot(root.parent)
        if root.is_dir() and ((root / self.batches_dir).is_dir() or (root / self.archive_name).is_file()):
            return TorchvisionRoot(root)
        if root.is_dir() or is_archive(root):
            return FolderRoot(root)
        raise DataError(
            f"dataset root {root} is a file but not an archive",
            details=[
                f"expected torchvision's {self.batches_dir}/, an image folder, or a .tar.gz/.tgz/.tar/.zip "
                "with train/ and test/ class folders"
            ],
        )

    def _local_files(self, root: Path) -> str:
        return f"torchvision's files: {root}/{self.batches_dir}/ or {root}/{self.archive_name}"


@DATASETS.register("cifar10")
class Cifar10(_Cifar):
    """CIFAR-10: 50k/10k 32x32 RGB images, 10 classes; torchvision download, its files, or a folder/archive."""

    torchvision_class = "CIFAR10"
    official_sizes = (50_000, 10_000)
    shape = ImageShape(channels=3, height=32, width=32, num_classes=10)
    batches_dir = "cifar-10-batches-py"
    archive_name = "cifar-10-python.tar.gz"


@DATASETS.register("cifar100")
class Cifar100(_Cifar):
    """CIFAR-100: 50k/10k 32x32 RGB images, 100 classes; torchvision download, its files, or a folder/archive."""

    torchvision_class = "CIFAR100"
    official_sizes = (50_000, 10_000)
    shape = ImageShape(channels=3, height=32, width=32, num_classes=100)
    batches_dir = "cifar-100-python"
    archive_name = "cifar-100-python.tar.gz"


class _IdxDataset(_TorchvisionSource):
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
        _require_exists(root)
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

            _fetch_with_torchvision(
                "EMNIST", root, download,
                lambda: torchvision.datasets.EMNIST(str(root), split=self.split, train=True, download=True),
            )
            found = self._idx_in(root)
            if found is None:
                raise DataError(f"torchvision downloaded EMNIST into {root} but {self._local_files(root)} are absent")
        return self._decode_local(found)


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
                details=[_ROOT_HINT],
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
        return _folder_data(self._root(root), self.image_size)
