"""The components a suite names, read from its raw data: the checks on components run even where the schema
rejects the suite, so that a structural mistake elsewhere never hides a misspelt component."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from lossbench.axes import AXES
from lossbench.config.fields import ComponentSpec, to_spec


@dataclass(frozen=True)
class ComponentRef:
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


def component_refs(data: dict[str, Any]) -> list[ComponentRef]:
    """Every component the raw suite names whose shape is right: the dataset's scenarios, the model, the
    training recipe's optimizer and schedule, and each grid axis's levels (as the axes table describes them)."""
    refs: list[ComponentRef] = []
    dataset = data.get("dataset")
    if isinstance(dataset, dict):
        for scenario in ("imbalance", "label_noise"):
            if isinstance(dataset.get(scenario), dict) and all(isinstance(k, str) for k in dataset[scenario]):
                refs.append(ComponentRef("scenarios", ComponentSpec(name=scenario, params=dataset[scenario]),
                                          ("dataset", scenario)))
    model = data.get("model", {})
    if isinstance(model, dict) and isinstance(model.get("name", "tutorial_cnn"), str) \
            and all(isinstance(k, str) for k in model):
        params = {k: v for k, v in model.items() if k != "name"}
        refs.append(ComponentRef("models", ComponentSpec(name=model.get("name", "tutorial_cnn"), params=params),
                                  ("model",)))
    train = data.get("train")
    if isinstance(train, dict):
        for key, kind in (("optimizer", "optimizers"), ("schedule", "schedules")):
            spec = _spec_or_none(train[key]) if key in train else None
            if spec is not None:
                refs.append(ComponentRef(kind, spec, ("train", key)))
    grid = data.get("grid")
    if not isinstance(grid, dict):
        return refs
    for axis in AXES:
        levels = grid.get(axis.name)
        if not isinstance(levels, list):
            continue
        for i, level in enumerate(levels):
            stacked = axis.stacked and isinstance(level, list)
            for j, item in enumerate(level if stacked else [level]):
                spec = _spec_or_none(item)
                if spec is not None:
                    path = ("grid", axis.name, i, j) if stacked and len(level) > 1 else ("grid", axis.name, i)
                    refs.append(ComponentRef(axis.kind, spec, path, axis.name, i))
    return refs
