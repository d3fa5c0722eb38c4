"""The search space of a suite's `tune:` block: what each dotted path names in a cell, which cells it applies to,
its validation, and a cell with sampled values set in place (a trial, or a final tuned cell).

Paths name a parameter of the recipe or of one of a cell's components:

  train.optimizer.<param>   the cell's optimizer (from train.optimizer or the grid's optimizer axis)
  train.schedule.<param>    the learning-rate schedule
  train.batch_size          the training batch size (images per step)
  model.<param>             the model
  loss.<param>              the cell's loss
  regularizer.<param>       every regularizer of the cell's stack that has the parameter
  augmentation.<param>      every augmentation of the cell's stack that has the parameter

A path applies to a cell when the cell's component has that parameter (`loss.gamma` applies to focal cells, not
to cross_entropy ones). `train.epochs` is not tunable: epochs are the resource pruning spends and the budget every
cell gets. This module imports no Optuna; lossbench/tune.py drives the study.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lossbench.config.fields import MAX_BATCH_SIZE
from lossbench.errors import ConfigError, LossbenchError, did_you_mean
from lossbench.grid import Cell, ResolvedComponent, cell_id

if TYPE_CHECKING:
    from lossbench.config.fields import ComponentSpec
    from lossbench.config.schema import Suite
    from lossbench.config.source import SuiteSource
    from lossbench.config.tune_schema import ParamRange

#: Tuning trials train with seeds from here up, above any seed a suite is likely to list for its verdict, so that
#: the seeds that choose a cell's values are never the seeds that judge it (the first free ones are taken).
TUNING_SEED_BASE = 1_000_000

#: Path prefix → the part of a cell it names; `train.batch_size` is the one tunable recipe value.
_PREFIXES = {"train.optimizer": "optimizer", "train.schedule": "schedule", "model": "model", "loss": "loss",
             "regularizer": "regularizer", "augmentation": "augmentation"}
_RECIPE_VALUES = {"train.batch_size": "batch_size"}
_REGISTRY = {"optimizer": "optimizers", "schedule": "schedules", "model": "models", "loss": "losses",
             "regularizer": "regularizers", "augmentation": "augmentations"}
_ALL_FORMS = [*(f"{p}.<param>" for p in _PREFIXES), *_RECIPE_VALUES]


@dataclass(frozen=True)
class Target:
    """What a tuned path names: a `part` of the cell (`loss`, `optimizer`, ..., or `batch_size`) and its `param`."""

    path: str
    part: str
    param: str | None


def parse_path(path: str) -> Target:
    """The target of a dotted path; raises ValueError with a plain sentence for a path that names nothing tunable."""
    if path in _RECIPE_VALUES:
        return Target(path, _RECIPE_VALUES[path], None)
    if path == "train.epochs":
        raise ValueError("train.epochs is not tunable: epochs are the budget every cell gets (and the resource a "
                         "pruner spends)")
    for prefix, part in _PREFIXES.items():
        if path.startswith(prefix + ".") and len(path) > len(prefix) + 1 and "." not in path[len(prefix) + 1:]:
            return Target(path, part, path[len(prefix) + 1:])
    raise ValueError(f"'{path}' names no tunable parameter; paths have the forms {', '.join(_ALL_FORMS)}")


def tuning_seeds(seed_list: list[int]) -> list[int]:
    """The seeds tuning trials train with, for a suite whose verdict may use `seed_list`: the first at or above
    TUNING_SEED_BASE that the verdict never uses."""
    final = set(seed_list)
    seed = TUNING_SEED_BASE
    while seed in final:
        seed += 1
    return [seed]


# -- cells ---------------------------------------------------------------------------------------------------------


def _components(cell: Cell, part: str) -> list[ResolvedComponent]:
    """The components of a cell that `part` names (its recipe's schedule and model, its loss, ...)."""
    if part == "loss":
        return [cell.loss]
    if part == "optimizer":
        return [cell.optimizer]
    if part == "schedule":
        return [cell.recipe.schedule]
    if part == "model":
        return [cell.recipe.model]
    return list(getattr(cell, part))


def applies(cell: Cell, target: Target) -> bool:
    """Whether the path sets something in this cell: its component there has the parameter."""
    if target.param is None:
        return True
    return any(target.param in c.params for c in _components(cell, target.part))


def cell_paths(cell: Cell, space: dict[str, ParamRange]) -> list[str]:
    """The paths of `space` that this cell tunes, in the space's order."""
    return [path for path in space if applies(cell, parse_path(path))]


def _with_param(component: ResolvedComponent, param: str, value: Any) -> ResolvedComponent:
    """The component with `param` set to `value`, where it has that parameter (else unchanged)."""
    if param not in component.params:
        return component
    return ResolvedComponent(component.name, {**component.params, param: value}, component.given)


def with_values(cell: Cell, values: dict[str, Any], seed: int, tuned: dict[str, Any] | None = None) -> Cell:
    """The cell with each value set at its path (paths that do not apply to it are ignored), trained with `seed`,
    and `tuned` (what tuning chose) carried along; its id is computed from the new recipe and components as for any
    cell. Label and axes stay the grid cell's: tuned values are in the config, not in the name."""
    recipe, parts = cell.recipe, {"loss": cell.loss, "optimizer": cell.optimizer,
                                  "regularizer": cell.regularizer, "augmentation": cell.augmentation}
    for path, value in values.items():
        target = parse_path(path)
        if target.param is None:
            recipe = replace(recipe, **{target.part: value})
        elif target.part in ("schedule", "model"):
            recipe = replace(recipe, **{target.part: _with_param(getattr(recipe, target.part), target.param, value)})
        elif target.part in ("regularizer", "augmentation"):
            parts[target.part] = tuple(_with_param(c, target.param, value) for c in parts[target.part])
        else:
            parts[target.part] = _with_param(parts[target.part], target.param, value)
    return replace(cell, seed=seed, recipe=recipe, tuned=tuned if tuned is not None else cell.tuned, **parts)


def grid_cell_id(cell: Cell) -> str:
    """A stable id of the grid point: the cell's id without its seed (the same for every seed of the point)."""
    return cell_id({k: v for k, v in cell.config.items() if k != "seed"})


# -- validation ----------------------------------------------------------------------------------------------------


def _levels(suite: Suite, part: str) -> list[tuple[tuple[Any, ...], ComponentSpec]]:
    """(suite path, component) of every component the cells can have at `part`."""
    from lossbench.config.fields import ComponentSpec

    grid = suite.grid
    if part == "loss":
        return [(("grid", "loss", i), s) for i, s in enumerate(grid.loss)]
    if part in ("regularizer", "augmentation"):
        return [(("grid", part, i), s) for i, stack in enumerate(getattr(grid, part)) for s in stack]
    if part == "optimizer":
        if grid.optimizer:
            return [(("grid", "optimizer", i), s) for i, s in enumerate(grid.optimizer)]
        return [(("train", "optimizer"), suite.train.optimizer)]
    if part == "schedule":
        return [(("train", "schedule"), suite.train.schedule)]
    return [(("model",), ComponentSpec(name=suite.model.name, params=suite.model.params))]


def check_tune(source: SuiteSource, suite: Suite) -> list[ConfigError]:
    """Every error of the `tune:` block: a validation split to tune on, paths that name a parameter of some cell,
    values each component accepts, and a space the sampler can search."""
    tune = suite.tune
    assert tune is not None
    errors: list[ConfigError] = []
    if suite.dataset.val_fraction == 0:
        errors.append(ConfigError(
            message="tune: needs a validation split to tune on, but dataset.val_fraction is 0",
            location=source.locate(["dataset", "val_fraction"] if "val_fraction" in (source.data.get("dataset") or {})
                                   else ["tune"]),
            value=0, details=["set dataset.val_fraction (e.g. 0.2): tuning selects on it, never on the test split"]))
    for path, spec in tune.space.items():
        errors.extend(_path_errors(source, suite, path, spec))
    if tune.sampler == "grid" and not errors:
        points = 1
        for spec in tune.space.values():
            points *= len(spec.choices) if spec.choices is not None else int(spec.high) - int(spec.low) + 1
        if tune.trials > points:
            errors.append(ConfigError(
                message=f"tune.trials is {tune.trials}, but the grid sampler's space has {points} point(s): trials "
                        "beyond them would repeat points", location=source.locate(["tune", "trials"]),
                value=tune.trials, details=[f"set tune.trials to at most {points}, or add choices"]))
    return errors


def _path_errors(source: SuiteSource, suite: Suite, path: str, spec: ParamRange) -> list[ConfigError]:
    """The errors of one path of tune.space: what it names, whether a cell has it, whether its values fit."""
    from lossbench.registries import registries

    assert suite.tune is not None
    where = source.locate(["tune", "space", path])
    try:
        target = parse_path(path)
    except ValueError as exc:
        head = path.rsplit(".", 1)[0] if "." in path else path
        return [ConfigError(message=str(exc), location=where, value=path, allowed=_ALL_FORMS,
                            suggestion=did_you_mean(path, list(_RECIPE_VALUES)) or did_you_mean(head, list(_PREFIXES)))]
    errors: list[ConfigError] = []
    if suite.tune.sampler == "grid" and spec.choices is None and not spec.is_int:
        errors.append(ConfigError(
            message=f"sampler grid searches a list of points, but {path} is a range of real numbers",
            location=where, details=[f"give {path} as choices: [...], or use sampler tpe, random or qmc"]))
    values = spec.choices if spec.choices is not None else [spec.low, spec.high]
    if target.param is None:
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_BATCH_SIZE]
        if bad:
            errors.append(ConfigError(message=f"{path}: {bad[0]!r} is not a batch size (a whole number from 1 to "
                                              f"{MAX_BATCH_SIZE:,})", location=where, value=bad[0]))
        return errors
    registry = registries()[_REGISTRY[target.part]]
    levels = _levels(suite, target.part)
    having = [(at, s) for at, s in levels if target.param in {p.name for p in registry.params(s.name)}]
    if not having:
        names = sorted({p.name for _, s in levels for p in registry.params(s.name)})
        close = did_you_mean(target.param, names)
        prefix = path.rsplit(".", 1)[0]
        return [*errors, ConfigError(
            message=f"{path} applies to no cell: no {registry.singular} of this suite has a parameter "
                    f"'{target.param}' ({', '.join(dict.fromkeys(s.name for _, s in levels))})",
            location=where, value=path, allowed=[f"{prefix}.{n}" for n in names] or None,
            suggestion=f"{prefix}.{close}" if close else None)]
    for at, component in having:
        if target.param in component.params and at[0] == "grid":
            errors.append(ConfigError(
                message=f"{path} is tuned, but {'.'.join(str(k) for k in at)} sets {target.param}="
                        f"{component.params[target.param]!r}: a tuned parameter is not also a grid level's",
                location=source.locate([*at, target.param]),
                details=[f"write that level without {target.param}, or drop {path} from tune.space"]))
            continue
        for value in values:
            try:
                registry.check(component.name, {**component.params, target.param: value})
            except LossbenchError as exc:
                errors.append(ConfigError(message=f"{path} = {value!r}: {exc.message}", location=where, value=value))
                break
    return errors
