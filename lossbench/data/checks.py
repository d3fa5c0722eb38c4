"""The suite's checks on its dataset: the source is registered and takes the suite's own keys with valid values,
subsets fit their splits, the root is a regular file or directory, and resized images fit in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lossbench.config.messages import located_error
from lossbench.config.dataset import DatasetConfig
from lossbench.config.schema import Suite
from lossbench.config.source import SuiteSource
from lossbench.data import DATASETS
from lossbench.data.bounds import path_kind
from lossbench.data.load import check_resized_memory
from lossbench.errors import ConfigError, LossbenchError, did_you_mean


def check_dataset(source: SuiteSource) -> list[ConfigError]:
    """The raw `dataset:` section: its source registered, the source's own keys and values, subsets that fit the
    splits, a usable root. Fills in the default dataset name in the raw data where the suite names none."""
    data = source.data
    errors: list[ConfigError] = []
    dataset = data.get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.setdefault("name", DatasetConfig().name), str):
        try:
            DATASETS.get(dataset["name"])
        except LossbenchError as exc:
            errors.append(located_error(source, exc, ("dataset", "name")))
        else:
            errors.extend(_check_source_params(source, dataset))
            errors.extend(_subset_size_errors(source, dataset))
    if isinstance(dataset, dict) and isinstance(dataset.get("root"), str):
        errors.extend(_root_errors(source, dataset["root"]))
    return errors


def _root_errors(source: SuiteSource, root: str) -> list[ConfigError]:
    """A dataset root that does not exist, or is neither a regular file nor a directory (a FIFO would block the
    first read forever, a device such as /dev/zero never ends): refused before anything opens it."""
    hint = ("point --data-root / dataset.root at a local copy (torchvision's files, or a folder or .tar.gz/.zip "
            "archive with train/ and test/), or leave it unset to download into the cache")
    try:
        kind = path_kind(Path(root))
    except LossbenchError as exc:
        return [ConfigError(message=exc.message, location=source.locate(["dataset", "root"]), value=root)]
    if kind in ("file", "directory"):
        return []
    problem = "does not exist" if kind is None else f"is a {kind}, not a regular file or a directory"
    return [ConfigError(message=f"dataset root {root} {problem}", location=source.locate(["dataset", "root"]),
                        value=root, details=[hint])]


def _check_source_params(source: SuiteSource, dataset: dict[str, Any]) -> list[ConfigError]:
    """Keys of `dataset:` beyond DatasetConfig's fields must be parameters of the named source, with valid values."""
    params = {k: v for k, v in dataset.items() if k not in DatasetConfig.model_fields}
    if not params:
        return []
    name = dataset["name"]
    own = {p.name for p in DATASETS.params(name)} - set(DatasetConfig.model_fields)
    allowed = sorted(set(DatasetConfig.model_fields) | own)
    errors: list[ConfigError] = []
    for key, value in params.items():
        if key not in own:
            errors.append(ConfigError(message=f"unknown key '{key}'", location=source.locate(["dataset", key]),
                                      value=key, allowed=allowed, suggestion=did_you_mean(str(key), allowed)))
            continue
        try:
            DATASETS.resolve_params(name, {key: value})
        except LossbenchError as exc:
            errors.append(located_error(source, exc, ("dataset", key)))
    if errors:
        return errors
    try:
        resolved = DATASETS.resolve_params(name, params)
        DATASETS.get(name)(**{k: v for k, v in resolved.items() if k in own})
    except (ValueError, TypeError) as exc:
        return [ConfigError(message=f"dataset '{name}': {exc}", location=source.locate(["dataset"]),
                            value=params)]
    return []


def _subset_size_errors(source: SuiteSource, dataset: dict[str, Any]) -> list[ConfigError]:
    """An image count larger than its split, where the dataset's split sizes are known without reading it."""
    root = dataset.get("root")
    known = getattr(DATASETS.get(dataset["name"]), "known_sizes", None)
    sizes = known(Path(root) if isinstance(root, str) else None) if known else None
    errors = []
    for key, split, size in zip(("train_subset", "test_subset"), ("training", "test"), sizes or ()):
        value = dataset.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > size:
            errors.append(ConfigError(
                message=f"{key} = {value:,} but {dataset['name']} has {size:,} {split} images",
                location=source.locate(["dataset", key]), value=value,
                details=[f"give at most {size:,} images, or a fraction in (0, 1]"]))
    return errors


def check_data_memory(source: SuiteSource, suite: Suite) -> list[ConfigError]:
    """The images resized to dataset.image_size fit in memory, where their count is known without reading them."""
    dataset = suite.dataset
    if dataset.image_size is None:
        return []
    try:
        check_resized_memory(dataset)
    except LossbenchError as exc:
        return [ConfigError(message=exc.message, location=source.locate(["dataset", "image_size"]),
                            value=dataset.image_size, details=exc.details)]
    return []
