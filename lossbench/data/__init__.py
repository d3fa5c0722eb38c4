"""Datasets as uint8 tensors: registered sources, a decoded-tensor cache, deterministic subsets and splits."""

from lossbench.data.base import ImageData
from lossbench.data.load import dataset_identity, load_dataset
from lossbench.data.sources import DATASETS
from lossbench.data import stl10, svhn  # noqa: E402,F401  (registers their sources)

__all__ = ["DATASETS", "ImageData", "dataset_identity", "load_dataset"]
