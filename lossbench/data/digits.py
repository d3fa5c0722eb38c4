"""scikit-learn's 8x8 handwritten digits: the dataset of the smoke suite, shipped with scikit-learn."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from lossbench.data.base import ImageData, ImageShape
from lossbench.data.sources import DATASETS, DatasetSource
from lossbench.data.splits import stratified_holdout


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
