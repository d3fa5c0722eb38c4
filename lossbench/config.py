"""The suite schema (pydantic v2) and the YAML loader that reports errors with file, line and dotted path.

`load_suite(path)` is the one loader `validate` and `run` share: it parses the YAML, validates the structure,
then checks every component name and parameter against its registry and the combinations between them, and
raises one `SuiteErrors` listing everything wrong before anything trains.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, PrivateAttr, Tag,
                      ValidationError, field_validator, model_validator)

from lossbench.errors import ConfigError, Location, LossbenchError, SuiteErrors, did_you_mean
from lossbench.registry import add_import_dir
from lossbench.overrides import parse_override, set_path
from lossbench.schema_messages import plain_message, show_value
from lossbench.suite_yaml import KeyPath, dotted, parse_yaml, read_suite_text

# ---------------------------------------------------------------------------------------------------------------
# Component references: `focal` or `{name: focal, gamma: 2}`; stacks (augmentation, regularizer) may be lists.


class ComponentSpec(BaseModel):
    """A registered component named in a suite, with the parameters the suite sets (defaults filled later)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


def _to_spec(value: Any) -> Any:
    if isinstance(value, ComponentSpec):
        return value
    if isinstance(value, str):
        return {"name": value, "params": {}}
    if isinstance(value, dict):
        if "name" not in value:
            raise ValueError("a component mapping needs a 'name' key, e.g. {name: focal, gamma: 2}")
        if not isinstance(value["name"], str):
            raise ValueError(f"'name' must be a string, got {show_value(value['name'])}")
        odd = [k for k in value if not isinstance(k, str)]
        if odd:
            raise ValueError(
                f"parameter name {show_value(odd[0])} is not a string (YAML reads on/off/yes/no as booleans: "
                "quote the key)"
            )
        return {"name": value["name"], "params": {k: v for k, v in value.items() if k != "name"}}
    raise ValueError(f"expected a component name or a mapping with 'name', got {show_value(value)}")


def _to_stack(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("an empty list; write 'none' for no component")
        return [_to_spec(v) for v in value]
    return [_to_spec(value)]


Component = Annotated[ComponentSpec, BeforeValidator(_to_spec)]
Stack = Annotated[list[ComponentSpec], BeforeValidator(_to_stack)]

# ---------------------------------------------------------------------------------------------------------------
# Bounds. Beyond them a suite is a typo (`epochs: 1e12`) or would exhaust memory before training; README lists them.

MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_EVAL_BATCH_SIZE = 1_048_576
MAX_IMAGE_SIZE = 1_024
#: Cells (grid points × seeds) in one suite; the count is computed from the axis lengths, never by building them.
MAX_CELLS = 100_000
#: Seeds are unsigned 32-bit: what torch, numpy and every other generator accept.
MAX_SEED = 2**32 - 1
#: Most seeds adaptive seeding may run per grid point (`seeds.max`).
MAX_ADAPTIVE_SEEDS = 1000
MAX_SUBSET = 1_000_000_000
MAX_DESCRIPTION = 10_000

# Integers and booleans are strict: YAML's `true` is not the number 1, and `2.5` epochs is not 2.
PositiveInt = Annotated[int, Field(strict=True, gt=0)]
Flag = Annotated[bool, Field(strict=True)]
Fraction = Annotated[float, Field(strict=True, gt=0, le=1)]
Seed = Annotated[int, Field(strict=True, ge=0, le=MAX_SEED)]

# ---------------------------------------------------------------------------------------------------------------
# The schema. Every model forbids unknown keys.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Subset = Annotated[int, Field(strict=True, gt=0, le=MAX_SUBSET)] | Fraction


class DatasetConfig(BaseModel):
    """Which images to train and test on; keys beyond these fields are the source's own parameters
    (e.g. `split` of emnist, `extra` of svhn), checked against the source in `check_components`."""

    model_config = ConfigDict(extra="allow")
    name: str = "cifar10"
    root: str | None = None
    download: Flag = True
    train_subset: Subset | None = None
    test_subset: Subset | None = None
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0, strict=True)
    image_size: Annotated[int, Field(strict=True, gt=0, le=MAX_IMAGE_SIZE)] | None = None
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


