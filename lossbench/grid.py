"""Suite → cells: the product of the grid axes and the seeds, each cell with a label and a stable id.

A cell's id is a short hash of its fully resolved configuration: every component with every parameter
(defaults filled in), the model, the training recipe, the seed and the dataset identity. Writing a default
explicitly does not change an id; changing any value that affects training does. The device does not enter the
id (where a cell ran is recorded in its result, not part of what it is).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from lossbench.axes import AXES, Axis
from lossbench.config.fields import ComponentSpec
from lossbench.config.schema import Suite
from lossbench.registries import registries
from lossbench.registry import Registry

ID_LENGTH = 12


@dataclass(frozen=True)
class ResolvedComponent:
    """A component with every parameter resolved, and the parameters the suite wrote (for the label)."""

    name: str
    params: dict[str, Any]
    given: dict[str, Any] = field(default_factory=dict, compare=False)

    def plain(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params}

    def label(self) -> str:
        if not self.given:
            return self.name
        inner = ", ".join(f"{k}={_fmt(v)}" for k, v in self.given.items())
        return f"{self.name}({inner})"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):  # validation refuses these in suites; a label must still never crash
            return str(value)
        plain = f"{value:g}"
        mantissa, _, exponent = f"{value:e}".partition("e")
        sci = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        # The shorter of 0.0001 and 1e-4, but only where it is exact.
        return sci if len(sci) < len(plain) and float(sci) == value else plain.replace("e-0", "e-").replace("e+0", "e+")
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    return str(value)


def _stack_label(stack: tuple[ResolvedComponent, ...]) -> str:
    return "+".join(c.label() for c in stack)


def _level_label(level: ResolvedComponent | tuple[ResolvedComponent, ...]) -> str:
    """One axis level as a short string: a component's label, or a stack's joined by `+` (`none` when empty: no
    data scenario)."""
    if isinstance(level, ResolvedComponent):
        return level.label()
    return _stack_label(level) or "none"


@dataclass(frozen=True)
class TrialLink:
    """Where a tuning trial reports its validation metric after each epoch (lossbench/tune.py): the study's
    storage URL, the study, the trial's id there, the metric, and the pruner that may stop it."""

    storage: str
    study: str
    trial_id: int
    metric: str
    pruner: str
    #: Epochs every trial may train (the pruner's maximum resource).
    epochs: int
    #: The trial's number in its study (it enters the trial cell's id).
    number: int


@dataclass(frozen=True)
class Recipe:
    """How a cell trains: its model, schedule, epochs and batch sizes. The engine and build_cell read them from here
    and nowhere else; `plain_train()` is what enters the cell's id (the evaluation settings do not: they change
    when a cell is measured, not what it learns)."""

    model: ResolvedComponent
    schedule: ResolvedComponent
    epochs: int
    #: Training images per optimizer step.
    batch_size: int
    #: The precision the suite asks for (`auto`, `fp32`, `bf16`, `fp16`); the engine runs at the precision this
    #: resolves to on its device (EngineOptions.precision).
    precision: str
    #: Images per forward pass when evaluating (no gradients).
    eval_batch_size: int = 2048
    #: Evaluate on the test split every this many epochs, and always after the last one (train.eval_every).
    eval_every: int = 1

    def plain_train(self) -> dict[str, Any]:
        """The `train` block of the cell's config (and id)."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "schedule": self.schedule.plain(),
                "precision": self.precision}

    def evaluates(self, epoch: int) -> bool:
        """Whether epoch `epoch` (1-based) ends with an evaluation on the test split."""
        return epoch % self.eval_every == 0 or epoch == self.epochs


@dataclass(frozen=True)
class DatasetRef:
    """The dataset a cell trains on: its registry name and its identity (every option that changes the tensors)."""

    name: str
    identity: str


@dataclass(frozen=True)
class Cell:
    """One training run: a point of the grid with one seed, and the recipe it trains with.

    `config` (the resolved configuration written into its record) and `id` (a short hash of it) are computed from
    the fields, so they cannot disagree with what trains."""

    seed: int
    loss: ResolvedComponent
    regularizer: tuple[ResolvedComponent, ...]
    augmentation: tuple[ResolvedComponent, ...]
    optimizer: ResolvedComponent
    recipe: Recipe
    dataset: DatasetRef
    has_optimizer_axis: bool = False
    #: Data scenarios of this cell (dataset-level ones first), in the order they apply; () for the clean data.
    scenario: tuple[ResolvedComponent, ...] = ()
    has_scenario_axis: bool = False
    #: Set on a tuning trial: it is judged on the validation split only and reports each epoch to its study.
    trial: TrialLink | None = None
    #: Set on a tuned cell: what tuning chose for it (study, trial, metric, values; lossbench/tune.py).
    tuned: dict[str, Any] | None = None

    @cached_property
    def config(self) -> dict[str, Any]:
        """The cell's resolved configuration: every component with every parameter, the recipe, the seed, the
        dataset identity (what the id hashes, and what its record keeps)."""
        return self._plain()

    @cached_property
    def id(self) -> str:
        """Short hash of the cell's configuration (cell_id); hashed from the fields, not from `config`, which its
        readers hold as a plain dict."""
        return cell_id(self._plain())

    def _plain(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "dataset": {"identity": self.dataset.identity, "name": self.dataset.name},
            "model": self.recipe.model.plain(),
            "train": self.recipe.plain_train(),
            "loss": self.loss.plain(),
            "regularizer": [r.plain() for r in self.regularizer],
            "augmentation": [a.plain() for a in self.augmentation],
            "optimizer": self.optimizer.plain(),
            "seed": self.seed,
        }
        if self.scenario:
            # Only a cell with a scenario gets the key, so the ids of clean cells never change.
            config["scenario"] = [s.plain() for s in self.scenario]
        if self.tuned is not None:
            config["tuned"] = self.tuned
        if self.trial is not None:
            config["tuning_trial"] = {"study": self.trial.study, "number": self.trial.number}
        return config

    @property
    def label(self) -> str:
        """Readable name of the grid point (the same for every seed), e.g. `focal(gamma=2) | l2 | hflip+crop`."""
        parts = [self.loss.label(), _stack_label(self.regularizer), _stack_label(self.augmentation)]
        if self.has_optimizer_axis:
            parts.append(self.optimizer.label())
        if self.has_scenario_axis:
            parts.append(self.scenario_label)
        return " | ".join(parts)

    @property
    def scenario_label(self) -> str:
        """The cell's data scenarios, e.g. `label_noise(rate=0.2)`; `none` for the clean training split."""
        return _stack_label(self.scenario) if self.scenario else "none"

    @property
    def axes(self) -> dict[str, str]:
        """The value of each grid axis as a short string (the columns of results.csv)."""
        return {axis.name: _level_label(getattr(self, axis.name)) for axis in AXES}


