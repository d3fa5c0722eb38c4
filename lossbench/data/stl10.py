"""STL-10 (Coates et al. 2011): 96x96 RGB images of 10 classes; the 5,000 labelled training and 8,000 test images.

Read from torchvision's files in `stl10_binary/`: `train_X.bin` / `test_X.bin` hold uint8 images one after
another, each as 3 planes of 96x96 stored column by column (so each plane is transposed back), `train_y.bin` /
`test_y.bin` one uint8 label 1..10 per image (mapped to 0..9), `class_names.txt` the names in label order.
The 100,000 unlabelled images are not used.
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

SIDE = 96
_IMAGE_BYTES = 3 * SIDE * SIDE
BINARY_DIR = "stl10_binary"
DEFAULT_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
# MD5 of the official files (torchvision's STL10 lists): a matching set is named like a download.
_OFFICIAL_MD5 = {
    "train_X.bin": "918c2871b30a85fa023e0c44e0bee87f",
    "train_y.bin": "5a34089d4802c674881badbb80307741",
    "test_X.bin": "7f263ba9f9e0b06b93213547f721ac82",
    "test_y.bin": "36f9794fa4beb8a2c72628de14fa638e",
}


@dataclass(frozen=True)
class Stl10Files:
    """The `stl10_binary/` directory of one STL-10 copy."""

    directory: Path

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(self.directory / n for n in _OFFICIAL_MD5)

    def classes(self) -> tuple[str, ...]:
        names_file = self.directory / "class_names.txt"
        if not names_file.is_file():
            return DEFAULT_CLASSES
        try:
            text = names_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{names_file} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                            f"{exc.start})", details=["save it as UTF-8, one class name a line, or remove it to use "
                                                      "STL-10's own names"]) from None
        except OSError as exc:
            raise DataError(f"cannot read {names_file}: {exc.strerror or exc}") from None
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
        if len(names) != len(DEFAULT_CLASSES):
            raise DataError(f"{names_file} names {len(names)} classes; STL-10 has {len(DEFAULT_CLASSES)}")
        return names

    def read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Images [N, 3, 96, 96] uint8 and labels [N] int64 in 0..9 of split `train` or `test`."""
        images_path, labels_path = self.directory / f"{split}_X.bin", self.directory / f"{split}_y.bin"
        raw, labels = np.fromfile(images_path, dtype=np.uint8), np.fromfile(labels_path, dtype=np.uint8)
        if raw.size % _IMAGE_BYTES:
            raise DataError(f"{images_path} holds {raw.size} bytes, not a whole number of 3x96x96 images")
        if raw.size // _IMAGE_BYTES != labels.size:
            raise DataError(f"{images_path} has {raw.size // _IMAGE_BYTES} images but {labels_path} has "
                            f"{labels.size} labels")
        if labels.size and (labels.min() < 1 or labels.max() > len(DEFAULT_CLASSES)):
            raise DataError(f"{labels_path} has labels outside 1..{len(DEFAULT_CLASSES)}")
        images = raw.reshape(-1, 3, SIDE, SIDE).transpose(0, 1, 3, 2)
        return np.ascontiguousarray(images), labels.astype(np.int64) - 1


@DATASETS.register("stl10")
class Stl10(TorchvisionSource):
    """STL-10: 5,000/8,000 labelled 96x96 RGB images, 10 classes; torchvision's stl10_binary/, a folder, or a download."""

    torchvision_class = "STL10"
    shape = ImageShape(channels=3, height=SIDE, width=SIDE, num_classes=10)

    def _locate(self, root: Path | None) -> TorchvisionRoot | FolderRoot | Stl10Files:
        if root is None:
            return TorchvisionRoot(None)
        require_exists(root)
        for directory in (root, root / BINARY_DIR):
            if directory.is_dir() and (directory / "train_X.bin").is_file():
                missing = [p.name for p in Stl10Files(directory).paths if not p.is_file()]
                if missing:
                    raise DataError(f"{directory} holds only part of STL-10; missing: {', '.join(missing)}")
                return Stl10Files(directory)
        return self._folder_root(root)

    def check_files(self, root: Path | None) -> None:
        """What `validate` adds for local files: class_names.txt is readable and names ten classes."""
        where = self._locate(root)
        if isinstance(where, Stl10Files):
            where.classes()
        else:
            super().check_files(root)

    def _local_files(self, root: Path) -> str:
        return f"torchvision's files: {root}/{BINARY_DIR}/train_X.bin, train_y.bin, test_X.bin and test_y.bin"

    def _describe_local(self, where: object) -> str:
        """`torchvision` for the official files, else `bin:` and 12 hex digits of the files' content."""
        assert isinstance(where, Stl10Files)
        return self._files_identity(where.paths, _OFFICIAL_MD5, "bin")

    def _decode_local(self, where: object) -> ImageData:
        assert isinstance(where, Stl10Files)
        (train_x, train_y), (test_x, test_y) = where.read("train"), where.read("test")
        return ImageData(
            name="",
            identity="",
            classes=where.classes(),
            train_x=torch.from_numpy(train_x),
            train_y=torch.from_numpy(train_y),
            test_x=torch.from_numpy(test_x),
            test_y=torch.from_numpy(test_y),
        )

    def _from_torchvision(self, root: Path, download: bool) -> ImageData:
        files = Stl10Files(root / BINARY_DIR)
        if not all(p.is_file() for p in files.paths):
            import torchvision.datasets

            fetch_with_torchvision(
                "STL10", root, download, lambda: torchvision.datasets.STL10(str(root), split="train", download=True)
            )
        return self._decode_local(files)