class ModelConfig(BaseModel):
    """The network; keys other than `name` are the model's parameters."""

    model_config = ConfigDict(extra="allow")
    name: str = "tutorial_cnn"

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


#: What people type for a device, and the name lossbench uses.
DEVICE_SYNONYMS = {"gpu": "cuda", "nvidia": "cuda", "cuda:0": "cuda", "metal": "mps", "apple": "mps", "cpus": "cpu"}


class CheckpointConfig(_Strict):
    """`train.checkpoint`: what a cell saves of its training (lossbench/checkpoint.py; README "Checkpoints").

    `every` N > 0 saves the whole training state every N epochs, so that a killed run resumes its cells from
    there; 0 saves nothing mid-cell. `keep` is what stays once a cell ends: `final` its final weights, `last` its
    final weights and its whole training state after the last epoch, `none` nothing.
    """

    every: Annotated[int, Field(strict=True, ge=0, le=MAX_EPOCHS)] = 0
    keep: Literal["final", "last", "none"] = "final"


class TrainConfig(_Strict):
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


class GridConfig(_Strict):
    """The axes whose product is the grid; each axis is a non-empty list."""

    loss: list[Component] = Field(min_length=1)
    regularizer: list[Stack] = Field(default_factory=lambda: [[ComponentSpec(name="none")]], min_length=1)
    augmentation: list[Stack] = Field(default_factory=lambda: [[ComponentSpec(name="none")]], min_length=1)
    optimizer: list[Component] | None = Field(None, min_length=1)
    scenario: list[Stack] | None = Field(None, min_length=1)


GRID_AXES = ("loss", "regularizer", "augmentation", "optimizer", "scenario")


class SeedTarget(_Strict):
    """The precision adaptive seeding aims for: the 95% interval of each cell's paired difference from the
    baseline on `metric` no wider than ± `half_width`, in the metric's display unit (percentage points for
    accuracies and ECE, nats for NLL, seconds for times)."""

    metric: str = "test_acc"
    half_width: float = Field(gt=0, allow_inf_nan=False)


class AdaptiveSeeds(_Strict):
    """`seeds: {min, max, target}`: every cell runs seeds 0 … min−1, then cells whose interval is still wider than
    the target get the next seed number, round after round, up to max seeds (lossbench/adaptive_seeds.py).
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


class CorruptionsConfig(_Strict):
    """`evaluate.corruptions`: which corruptions (lossbench/shift/corruptions.py; default all) at which
    severities 1–5 (default all five)."""

    names: list[str] | None = Field(None, min_length=1)
    #: 1–5, checked with the names (lossbench/shift/checks.py) so the message lists the allowed values.
    severities: list[Annotated[int, Field(strict=True)]] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)


class EvaluateConfig(_Strict):
    """`evaluate:` what every trained cell is also scored on: corrupted copies of its test split and
    out-of-distribution inputs (datasets of the registry or generated images; lossbench/shift/)."""

    corruptions: CorruptionsConfig | None = None
    ood: list[Component] = Field(default_factory=list)
MAX_TRIALS = 10_000
def _number(value: Any) -> int | float:
    """A tuning range's end: an integer stays one (a whole-number range), a finite float stays a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = " (YAML reads 1.0e6 as text: write 1.0e+6)" if isinstance(value, str) and "e" in value.lower() else ""
        raise ValueError(f"must be a number, got {show_value(value)}{hint}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    return value


Number = Annotated[Any, BeforeValidator(_number)]


class ParamRange(_Strict):
    """One tuned parameter: a range `{low, high}` (whole numbers when both ends are, else real numbers; `log: true`
    samples uniformly on the log scale) or a list of `choices`."""

    low: Number | None = None
    high: Number | None = None
    log: Flag = False
    choices: list[Any] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_form(self) -> ParamRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give either choices or low/high (with log), not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (e.g. {low: 1.0e-4, high: 1.0, log: true}) or choices: [...]")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got {self.low}")
        return self

    @property
    def is_int(self) -> bool:
        """A whole-number range (both ends written as integers)."""
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)


