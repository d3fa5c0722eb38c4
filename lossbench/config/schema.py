"""The suite schema (pydantic v2): every section of a suite file as a model, and the resolved suite as YAML."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, field_validator, model_validator

from lossbench.config.dataset import DatasetConfig
from lossbench.config.fields import (
    MAX_ADAPTIVE_SEEDS,
    MAX_BATCH_SIZE,
    MAX_DESCRIPTION,
    MAX_EPOCHS,
    MAX_EVAL_BATCH_SIZE,
    Component,
    ComponentSpec,
    Flag,
    Seed,
    Stack,
    StrictModel,
    spec_to_plain,
)
from lossbench.config.source import SuiteSource
from lossbench.config.tune_schema import TuneConfig
from lossbench.errors import Location
from lossbench.schema_messages import show_value
from lossbench.suite_yaml import dotted

# ---------------------------------------------------------------------------------------------------------------
# The schema. Every model forbids unknown keys.


class ModelConfig(BaseModel):
    """The network; keys other than `name` are the model's parameters."""

    model_config = ConfigDict(extra="allow")
    name: str = "tutorial_cnn"

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


#: What people type for a device, and the name lossbench uses.
DEVICE_SYNONYMS = {"gpu": "cuda", "nvidia": "cuda", "cuda:0": "cuda", "metal": "mps", "apple": "mps", "cpus": "cpu"}


class CheckpointConfig(StrictModel):
    """`train.checkpoint`: what a cell saves of its training (lossbench/checkpoint.py; README "Checkpoints").

    `every` N > 0 saves the whole training state every N epochs, so that a killed run resumes its cells from
    there; 0 saves nothing mid-cell. `keep` is what stays once a cell ends: `final` its final weights, `last` its
    final weights and its whole training state after the last epoch, `none` nothing.
    """

    every: Annotated[int, Field(strict=True, ge=0, le=MAX_EPOCHS)] = 0
    keep: Literal["final", "last", "none"] = "final"


class TrainConfig(StrictModel):
    """How each cell trains."""

    epochs: Annotated[int, Field(strict=True, gt=0, le=MAX_EPOCHS)] = 15
    batch_size: Annotated[int, Field(strict=True, gt=0, le=MAX_BATCH_SIZE)] = 128
    eval_batch_size: Annotated[int, Field(strict=True, gt=0, le=MAX_EVAL_BATCH_SIZE)] = 2048
    optimizer: Component = ComponentSpec(name="sgd", params={"lr": 0.01, "momentum": 0.9})
    schedule: Component = ComponentSpec(name="constant")
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    #: torch.compile the model (how a cell trains, not what it is: cell ids do not include it).
    compile: Flag = False
    #: torch threads per cell on the CPU: `auto` (one per core that other processes leave idle, chosen before
    #: each cell; lossbench/threads.py) or a whole number. How a cell trains, not what it is: not in cell ids.
    threads: Annotated[int, Field(strict=True, gt=0, le=1024)] | Literal["auto"] = "auto"
    #: Cells that share a model trained together as one batched model (1: one at a time; docs/performance.md).
    #: How cells train, not what they are: not in cell ids.
    pack: Annotated[int, Field(strict=True, gt=0, le=1024)] = 1
    #: What each cell saves (how a cell trains, not what it is: not in cell ids).
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    #: Evaluate on the test split every N epochs, and always after the last one (1: every epoch). Evaluation takes
    #: no part in training, so this changes the curves' points and the time, not the result: not in cell ids.
    eval_every: Annotated[int, Field(strict=True, gt=0, le=MAX_EPOCHS)] = 1


class GridConfig(StrictModel):
    """The axes whose product is the grid; each axis is a non-empty list."""

    loss: list[Component] = Field(min_length=1)
    regularizer: list[Stack] = Field(default_factory=lambda: [[ComponentSpec(name="none")]], min_length=1)
    augmentation: list[Stack] = Field(default_factory=lambda: [[ComponentSpec(name="none")]], min_length=1)
    optimizer: list[Component] | None = Field(None, min_length=1)
    scenario: list[Stack] | None = Field(None, min_length=1)



class SeedTarget(StrictModel):
    """The precision adaptive seeding aims for: the 95% interval of each cell's paired difference from the
    baseline on `metric` no wider than ± `half_width`, in the metric's display unit (percentage points for
    accuracies and ECE, nats for NLL, seconds for times)."""

    metric: str = "test_acc"
    half_width: float = Field(gt=0, allow_inf_nan=False)


class AdaptiveSeeds(StrictModel):
    """`seeds: {min, max, target}`: every cell runs seeds 0 … min−1, then cells whose interval is still wider than
    the target get the next seed number, round after round, up to max seeds (lossbench/analysis/adaptive_seeds.py).
    `baseline` names the cell every other is compared with (default: the report's, `cross_entropy | none | none`
    of each combination of the other axes)."""

    min: int = Field(3, strict=True, ge=2, le=MAX_ADAPTIVE_SEEDS)
    max: int = Field(10, strict=True, ge=2, le=MAX_ADAPTIVE_SEEDS)
    target: SeedTarget
    baseline: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> AdaptiveSeeds:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min}): a cell cannot run fewer seeds than min")
        return self


