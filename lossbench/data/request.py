"""The suite's data request as every executor carries it, and where in the suite a data error points."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lossbench.config.dataset import DatasetConfig
from lossbench.config.schema import Suite
from lossbench.data.base import ImageData
from lossbench.data.load import dataset_identity, load_dataset
from lossbench.errors import DataError


@dataclass(frozen=True)
class DataRequest:
    """The suite's dataset and the tensor cache to load it through, in any process (picklable)."""

    dataset: DatasetConfig
    cache_dir: str

    @classmethod
    def from_suite(cls, suite: Suite, cache_dir: Path) -> DataRequest:
        return cls(suite.dataset, str(cache_dir))

    def load(self) -> ImageData:
        return load_dataset(self.dataset, cache_dir=Path(self.cache_dir))

    def identity(self) -> str:
        """The dataset identity that enters cell ids, including every option that changes the tensors."""
        return dataset_identity(self.dataset)


def located_data_error(suite: Suite, exc: DataError) -> DataError:
    """A data error pointed at the suite key behind it: the dataset option it names (`exc.option`), else the root
    or, without one, the name."""
    if exc.location is None:
        key = exc.option or ("root" if suite.dataset.root else "name")
        exc.location = suite.locate(["dataset", key])
    return exc