class TuneConfig(_Strict):
    """`tune:`: every grid cell gets the same number of trials on the validation split, then its best values are
    trained with the suite's seeds and tested (lossbench/tune.py). Metrics: val_acc and val_top5 are maximised,
    val_nll, val_ece and val_loss minimised."""

    trials: Annotated[int, Field(strict=True, gt=0, le=MAX_TRIALS)]
    metric: Literal["val_acc", "val_top5", "val_nll", "val_ece", "val_loss"] = "val_acc"
    sampler: Literal["tpe", "random", "grid", "qmc"] = "tpe"
    pruner: Literal["none", "median", "hyperband"] = "none"
    seed: Seed = 0
    space: dict[str, ParamRange] = Field(min_length=1)


class Suite(_Strict):
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


# ---------------------------------------------------------------------------------------------------------------
# The suite's raw data with where each value came from.


class SuiteSource:
    """A suite's raw YAML data, the file line of each value, and the command-line options that replaced some."""

    def __init__(self, data: dict[str, Any], file: str, positions: dict[KeyPath, tuple[int, int]],
                 problems: list[ConfigError] | None = None):
        self.data = data
        self.file = file
        self.positions = positions
        #: Errors found while reading (duplicate keys, non-finite numbers), reported with the others.
        self.problems: list[ConfigError] = list(problems or [])
        #: Paths set from the command line, and the option as typed (`override 'train.epochs=0'`, `--epochs 0`).
        self.origins: dict[KeyPath, str] = {}

    def locate(self, path: Sequence[Any]) -> Location:
        """The option that set `path` or one of its parents, else the longest prefix of `path` in the file."""
        keys = tuple(path)
        for n in range(len(keys), 0, -1):
            if keys[:n] in self.origins:
                return Location(option=self.origins[keys[:n]], path=dotted(keys) if n < len(keys) else None)
        while keys and keys not in self.positions:
            keys = keys[:-1]
        line, col = self.positions.get(keys, (None, None)) if keys else (None, None)
        return Location(file=self.file, line=line, column=col, path=dotted(tuple(path)) or None)

    def set_from_command_line(self, path: KeyPath, value: Any, option: str) -> None:
        """Replace the value at `path` (creating mappings on the way); errors there will name `option`."""
        created = set_path(self.data, path, value, option)
        self.positions = {k: v for k, v in self.positions.items() if k[:len(path)] != path}
        self.origins = {k: v for k, v in self.origins.items() if k[:len(path)] != path}
        self.origins[path] = option
        for made in created:  # mappings the override created (`grid.loss[0].gamma.x=1` makes `gamma`)
            self.origins.setdefault(made, option)


def read_suite_file(path: str | Path) -> SuiteSource:
    """Read a suite's YAML strictly (see suite_yaml); errors name the file, line and column."""
    p = Path(path)
    doc = parse_yaml(read_suite_text(p), Location(file=str(p)))
    if not isinstance(doc.data, dict):
        raise ConfigError(
            message="a suite must be a YAML mapping with keys name, dataset, model, train, seeds, grid",
            location=Location(file=str(p), line=1),
        )
    return SuiteSource(doc.data, str(p), doc.positions, doc.problems)


# ---------------------------------------------------------------------------------------------------------------
# Structural validation: pydantic errors → ConfigErrors with positions and suggestions.