class CorruptionsConfig(StrictModel):
    """`evaluate.corruptions`: which corruptions (lossbench/shift/corruptions.py; default all) at which
    severities 1–5 (default all five)."""

    names: list[str] | None = Field(None, min_length=1)
    #: 1–5, checked with the names (lossbench/shift/checks.py) so the message lists the allowed values.
    severities: list[Annotated[int, Field(strict=True)]] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)


class EvaluateConfig(StrictModel):
    """`evaluate:` what every trained cell is also scored on: corrupted copies of its test split and
    out-of-distribution inputs (datasets of the registry or generated images; lossbench/shift/)."""

    corruptions: CorruptionsConfig | None = None
    ood: list[Component] = Field(default_factory=list)


class Suite(StrictModel):
    """A whole benchmark: data, model, training recipe, seeds and the grid."""

    name: str = Field(max_length=100)
    description: str = Field("", max_length=MAX_DESCRIPTION)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    # A mapping is the adaptive form, anything else the plain list; the tags keep errors to the form written.
    seeds: Annotated[
        Annotated[list[Seed], Field(min_length=1), Tag("list")] | Annotated[AdaptiveSeeds, Tag("dict")],
        Discriminator(lambda v: "dict" if isinstance(v, (dict, AdaptiveSeeds)) else "list"),
    ] = Field(default_factory=lambda: [0])
    grid: GridConfig
    #: Evaluation under shift and out of distribution after training (not part of what a cell is: no cell id).
    evaluate: EvaluateConfig | None = None
    tune: TuneConfig | None = None
    # Where each value came from (file line or command-line option), so later checks can point at it.
    _source: SuiteSource | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"{show_value(name)} is not a usable name: it names the results folder, so it is "
                             "letters, digits, _ . and -, starting with a letter or digit")
        return name

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int] | AdaptiveSeeds) -> list[int] | AdaptiveSeeds:
        if isinstance(seeds, AdaptiveSeeds):
            return seeds
        repeated = sorted({s for s in seeds if seeds.count(s) > 1}) if len(set(seeds)) != len(seeds) else []
        if repeated:
            raise ValueError(f"seed {repeated[0]} appears more than once; every seed is listed once")
        return seeds

    def __eq__(self, other: object) -> bool:
        # Two suites are equal when they say the same thing, wherever each was read from.
        return isinstance(other, Suite) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]

    @property
    def adaptive(self) -> AdaptiveSeeds | None:
        """The adaptive-seeding rule, when `seeds` is one (None for a plain list)."""
        return self.seeds if isinstance(self.seeds, AdaptiveSeeds) else None

    @property
    def seed_list(self) -> list[int]:
        """Every seed a cell may run: the list, or 0 … max−1 under adaptive seeding."""
        return list(range(self.seeds.max)) if isinstance(self.seeds, AdaptiveSeeds) else list(self.seeds)

    def locate(self, path: Sequence[Any]) -> Location:
        """Where the value at `path` came from: its file line, or the command-line option that set it."""
        return self._source.locate(path) if self._source else Location(path=dotted(tuple(path)) or None)

    @property
    def overrides(self) -> list[str]:
        """The command-line overrides and options applied to the file, as typed (`train.epochs=2`, `--epochs 2`)."""
        return list(dict.fromkeys(self._source.origins.values())) if self._source else []


def suite_to_yaml(suite: Suite) -> str:
    """The resolved suite as YAML (what `results/<suite>/suite.yaml` holds), headed by the command-line overrides
    and options that changed the file's values (the values below already include them)."""
    header = "".join(f"# from the command line: {option}\n" for option in suite.overrides)
    return header + yaml.safe_dump(suite_to_plain(suite), sort_keys=False)


def suite_to_plain(suite: Suite) -> dict[str, Any]:
    def stack(s: list[ComponentSpec]) -> Any:
        return spec_to_plain(s[0]) if len(s) == 1 else [spec_to_plain(x) for x in s]

    grid: dict[str, Any] = {
        "loss": [spec_to_plain(s) for s in suite.grid.loss],
        "regularizer": [stack(s) for s in suite.grid.regularizer],
        "augmentation": [stack(s) for s in suite.grid.augmentation],
    }
    if suite.grid.optimizer:
        grid["optimizer"] = [spec_to_plain(s) for s in suite.grid.optimizer]
    if suite.grid.scenario:
        grid["scenario"] = [stack(s) for s in suite.grid.scenario]
    train = suite.train.model_dump()
    train["optimizer"] = spec_to_plain(suite.train.optimizer)
    train["schedule"] = spec_to_plain(suite.train.schedule)
    plain = {
        "name": suite.name,
        "description": suite.description,
        "dataset": suite.dataset.model_dump(),
        "model": {"name": suite.model.name, **suite.model.params},
        "train": train,
        "seeds": suite.seeds.model_dump() if isinstance(suite.seeds, AdaptiveSeeds) else list(suite.seeds),
        "grid": grid,
    }
    if suite.evaluate is not None:
        plain["evaluate"] = {"corruptions": suite.evaluate.corruptions.model_dump()
                             if suite.evaluate.corruptions else None,
                             "ood": [spec_to_plain(s) for s in suite.evaluate.ood]}
    if suite.tune is not None:
        plain["tune"] = {**suite.tune.model_dump(exclude={"space"}),
                         "space": {path: r.model_dump(exclude_none=True) for path, r in suite.tune.space.items()}}
    return plain
