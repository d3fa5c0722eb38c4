"""CIFAR-10 and CIFAR-100: torchvision's download or files, or an image folder or archive of the same classes."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from lossbench.data.base import ImageShape
from lossbench.data.folder_files import is_archive
from lossbench.data.sources import DATASETS, FolderRoot, TorchvisionRoot, require_exists
from lossbench.data.torchvision_source import TorchvisionSource
from lossbench.errors import DataError


class _Cifar(TorchvisionSource):
    # Names that mark torchvision's own files inside a root: the extracted folder and the downloaded archive.
    batches_dir: ClassVar[str]
    archive_name: ClassVar[str]

    def _locate(self, root: Path | None) -> TorchvisionRoot | FolderRoot:
        if root is None:
            return TorchvisionRoot(None)
        require_exists(root)
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