def _model_at(path: Sequence[Any]) -> type[BaseModel] | None:
    """The schema class that owns the mapping at `path` (for listing allowed keys)."""
    model: type[BaseModel] = Suite
    mapping_key = False
    for key in path:
        if isinstance(key, int) or mapping_key:
            mapping_key = False
            continue
        field = model.model_fields.get(str(key))
        if field is None:
            return None
        ann = field.annotation
        if getattr(ann, "__origin__", None) is dict:  # a mapping of models (tune.space): its keys are the user's
            ann, mapping_key = ann.__args__[1], True
        # Union members may be Annotated (tagged); their __origin__ is the type itself.
        members = [getattr(a, "__origin__", a) for a in getattr(ann, "__args__", (ann,))]
        nested = next((a for a in members if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nested is None:
            return None
        model = nested
    return model


_TYPE_TAGS = {"int", "float", "str", "bool", "list", "dict", "none"}


def _is_type_tag(part: Any) -> bool:
    # pydantic puts union members and validators into locations: 'int', 'constrained-float', 'function-before[..]'.
    text = str(part)
    return not isinstance(part, int) and ("[" in text or text in _TYPE_TAGS or text.startswith("constrained-"))


def _clean_loc(loc: Sequence[Any]) -> list[Any]:
    return [p for p in loc if not _is_type_tag(p)]


def _structural_errors(source: SuiteSource, exc: ValidationError) -> list[ConfigError]:
    errors: list[ConfigError] = []
    seen: set[str] = set()
    for err in exc.errors():
        loc = _clean_loc(err["loc"])
        # Mapping-form components carry their params under 'params' internally; users never write that key.
        loc = [p for p in loc if p != "params"]
        kind = err["type"]
        value = err.get("input")
        allowed: list[str] | None = None
        suggestion = None
        if kind == "extra_forbidden":
            key = loc[-1] if loc else value
            owner = _model_at(loc[:-1])
            allowed = sorted(owner.model_fields) if owner else None
            suggestion = did_you_mean(str(key), allowed or [])
            message = f"unknown key '{key}'"
        elif kind == "literal_error":
            allowed = [s.strip(" '") for s in str(err["ctx"]["expected"]).replace(" or ", ", ").split(",")]
            suggestion = DEVICE_SYNONYMS.get(str(value).lower()) if loc[-1:] == ["device"] else None
            suggestion = suggestion or did_you_mean(str(value), allowed)
            message = f"{show_value(value)} is not allowed"
        elif kind == "missing":
            message = f"missing required key '{loc[-1]}'"
        else:
            message = plain_message(err)
        # A union reports one error per member type (int | fraction); the user needs the first, for that place.
        place = _dotted(loc)
        if place in seen:
            continue
        seen.add(place)
        errors.append(ConfigError(message=message, location=source.locate(loc), value=value, allowed=allowed,
                                  suggestion=suggestion))
    return errors


def _dotted(path: Sequence[Any]) -> str:
    return dotted(tuple(path))


# ---------------------------------------------------------------------------------------------------------------
# Semantic validation on the raw data, so that a structural mistake elsewhere never hides a misspelt component.


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
        plain = _to_spec(value)
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


def _located(source: SuiteSource, exc: LossbenchError, path: tuple[Any, ...]) -> ConfigError:
    """A registry error placed at the component, or at the parameter's own line when the suite wrote it there,
    or at the override that set the component's name (`model.name=torchvision:x`)."""
    if exc.parameter:
        path = path + (exc.parameter,)
    elif path + ("name",) in source.origins:
        path = path + ("name",)
    exc.location = source.locate(path)
    return exc if isinstance(exc, ConfigError) else ConfigError(message=exc.message, location=exc.location)


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
            errors.append(_located(source, exc, ("dataset", "name")))
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
            errors.append(_located(source, exc, ref.path))
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
            errors.append(_located(source, exc, ("dataset", key)))
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


def _check_model_fit(source: SuiteSource, suite: Suite) -> list[ConfigError]:
    """The model can place the dropout every regularizer entry asks for, and, where the dataset's shape is known
    without decoding it, takes its images and gives every loss the output width it needs."""
    from lossbench.components import check_dropout_placement, check_model_shape, model_facts, registries
    from lossbench.errors import ModelFitError
    from lossbench.regularizers import RegularizerSet

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
    from lossbench.data.load import known_image_shape

    dataset = suite.dataset
    try:
        shape = known_image_shape(dataset.name, dataset.root, image_size=dataset.image_size,
                                  source_params=dataset.source_params)
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


def _check_data_memory(source: SuiteSource, suite: Suite) -> list[ConfigError]:
    """The images resized to dataset.image_size fit in memory, where their count is known without reading them."""
    dataset = suite.dataset
    if dataset.image_size is None:
        return []
    from lossbench.data.load import check_resized_memory

    try:
        check_resized_memory(dataset.name, dataset.root, image_size=dataset.image_size,
                             train_subset=dataset.train_subset, test_subset=dataset.test_subset,
                             source_params=dataset.source_params)
    except LossbenchError as exc:
        return [ConfigError(message=exc.message, location=source.locate(["dataset", "image_size"]),
                            value=dataset.image_size, details=exc.details)]
    return []


def _check_seed_target(source: SuiteSource, suite: Suite) -> list[ConfigError]:
    """Adaptive seeding's target metric must be one the report knows and every cell of this suite records."""
    rule = suite.adaptive
    if rule is None:
        return []
    from lossbench.report.measures import MEASURES

    metric = rule.target.metric
    where = source.locate(["seeds", "target", "metric"])
    if metric not in MEASURES:
        return [ConfigError(message=f"unknown metric '{metric}' for the seeds target", location=where, value=metric,
                            allowed=list(MEASURES), suggestion=did_you_mean(metric, list(MEASURES)))]
    from lossbench.embedding_eval import RETRIEVAL_METRICS
    from lossbench.losses import LOSSES

    if metric in RETRIEVAL_METRICS:
        logits = [s.name for s in suite.grid.loss if getattr(LOSSES.get(s.name), "head", "logits") != "embedding"]
        if logits:
            return [ConfigError(
                message=f"the seeds target is {metric}, but {metric} is measured only on embedding heads, and "
                        f"these losses train logits: {', '.join(logits)}", location=where, value=metric,
                details=["aim at test_acc (every head records it), or grid only embedding losses "
                         "(lossbench list losses)"])]
    if metric == "val_acc" and suite.dataset.val_fraction == 0:
        return [ConfigError(message="the seeds target is val_acc, but dataset.val_fraction is 0: no cell measures "
                                    "a validation accuracy", location=where, value=metric,
                            details=["set dataset.val_fraction (e.g. 0.1) or aim at test_acc"])]
    from lossbench.shift.checks import shift_metric_error

    unmeasured = shift_metric_error(metric, suite, where)
    return [unmeasured] if unmeasured else []


def _check_checkpoint(source: SuiteSource, suite: Suite) -> list[ConfigError]:
    """A training state is one cell's; a pack trains several cells as one model, so packs save no training state
    (`every` > 0 or `keep: last`); their final weights are saved per cell all the same."""
    train = suite.train
    checkpoint = train.checkpoint
    if train.pack == 1 or (checkpoint.every == 0 and checkpoint.keep != "last"):
        return []
    key = "every" if checkpoint.every > 0 else "keep"
    value = checkpoint.every if key == "every" else checkpoint.keep
    return [ConfigError(
        message=f"train.checkpoint.{key} {value} saves each cell's training state, which packed cells (train.pack "
                f"{train.pack}) do not do",
        location=source.locate(["train", "checkpoint", key]), value=value,
        details=["set train.checkpoint to {every: 0, keep: final} (final weights are still saved per cell), or "
                 "train.pack (--pack) to 1"])]


def _grid_size_error(source: SuiteSource) -> ConfigError | None:
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


# ---------------------------------------------------------------------------------------------------------------
# The one loader.


def parse_suite(source: SuiteSource) -> Suite:
    """Structure, components, parameters and combinations of a suite; raises SuiteErrors listing every problem."""
    errors = list(source.problems)
    too_big = _grid_size_error(source)
    if too_big is not None:
        raise SuiteErrors([*errors, too_big])
    suite: Suite | None = None
    try:
        suite = Suite.model_validate(source.data)
    except ValidationError as exc:
        errors.extend(_structural_errors(source, exc))
    component_errors = check_components(source)
    errors.extend(component_errors)
    if suite is not None and not errors:
        errors.extend(_check_model_fit(source, suite))
        errors.extend(_check_data_memory(source, suite))
    if suite is not None:
        errors.extend(_check_seed_target(source, suite))
        errors.extend(_check_checkpoint(source, suite))
    if suite is not None and suite.evaluate is not None:
        from lossbench.shift.checks import check_evaluate

        errors.extend(check_evaluate(source, suite))
    tuned = suite if suite is not None else _suite_without_bad_ranges(source)
    if tuned is not None and tuned.tune is not None and not component_errors:
        from lossbench.tuning_space import check_tune

        errors.extend(check_tune(source, tuned))
    if errors or suite is None:
        raise SuiteErrors(_in_file_order(errors))
    suite._source = source
    return suite


def _suite_without_bad_ranges(source: SuiteSource) -> Suite | None:
    """The suite with the malformed ranges of tune.space left out, so that the other paths are still checked in
    the same pass; None when anything else is malformed too."""
    tune = source.data.get("tune")
    if not isinstance(tune, dict) or not isinstance(tune.get("space"), dict):
        return None
    space = {}
    for path, value in tune["space"].items():
        try:
            space[path] = ParamRange.model_validate(value)
        except ValidationError:
            continue
    try:
        return Suite.model_validate({**source.data, "tune": {**tune, "space": space}})
    except ValidationError:
        return None


def _in_file_order(errors: list[ConfigError]) -> list[ConfigError]:
    """Errors sorted as a reader meets them: command-line options first, then by line and column."""
    def key(e: ConfigError) -> tuple[int, int, int]:
        loc = e.location
        if loc is None or loc.option:
            return (0, 0, 0)
        return (1, loc.line or 0, loc.column or 0)

    return sorted(errors, key=key)


def load_suite(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    epochs: int | None = None,
    seeds: list[int] | None = None,
    device: str | None = None,
    data_root: str | None = None,
    threads: int | str | None = None,
    pack: int | None = None,
) -> Suite:
    """Read a suite file, apply command-line overrides (`train.epochs=2`) and options, and validate the result.

    A value set from the command line is validated like the file's, and its errors name the override or option
    (`override 'train.epochs=0'`, `--device gpu`) instead of a line of the file.
    """
    source = read_suite_file(path)
    # Custom components may live beside the suite, as modules beside a script do.
    add_import_dir(Path(path).parent)
    parsed = [parse_override(text) for text in overrides]
    for override in parsed:
        source.problems.extend(override.problems)
        source.set_from_command_line(override.path, override.value, override.label)
    if epochs is not None:
        source.set_from_command_line(("train", "epochs"), epochs, f"--epochs {epochs}")
    if seeds is not None:
        source.set_from_command_line(("seeds",), seeds, f"--seeds {','.join(str(s) for s in seeds)}")
    if device is not None:
        source.set_from_command_line(("train", "device"), device, f"--device {device}")
    if data_root is not None:
        source.set_from_command_line(("dataset", "root"), data_root, f"--data-root {data_root}")
    if threads is not None:
        source.set_from_command_line(("train", "threads"), threads, f"--threads {threads}")
    if pack is not None:
        source.set_from_command_line(("train", "pack"), pack, f"--pack {pack}")
    data = source.data
    if isinstance(data.get("dataset"), dict) and isinstance(data["dataset"].get("root"), str):
        # A relative data root in the file is relative to the suite file, so a suite works from any directory;
        # one given on the command line is relative to where the command runs.
        root = Path(data["dataset"]["root"]).expanduser()
        if not root.is_absolute() and ("dataset", "root") not in source.origins:
            root = (Path(path).parent / root)
        data["dataset"]["root"] = str(root)
    return parse_suite(source)


def suite_to_yaml(suite: Suite) -> str:
    """The resolved suite as YAML (what `results/<suite>/suite.yaml` holds), headed by the command-line overrides
    and options that changed the file's values (the values below already include them)."""
    header = "".join(f"# from the command line: {option}\n" for option in suite.overrides)
    return header + yaml.safe_dump(suite_to_plain(suite), sort_keys=False)


def spec_to_plain(spec: ComponentSpec) -> dict[str, Any] | str:
    return {"name": spec.name, **spec.params} if spec.params else spec.name


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
