"""The base of the sources torchvision has: its download and files, or the same classes as an image folder.

A subclass says where the data at a root is (`_locate`: torchvision's files, an image folder or archive, or
files the source reads itself), how to name that place in the dataset identity and how to decode it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from lossbench.data.base import ImageData
from lossbench.data.fingerprint import file_digest
from lossbench.data.folder import check_folder_images, describe_folder
from lossbench.data.folder_files import is_archive
from lossbench.data.sources import ROOT_HINT, DatasetSource, FolderRoot, TorchvisionRoot, folder_data
from lossbench.errors import DataError


class TorchvisionSource(DatasetSource):
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
            return folder_data(where.path)
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
                    details=[f"{ROOT_HINT}, or allow the download"],
                ) from None
            try:
                root.mkdir(parents=True, exist_ok=True)
                train, test = cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
            except Exception as exc:  # urllib, ssl, socket and torchvision each raise their own types
                raise DataError(
                    f"could not download {name} with torchvision into {root} (offline?): {exc}",
                    details=[
                        f"{ROOT_HINT} pointing at a local copy: torchvision's files, an image folder, "
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
