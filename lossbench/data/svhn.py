"""SVHN (Street View House Numbers, Netzer et al. 2011): 32x32 RGB crops of house-number digits, 10 classes.

Read from torchvision's files, MATLAB `.mat` files `train_32x32.mat`, `test_32x32.mat` and `extra_32x32.mat`
directly in the root, with scipy: `X` is [32, 32, 3, N] uint8 and `y` is [N, 1] with the label 10 for the
digit 0 (mapped to 0, as torchvision does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lossbench.data.base import ImageData, ImageShape
from lossbench.data.sources import DATASETS, FolderRoot, TorchvisionRoot, fetch_with_torchvision, require_exists
from lossbench.data.torchvision_source import TorchvisionSource
from lossbench.errors import DataError

# MD5 of the official files (torchvision's SVHN.split_list): a matching set is named like a download.
_OFFICIAL_MD5 = {
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    "extra_32x32.mat": "a93ce644f1a588dc4d68dda5feec44a7",
}


@dataclass(frozen=True)
class SvhnFiles:
    """The `.mat` files of one SVHN copy: the training parts (train, and extra when asked) and the test file."""

    train: tuple[Path, ...]
    test: Path

    @property
    def paths(self) -> tuple[Path, ...]:
        return (*self.train, self.test)


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 3, 32, 32] uint8 and labels [N] int64 in 0..9 from one SVHN `.mat` file."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, TypeError or MatReadError on a damaged file
        raise DataError(f"cannot read SVHN file {path}: {exc}") from None
    images, labels = mat.get("X"), mat.get("y")
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[2] != 3 or images.dtype != np.uint8:
        found = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else "no array"
        raise DataError(f"{path} should hold uint8 images X [H, W, 3, N]; found {found}")
    if not isinstance(labels, np.ndarray) or labels.size != images.shape[3] or labels.dtype.kind not in "iuf":
        raise DataError(f"{path} should hold one label per image in y [N, 1]; found {getattr(labels, 'shape', None)}")
    labels = labels.reshape(-1).astype(np.int64)
    if len(labels) and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"{path} has labels outside 1..10 (SVHN labels the digit 0 as 10)")
    labels[labels == 10] = 0
    return np.ascontiguousarray(images.transpose(3, 2, 0, 1)), labels


@DATASETS.register("svhn")
class Svhn(TorchvisionSource):
    """SVHN house-number digits: 73,257/26,032 32x32 RGB images, 10 classes; `extra` adds 531,131 training images.

    Read from torchvision's `train_32x32.mat` / `test_32x32.mat` (/ `extra_32x32.mat`) in dataset.root, an image
    folder or archive, or a torchvision download.
    """

    torchvision_class = "SVHN"
    shape = ImageShape(channels=3, height=32, width=32, num_classes=10)

    def __init__(self, extra: bool = False):
        if not isinstance(extra, bool):
            raise ValueError(f"extra must be true or false, not {extra!r}")
        self.extra = extra

    def _file_names(self) -> tuple[str, ...]:
        return ("train_32x32.mat", "extra_32x32.mat") if self.extra else ("train_32x32.mat",)

    def describe(self, root: Path | None) -> str:
        described = super().describe(root)
        return f"train+extra:{described}" if self.extra else described

    def _locate(self, root: Path | None) -> TorchvisionRoot | FolderRoot | SvhnFiles:
        if root is None:
            return TorchvisionRoot(None)
        require_exists(root)
        if root.is_dir() and (root / "train_32x32.mat").is_file():
            missing = [n for n in (*self._file_names(), "test_32x32.mat") if not (root / n).is_file()]
            if missing:
                raise DataError(f"{root} holds only part of SVHN; missing: {', '.join(missing)}",
                                details=["set dataset.extra: false to train without extra_32x32.mat"]
                                if missing == ["extra_32x32.mat"] else [])
            return SvhnFiles(tuple(root / n for n in self._file_names()), root / "test_32x32.mat")
        return self._folder_root(root)

    def _local_files(self, root: Path) -> str:
        return f"torchvision's files: {', '.join(f'{root}/{n}' for n in (*self._file_names(), 'test_32x32.mat'))}"

    def _describe_local(self, where: object) -> str:
        """`torchvision` for the official files, else `mat:` and 12 hex digits of the files' content."""
        assert isinstance(where, SvhnFiles)
        return self._files_identity(where.paths, _OFFICIAL_MD5, "mat")

    def _decode_local(self, where: object) -> ImageData:
        assert isinstance(where, SvhnFiles)
        parts = [read_svhn_mat(p) for p in where.train]
        test_x, test_y = read_svhn_mat(where.test)
        return ImageData(
            name="",
            identity="",
            classes=tuple(str(d) for d in range(10)),
            train_x=torch.from_numpy(np.concatenate([x for x, _ in parts])),
            train_y=torch.from_numpy(np.concatenate([y for _, y in parts])),
            test_x=torch.from_numpy(test_x),
            test_y=torch.from_numpy(test_y),
        )

    def _from_torchvision(self, root: Path, download: bool) -> ImageData:
        names = (*self._file_names(), "test_32x32.mat")
        if not all((root / n).is_file() for n in names):
            import torchvision.datasets

            def fetch() -> None:
                for split in ("train", "extra", "test") if self.extra else ("train", "test"):
                    torchvision.datasets.SVHN(str(root), split=split, download=True)

            fetch_with_torchvision("SVHN", root, download, fetch)
        return self._decode_local(SvhnFiles(tuple(root / n for n in self._file_names()), root / "test_32x32.mat"))