def resolve(registry: Registry[Any], spec: ComponentSpec) -> ResolvedComponent:
    return ResolvedComponent(spec.name, registry.resolve_params(spec.name, spec.params), dict(spec.params))


def cell_id(config: dict[str, Any]) -> str:
    """Short hash of a resolved cell configuration; stable under key order."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:ID_LENGTH]


def expand(suite: Suite, dataset_identity: str) -> list[Cell]:
    """Every cell of the suite, in grid order (loss slowest, seed fastest); under adaptive seeding every seed a
    cell may run (0 … max−1)."""
    model = ResolvedComponent(suite.model.name, registries()["models"].resolve_params(suite.model.name, suite.model.params))
    t = suite.train
    recipe = Recipe(model=model, schedule=resolve(registries()["schedules"], t.schedule), epochs=t.epochs,
                    batch_size=t.batch_size, precision=t.precision, eval_batch_size=t.eval_batch_size,
                    eval_every=t.eval_every)
    dataset = DatasetRef(suite.dataset.name, dataset_identity)
    cells = []
    for point in itertools.product(*(_written_levels(suite, axis) for axis in AXES)):
        levels = {axis.name: _resolve_level(suite, axis, level) for axis, level in zip(AXES, point)}
        for seed in suite.seed_list:
            cells.append(Cell(seed=seed, recipe=recipe, dataset=dataset, **levels,
                              has_optimizer_axis=suite.grid.optimizer is not None,
                              has_scenario_axis=suite.grid.scenario is not None))
    return cells


def _written_levels(suite: Suite, axis: Axis) -> list[Any]:
    """The levels of `axis` as the suite writes them (a component, or a stack for a stacked axis); an axis the
    suite leaves out has one level: the training recipe's optimizer, or the clean data."""
    written = getattr(suite.grid, axis.name)
    if written is not None:
        return list(written)
    return [suite.train.optimizer] if axis.name == "optimizer" else [[ComponentSpec(name="none")]]


def _resolve_level(suite: Suite, axis: Axis, level: Any) -> ResolvedComponent | tuple[ResolvedComponent, ...]:
    """One level of `axis` with every parameter resolved; a scenario level follows the dataset's own scenarios."""
    registry = registries()[axis.kind]
    if axis.name == "scenario":
        return _scenario_stack(registry, [*suite.dataset.scenarios(), *level])
    if axis.stacked:
        return tuple(resolve(registry, s) for s in level)
    return resolve(registry, level)


def _scenario_stack(registry: Registry[Any], specs: list[ComponentSpec]) -> tuple[ResolvedComponent, ...]:
    """Resolved scenarios in the order they apply: `none` dropped, selections before relabelling (stable)."""
    resolved = [resolve(registry, s) for s in specs if s.name != "none"]
    return tuple(sorted(resolved, key=lambda c: getattr(registry.get(c.name), "stage", 0)))
