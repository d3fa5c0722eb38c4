"""The data request: the suite's `dataset:` section, declared once.

`DatasetConfig` is the schema of `dataset:` and, frozen, the request that `lossbench.data` loads (`load_dataset`),
names (`dataset_identity`) and checks. Adding a dataset option is one field here: the schema accepts it, the
loader receives it, and an `InIdentity` marker puts it into the dataset identity (part of every cell id).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from lossbench.config.fields import MAX_IMAGE_SIZE, ComponentSpec, Flag, Subset


@dataclass(frozen=True)
class InIdentity:
    """Marks a dataset option that changes the tensors: the dataset identity names it as `|key=value` whenever it
    differs from its default."""

    key: str


def _path_text(value: Any) -> Any:
    """A path given from Python (a pathlib.Path) as its string; every other value is left to the field's type."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


ImageSize = Annotated[int, Field(strict=True, gt=0, le=MAX_IMAGE_SIZE)]


class DatasetConfig(BaseModel):
    """Which images to train and test on; keys beyond these fields are the source's own parameters
    (e.g. `split` of emnist, `extra` of svhn), checked against the source in lossbench/data/checks.py.

    The fields marked `InIdentity` are in the order the identity names them."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = "cifar10"
    root: Annotated[str | None, BeforeValidator(_path_text)] = None
    download: Flag = True
    train_subset: Annotated[Subset | None, InIdentity("train")] = None
    test_subset: Annotated[Subset | None, InIdentity("test")] = None
    val_fraction: Annotated[float, Field(ge=0.0, lt=1.0, strict=True), InIdentity("val")] = 0.0
    image_size: Annotated[ImageSize | None, InIdentity("size")] = None
    # Scenarios every cell's training split gets (parameters of the `imbalance` / `label_noise` scenarios, e.g.
    # {rate: 0.2}); the grid axis `scenario` varies them instead. The test split is never changed.
    imbalance: dict[str, Any] | None = None
    label_noise: dict[str, Any] | None = None

    @property
    def source_params(self) -> dict[str, Any]:
        """The parameters of the dataset's source class that the suite sets."""
        return dict(self.model_extra or {})

    def scenarios(self) -> list[ComponentSpec]:
        """The dataset-level scenarios as components, selections before relabelling."""
        return [ComponentSpec(name=name, params=params) for name, params in
                (("imbalance", self.imbalance), ("label_noise", self.label_noise)) if params is not None]
