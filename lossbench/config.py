"""The suite schema (pydantic v2) and the YAML loader that reports errors with file, line and dotted path.

`load_suite(path)` is the one loader `validate` and `run` share: it parses the YAML, validates the structure,
then checks every component name and parameter against its registry and the combinations between them, and
raises one `SuiteErrors` listing everything wrong before anything trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from lossbench.errors import ConfigError, Location, LossbenchError, SuiteErrors, did_you_mean
from lossbench.registry import add_import_dir

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
            raise ValueError(f"'name' must be a string, got {value['name']!r}")
        odd = [k for k in value if not isinstance(k, str)]
        if odd:
            raise ValueError(
                f"parameter name {odd[0]!r} is not a string (YAML reads on/off/yes/no as booleans: quote the key)"
            )
        return {"name": value["name"], "params": {k: v for k, v in value.items() if k != "name"}}
    raise ValueError(f"expected a component name or a mapping with 'name', got {value!r}")


def _to_stack(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("an empty list; write 'none' for no component")
        return [_to_spec(v) for v in value]
    return [_to_spec(value)]


Component = Annotated[ComponentSpec, BeforeValidator(_to_spec)]
Stack = Annotated[list[ComponentSpec], BeforeValidator(_to_stack)]

# ---------------------------------------------------------------------------------------------------------------
# The schema. Every model forbids unknown keys.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Subset = Annotated[int, Field(gt=0)] | Annotated[float, Field(gt=0, le=1)]


class DatasetConfig(BaseModel):
    """Which images to train and test on; keys beyond these fields are the source's own parameters
    (e.g. `split` of emnist, `extra` of svhn), checked against the source in `check_components`."""

    model_config = ConfigDict(extra="allow")
    name: str = "cifar10"
    root: str | None = None
    download: bool = True
    train_subset: Subset | None = None
    test_subset: Subset | None = None
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    image_size: Annotated[int, Field(gt=0)] | None = None
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


class TrainConfig(_Strict):
    """How each cell trains."""

    epochs: int = Field(15, gt=0)
    batch_size: int = Field(128, gt=0)
    eval_batch_size: int = Field(2048, gt=0)
    optimizer: Component = ComponentSpec(name="sgd", params={"lr": 0.01, "momentum": 0.9})
    schedule: Component = ComponentSpec(name="constant")
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    #: torch.compile the model (how a cell trains, not what it is: cell ids do not include it).
    compile: bool = False


class GridConfig(_Strict):
    """The axes whose product is the grid; each axis is a non-empty list."""

    loss: list[Component] = Field(min_length=1)
    regularizer: list[Stack] = Field(default_factory=lambda: [[ComponentSpec(name="none")]], min_length=1)
    augmentation: list[Stack] = Field(default_factory=lambda: [[ComponentSpec(name="none")]], min_length=1)
    optimizer: list[Component] | None = Field(None, min_length=1)
    scenario: list[Stack] | None = Field(None, min_length=1)


class Suite(_Strict):
    """A whole benchmark: data, model, training recipe, seeds and the grid."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = ""
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    grid: GridConfig

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat: {seeds}")
        return seeds


# ---------------------------------------------------------------------------------------------------------------
# YAML with positions.


