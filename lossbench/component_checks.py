"""The suite's checks on its components: every name registered with valid parameters, no grid level written
twice, no hard-label loss with a label-mixing augmentation, and a model that fits the data, the losses and the
dropout the regularizers ask for."""

from __future__ import annotations

import json
import math
from typing import Any

from lossbench.components import check_dropout_placement, check_model_shape, model_facts
from lossbench.config.messages import located_error
from lossbench.config.refs import ComponentRef, component_refs
from lossbench.config.schema import Suite
from lossbench.config.source import SuiteSource
from lossbench.data.load import known_image_shape
from lossbench.errors import ConfigError, LossbenchError, ModelFitError
from lossbench.registries import registries
from lossbench.regularizers import RegularizerSet


def check_components(source: SuiteSource) -> list[ConfigError]:
    """Every component name registered, every parameter valid, no grid level written twice, no mixing of
    hard-label losses with label-mixing augmentations."""
    data = source.data
    errors: list[ConfigError] = []
    table = registries()
    # Each grid level as its resolved components, to find levels that are one cell under two spellings.
    levels: dict[tuple[str, int], list[Any] | None] = {}
    valid: list[ComponentRef] = []
    for ref in component_refs(data):
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


def _check_combinations(source: SuiteSource, valid: list[ComponentRef]) -> list[ConfigError]:
    """Losses defined on hard labels cannot train with label-mixing augmentations (mixup, cutmix).

    Judged on the components that are valid, so a mistake elsewhere in the suite does not hide this one.
    """
    table = registries()
    mixing = list(dict.fromkeys(
        ref.spec.name for ref in valid
        if ref.axis == "augmentation"
        and getattr(table["augmentations"].get(ref.spec.name), "soft_targets", False)))
    if not mixing:
        return []
    errors = []
    for ref in valid:
        if ref.axis == "loss" and not getattr(table["losses"].get(ref.spec.name), "soft_targets", True):
            errors.append(ConfigError(
                message=f"loss '{ref.spec.name}' takes hard labels only and cannot train with label-mixing "
                        f"augmentation ({', '.join(mixing)})",
                location=source.locate(ref.path),
                details=["remove the loss or those augmentations, or split them into two suites"],
            ))
    return errors


def check_model_fit(source: SuiteSource, suite: Suite) -> list[ConfigError]:
    """The model can place the dropout every regularizer entry asks for, and, where the dataset's shape is known
    without decoding it, takes its images and gives every loss the output width it needs."""
    model, params = suite.model.name, suite.model.params
    errors: list[ConfigError] = []
    placements = []
    for i, stack in enumerate(suite.grid.regularizer):
        placement = RegularizerSet([registries()["regularizers"].build(s.name, s.params) for s in stack]).dropout()
        try:
            check_dropout_placement(model, placement)
        except ModelFitError as exc:
            exc.location = source.locate(["grid", "regularizer", i])
            errors.append(exc)
        placements.append(placement)
    dataset = suite.dataset
    try:
        shape = known_image_shape(dataset)
    except LossbenchError:
        return errors  # an unusable root or source: the data checks of `validate` name it
    if shape is None or errors:
        return errors
    losses = [registries()["losses"].build(s.name, s.params) for s in suite.grid.loss]
    seen: set[str] = set()
    for facts in dict.fromkeys(model_facts(shape, loss, p) for loss in losses for p in placements):
        try:
            check_model_shape(model, params, facts)
        except ModelFitError as exc:
            if exc.message not in seen:
                seen.add(exc.message)
                exc.location = source.locate(["model", exc.parameter or "name"])
                exc.details.append(f"the dataset '{dataset.name}' gives the model images of "
                                   f"{shape.height}×{shape.width} pixels")
                errors.append(exc)
    return errors
