"""Checks on a suite's raw data, beside the schema, so that a structural mistake elsewhere never hides a misspelt
component: every component registered with valid parameters, the dataset's own keys, grid levels and size."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lossbench.config.dataset import DatasetConfig
from lossbench.config.fields import MAX_ADAPTIVE_SEEDS, MAX_CELLS, ComponentSpec, to_spec
from lossbench.config.messages import located_error
from lossbench.config.schema import GRID_AXES
from lossbench.config.source import SuiteSource
from lossbench.errors import ConfigError, LossbenchError, did_you_mean


@dataclass(frozen=True)
class _ComponentRef:
    """A component named in the suite: its registry kind, what the suite wrote, where, and its grid axis level."""

    kind: str
    spec: ComponentSpec
    path: tuple[Any, ...]
    axis: str | None = None
    level: int | None = None


def _spec_or_none(value: Any) -> ComponentSpec | None:
    """The component a raw value names; None where its shape is wrong (the schema reports that)."""
    try:
        plain = to_spec(value)
        return ComponentSpec(name=plain["name"], params=plain["params"])
    except (ValueError, TypeError, ValidationError):
        return None


def _component_refs(data: dict[str, Any]) -> list[_ComponentRef]:
    refs: list[_ComponentRef] = []
    dataset = data.get("dataset")
    if isinstance(dataset, dict):
        for scenario in ("imbalance", "label_noise"):
            if isinstance(dataset.get(scenario), dict) and all(isinstance(k, str) for k in dataset[scenario]):
                refs.append(_ComponentRef("scenarios", ComponentSpec(name=scenario, params=dataset[scenario]),
                                          ("dataset", scenario)))
    model = data.get("model", {})
    if isinstance(model, dict) and isinstance(model.get("name", "tutorial_cnn"), str) \
            and all(isinstance(k, str) for k in model):
        params = {k: v for k, v in model.items() if k != "name"}
        refs.append(_ComponentRef("models", ComponentSpec(name=model.get("name", "tutorial_cnn"), params=params),
                                  ("model",)))
    train = data.get("train")
    if isinstance(train, dict):
        for key, kind in (("optimizer", "optimizers"), ("schedule", "schedules")):
            spec = _spec_or_none(train[key]) if key in train else None
            if spec is not None:
                refs.append(_ComponentRef(kind, spec, ("train", key)))
    grid = data.get("grid")
    if not isinstance(grid, dict):
        return refs
    kinds = {"loss": "losses", "regularizer": "regularizers", "augmentation": "augmentations",
             "optimizer": "optimizers", "scenario": "scenarios"}
    for axis, kind in kinds.items():
        levels = grid.get(axis)
        if not isinstance(levels, list):
            continue
        for i, level in enumerate(levels):
            stacked = axis in ("regularizer", "augmentation", "scenario") and isinstance(level, list)
            for j, item in enumerate(level if stacked else [level]):
                spec = _spec_or_none(item)
                if spec is not None:
                    refs.append(_ComponentRef(kind, spec, ("grid", axis, i, j) if stacked and len(level) > 1
                                              else ("grid", axis, i), axis, i))
    return refs


def check_components(source: SuiteSource) -> list[ConfigError]:
    """Every component name registered, every parameter valid, no grid level written twice."""
    from lossbench.data import DATASETS

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
    from lossbench.components import registries

    table = registries()
    # Each grid level as its resolved components, to find levels that are one cell under two spellings.
    levels: dict[tuple[str, int], list[Any] | None] = {}
    valid: list[_ComponentRef] = []
    for ref in _component_refs(data):
        if not _all_finite(ref.spec.params):
            levels[(ref.axis or "", ref.level or 0)] = None
            continue  # the reader has reported the .nan or .inf at its line; a second error would only repeat it
        try:
            resolved = table[ref.kind].check(ref.spec.name, ref.spec.params)
        except LossbenchError as exc:
            errors.append(located_error(source, exc, ref.path))
            resolved = None
        else:
            valid.append(ref)
        if ref.axis is not None and ref.level is not None:
            key = (ref.axis, ref.level)
            previous = levels.get(key, [])
            levels[key] = None if resolved is None or previous is None else \
                [*previous, (ref.spec.name, json.dumps(resolved, sort_keys=True, default=str))]
    errors.extend(_repeated_levels(source, levels))
    errors.extend(_check_combinations(source, valid))
    return errors


def _root_errors(source: SuiteSource, root: str) -> list[ConfigError]:
    """A dataset root that does not exist, or is neither a regular file nor a directory (a FIFO would block the
    first read forever, a device such as /dev/zero never ends): refused before anything opens it."""
    from lossbench.data.bounds import path_kind

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


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_all_finite(v) for v in value)
    return True


def _repeated_levels(source: SuiteSource, levels: dict[tuple[str, int], list[Any] | None]) -> list[ConfigError]:
    """Two levels of one axis that resolve to the same components would be one cell trained twice."""
    errors = []
    first: dict[tuple[str, str], int] = {}
    for (axis, level), resolved in sorted(levels.items()):
        if resolved is None:
            continue
        key = (axis, json.dumps(resolved))
        if key in first:
            earlier = source.locate(["grid", axis, first[key]])
            where = f"line {earlier.line}" if earlier.line else str(earlier)
            errors.append(ConfigError(
                message=f"grid.{axis}[{level}] repeats grid.{axis}[{first[key]}] ({where}): with defaults filled "
                        "in they are the same cell",
                location=source.locate(["grid", axis, level]),
                details=["list each level once; to train a level more often, add seeds"],
            ))
        else:
            first[key] = level
    return errors


def _check_source_params(source: SuiteSource, dataset: dict[str, Any]) -> list[ConfigError]:
    """Keys of `dataset:` beyond DatasetConfig's fields must be parameters of the named source, with valid values."""
    from lossbench.data import DATASETS

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
    from lossbench.data import DATASETS

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