def _positions(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], tuple[int, int]]) -> None:
    """Record the 1-based (line, column) of every value and key in the YAML tree, by dotted path."""
    out.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _positions(value_node, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _positions(item, path + (i,), out)


class SuiteSource:
    """A suite's raw YAML data together with where each value came from."""

    def __init__(self, data: dict[str, Any], file: str, positions: dict[tuple[Any, ...], tuple[int, int]]):
        self.data = data
        self.file = file
        self.positions = positions

    def locate(self, path: Sequence[Any]) -> Location:
        """The position of the longest prefix of `path` present in the file (overrides have none)."""
        keys = tuple(path)
        while keys and keys not in self.positions:
            keys = keys[:-1]
        line, col = self.positions.get(keys, (None, None)) if keys else (None, None)
        return Location(file=self.file, line=line, column=col, path=_dotted(path) or None)


def _dotted(path: Sequence[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def read_suite_file(path: str | Path) -> SuiteSource:
    """Read a suite's YAML; errors name the file, and the line and column of bad syntax."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(message=f"suite file not found: {p}", location=Location(file=str(p)))
    if p.is_dir():
        raise ConfigError(message=f"{p} is a directory, not a suite file", location=Location(file=str(p)))
    text = p.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise ConfigError(
            message=f"invalid YAML: {exc.problem or exc}",
            location=Location(file=str(p), line=mark.line + 1 if mark else None, column=mark.column + 1 if mark else None),
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(message=f"invalid YAML: {exc}", location=Location(file=str(p))) from None
    if not isinstance(data, dict):
        raise ConfigError(
            message="a suite must be a YAML mapping with keys name, dataset, model, train, seeds, grid",
            location=Location(file=str(p), line=1),
        )
    positions: dict[tuple[Any, ...], tuple[int, int]] = {}
    if node is not None:
        _positions(node, (), positions)
    return SuiteSource(data, str(p), positions)


# ---------------------------------------------------------------------------------------------------------------
# Structural validation: pydantic errors → ConfigErrors with positions and suggestions.


def _model_at(path: Sequence[Any]) -> type[BaseModel] | None:
    """The schema class that owns the mapping at `path` (for listing allowed keys)."""
    model: type[BaseModel] = Suite
    for key in path:
        if isinstance(key, int):
            continue
        field = model.model_fields.get(str(key))
        if field is None:
            return None
        ann = field.annotation
        nested = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)),
                      None)
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
    seen: set[tuple[str, str]] = set()
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
            suggestion = did_you_mean(str(value), allowed)
            message = f"{value!r} is not allowed"
        elif kind == "missing":
            message = f"missing required key '{loc[-1]}'"
        else:
            message = f"{err['msg']} (got {value!r})" if "input" in err and not isinstance(value, dict) else err["msg"]
        # A union reports one error per member type; the user needs the first one for that place.
        key = (_dotted(loc), "" if any(_is_type_tag(p) for p in err["loc"]) else message)
        if key in seen:
            continue
        seen.add(key)
        errors.append(ConfigError(message=message, location=source.locate(loc), value=value, allowed=allowed,
                                  suggestion=suggestion))
    return errors


# ---------------------------------------------------------------------------------------------------------------
# Semantic validation: names and parameters against the registries, and combinations.


def _check_component(source: SuiteSource, registry: Any, spec: ComponentSpec, path: list[Any],
                     errors: list[ConfigError], build: bool = True) -> None:
    try:
        if build:
            registry.check(spec.name, spec.params)
        else:
            registry.resolve_params(spec.name, spec.params)
    except LossbenchError as exc:
        exc.location = source.locate(path)
        errors.append(exc)  # type: ignore[arg-type]


def check_components(source: SuiteSource, suite: Suite) -> list[ConfigError]:
    """Every name registered, every parameter valid, every combination trainable."""
    from lossbench.augment import AUGMENTATIONS
    from lossbench.data import DATASETS
    from lossbench.data.scenarios import SCENARIOS
    from lossbench.losses import LOSSES
    from lossbench.models import MODELS
    from lossbench.optim import OPTIMIZERS, SCHEDULES
    from lossbench.regularizers import REGULARIZERS

    errors: list[ConfigError] = []
    try:
        DATASETS.get(suite.dataset.name)
    except LossbenchError as exc:
        exc.location = source.locate(["dataset", "name"])
        errors.append(exc)  # type: ignore[arg-type]
    else:
        errors.extend(_check_source_params(source, suite.dataset))
    if suite.dataset.root is not None and not Path(suite.dataset.root).exists():
        errors.append(ConfigError(
            message=f"dataset root {suite.dataset.root} does not exist",
            location=source.locate(["dataset", "root"]),
            value=suite.dataset.root,
            details=["point --data-root / dataset.root at a local copy (torchvision's files, or a folder or "
                     ".tar.gz/.zip archive with train/ and test/), or leave it unset to download into the cache"],
        ))
    _check_component(source, MODELS, ComponentSpec(name=suite.model.name, params=suite.model.params), ["model"],
                     errors, build=False)
    _check_component(source, OPTIMIZERS, suite.train.optimizer, ["train", "optimizer"], errors)
    _check_component(source, SCHEDULES, suite.train.schedule, ["train", "schedule"], errors)
    for i, spec in enumerate(suite.grid.loss):
        _check_component(source, LOSSES, spec, ["grid", "loss", i], errors)
    for i, stack in enumerate(suite.grid.regularizer):
        for j, spec in enumerate(stack):
            _check_component(source, REGULARIZERS, spec, ["grid", "regularizer", i, j] if len(stack) > 1
                             else ["grid", "regularizer", i], errors)
    for i, stack in enumerate(suite.grid.augmentation):
        for j, spec in enumerate(stack):
            _check_component(source, AUGMENTATIONS, spec, ["grid", "augmentation", i, j] if len(stack) > 1
                             else ["grid", "augmentation", i], errors)
    for i, spec in enumerate(suite.grid.optimizer or []):
        _check_component(source, OPTIMIZERS, spec, ["grid", "optimizer", i], errors)
    for spec in suite.dataset.scenarios():
        _check_component(source, SCENARIOS, spec, ["dataset", spec.name], errors)
    for i, stack in enumerate(suite.grid.scenario or []):
        for j, spec in enumerate(stack):
            _check_component(source, SCENARIOS, spec, ["grid", "scenario", i, j] if len(stack) > 1
                             else ["grid", "scenario", i], errors)
    if not errors:
        errors.extend(_check_combinations(source, suite))
    return errors


def _check_source_params(source: SuiteSource, dataset: DatasetConfig) -> list[ConfigError]:
    """Keys of `dataset:` beyond DatasetConfig's fields must be parameters of the named source, with valid values."""
    from lossbench.data import DATASETS

    params = dataset.source_params
    if not params:
        return []
    own = {p.name for p in DATASETS.params(dataset.name)} - set(DatasetConfig.model_fields)
    allowed = sorted(set(DatasetConfig.model_fields) | own)
    errors: list[ConfigError] = []
    for key, value in params.items():
        if key not in own:
            errors.append(ConfigError(message=f"unknown key '{key}'", location=source.locate(["dataset", key]),
                                      value=key, allowed=allowed, suggestion=did_you_mean(str(key), allowed)))
            continue
        try:
            DATASETS.resolve_params(dataset.name, {key: value})
        except LossbenchError as exc:
            exc.location = source.locate(["dataset", key])
            errors.append(exc)  # type: ignore[arg-type]
    if errors:
        return errors
    try:
        resolved = DATASETS.resolve_params(dataset.name, params)
        DATASETS.get(dataset.name)(**{k: v for k, v in resolved.items() if k in own})
    except (ValueError, TypeError) as exc:
        return [ConfigError(message=f"dataset '{dataset.name}': {exc}", location=source.locate(["dataset"]),
                            value=params)]
    return []


def _check_combinations(source: SuiteSource, suite: Suite) -> list[ConfigError]:
    """Losses defined on hard labels cannot train with label-mixing augmentations (mixup, cutmix)."""
    from lossbench.augment import AUGMENTATIONS
    from lossbench.losses import LOSSES

    errors = []
    mixing = [
        (i, "+".join(s.name for s in stack))
        for i, stack in enumerate(suite.grid.augmentation)
        if any(AUGMENTATIONS.get(s.name).soft_targets for s in stack)
    ]
    for li, loss in enumerate(suite.grid.loss):
        cls = LOSSES.get(loss.name)
        if mixing and not cls.soft_targets:
            names = ", ".join(n for _, n in mixing)
            errors.append(ConfigError(
                message=f"loss '{loss.name}' takes hard labels only and cannot train with label-mixing "
                        f"augmentation ({names})",
                location=source.locate(["grid", "loss", li]),
                details=["remove the loss or those augmentations, or split them into two suites"],
            ))
    return errors


# ---------------------------------------------------------------------------------------------------------------
# The one loader.


def parse_suite(source: SuiteSource) -> Suite:
    """Structure and components of a suite's raw data; raises SuiteErrors listing every problem."""
    try:
        suite = Suite.model_validate(source.data)
    except ValidationError as exc:
        raise SuiteErrors(_structural_errors(source, exc)) from None
    errors = check_components(source, suite)
    if errors:
        raise SuiteErrors(errors)
    return suite


def load_suite(
    path: str | Path,
    *,
    epochs: int | None = None,
    seeds: list[int] | None = None,
    device: str | None = None,
    data_root: str | None = None,
) -> Suite:
    """Read, override and validate a suite file. Overrides come from the command line and are validated too."""
    source = read_suite_file(path)
    # Custom components may live beside the suite, as modules beside a script do.
    add_import_dir(Path(path).parent)
    data = source.data
    if epochs is not None:
        data.setdefault("train", {})["epochs"] = epochs
    if seeds is not None:
        data["seeds"] = seeds
    if device is not None:
        data.setdefault("train", {})["device"] = device
    if data_root is not None:
        data.setdefault("dataset", {})["root"] = data_root
    if isinstance(data.get("dataset"), dict) and isinstance(data["dataset"].get("root"), str):
        # A relative data root is relative to the suite file, so a suite works from any directory.
        root = Path(data["dataset"]["root"]).expanduser()
        if not root.is_absolute() and data_root is None:
            root = (Path(path).parent / root)
        data["dataset"]["root"] = str(root)
    return parse_suite(source)


def suite_to_yaml(suite: Suite) -> str:
    """The resolved suite as YAML (what `results/<suite>/suite.yaml` holds)."""
    return yaml.safe_dump(suite_to_plain(suite), sort_keys=False)


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
    return {
        "name": suite.name,
        "description": suite.description,
        "dataset": suite.dataset.model_dump(),
        "model": {"name": suite.model.name, **suite.model.params},
        "train": train,
        "seeds": list(suite.seeds),
        "grid": grid,
    }
