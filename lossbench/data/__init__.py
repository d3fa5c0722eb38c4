"""Datasets as uint8 tensors: registered sources, a decoded-tensor cache, deterministic subsets and splits."""

from lossbench.data import cifar, digits, mnist, stl10, svhn  # noqa: F401  (registers their sources)
from lossbench.data.base import ImageData
from lossbench.data.load import dataset_identity, load_dataset
from lossbench.data.sources import DATASETS

__all__ = ["DATASETS", "ImageData", "dataset_identity", "load_dataset"]