def _check_combinations(source: SuiteSource, valid: list[_ComponentRef]) -> list[ConfigError]:
    """Losses defined on hard labels cannot train with label-mixing augmentations (mixup, cutmix).

    Judged on the components that are valid, so a mistake elsewhere in the suite does not hide this one.
    """
    from lossbench.components import registries as component_registries

    registries = component_registries()
    mixing = list(dict.fromkeys(
        ref.spec.name for ref in valid
        if ref.axis == "augmentation"
        and getattr(registries["augmentations"].get(ref.spec.name), "soft_targets", False)))
    if not mixing:
        return []
    errors = []
    for ref in valid:
        if ref.axis == "loss" and not getattr(registries["losses"].get(ref.spec.name), "soft_targets", True):
            errors.append(ConfigError(
                message=f"loss '{ref.spec.name}' takes hard labels only and cannot train with label-mixing "
                        f"augmentation ({', '.join(mixing)})",
                location=source.locate(ref.path),
                details=["remove the loss or those augmentations, or split them into two suites"],
            ))
    return errors


def grid_size_error(source: SuiteSource) -> ConfigError | None:
    """The number of cells from the axis lengths alone, refused above MAX_CELLS before anything is expanded."""
    grid = source.data.get("grid")
    if not isinstance(grid, dict):
        return None
    seeds = source.data.get("seeds", [0])
    counts = {axis: len(grid[axis]) for axis in GRID_AXES if isinstance(grid.get(axis), list)}
    max_seeds = seeds.get("max", 10) if isinstance(seeds, dict) else 1
    if not isinstance(max_seeds, int) or not 2 <= max_seeds <= MAX_ADAPTIVE_SEEDS:
        max_seeds = 1  # out of its own bounds: the schema names `seeds.max`, which is the mistake
    counts["seeds"] = len(seeds) if isinstance(seeds, list) else max_seeds
    total = math.prod(max(n, 1) for n in counts.values())
    if total <= MAX_CELLS:
        return None
    shape = " × ".join(f"{n} {axis}" for axis, n in counts.items())
    return ConfigError(message=f"the grid has {total:,} cells ({shape}); at most {MAX_CELLS:,} are allowed",
                       location=source.locate(["grid"]),
                       details=["split it into several suites, or drop levels that do not answer your question"])
