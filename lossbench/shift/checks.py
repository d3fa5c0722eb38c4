"""Semantic checks of a suite's `evaluate:` block (called by config.parse_suite): names with did-you-mean,
repeated entries, OOD sources that can stand beside the training data, and what the rest of the suite allows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lossbench.errors import ConfigError, Location, did_you_mean

if TYPE_CHECKING:
    from lossbench.config.schema import Suite
    from lossbench.config.source import SuiteSource

#: Keys an OOD dataset entry may set besides its name.
OOD_DATASET_KEYS = ("root", "download")


def check_evaluate(source: SuiteSource, suite: Suite) -> list[ConfigError]:
    """Every problem of `suite.evaluate`, each located at its file line (or option) and dotted path."""
    from lossbench.shift.corruptions import CORRUPTIONS
    from lossbench.shift.ood import GENERATED

    block = suite.evaluate
    assert block is not None
    errors: list[ConfigError] = []
    where = source.locate
    if block.corruptions is None and not block.ood:
        errors.append(ConfigError(message="evaluate: names neither corruptions nor ood sources",
                                  location=where(["evaluate"]),
                                  details=["e.g. evaluate: {corruptions: {names: [gaussian_noise]}, "
                                           "ood: [uniform_noise]}"]))
    if block.corruptions is not None:
        known = list(CORRUPTIONS)
        for i, name in enumerate(block.corruptions.names or []):
            path = ["evaluate", "corruptions", "names", i]
            if name not in CORRUPTIONS:
                errors.append(ConfigError(message=f"unknown corruption '{name}'", location=where(path), value=name,
                                          allowed=known, suggestion=did_you_mean(name, known)))
            elif (block.corruptions.names or []).index(name) != i:
                errors.append(ConfigError(message=f"corruption '{name}' is listed twice", location=where(path),
                                          value=name))
        severities = block.corruptions.severities
        for i, severity in enumerate(severities):
            if not 1 <= severity <= 5:
                errors.append(ConfigError(message=f"severity {severity} does not exist",
                                          location=where(["evaluate", "corruptions", "severities", i]),
                                          value=severity, allowed=["1", "2", "3", "4", "5"],
                                          details=["Hendrycks & Dietterich define five severities, 1 (mild) to 5"]))
            elif severities.index(severity) != i:
                errors.append(ConfigError(message=f"severity {severity} is listed twice",
                                          location=where(["evaluate", "corruptions", "severities", i]),
                                          value=severity))
    errors.extend(_check_ood(source, suite, list(GENERATED)))
    if suite.train.pack > 1:
        errors.append(ConfigError(message=f"train.pack {suite.train.pack} trains cells as one batched model, "
                                          "which evaluate: does not score",
                                  location=where(["train", "pack"]), value=suite.train.pack,
                                  details=["set train.pack: 1, or score the checkpoints later with "
                                           "`lossbench evaluate`"]))
    errors.extend(_check_heads(source, suite))
    return errors


def _check_ood(source: SuiteSource, suite: Suite, generated: list[str]) -> list[ConfigError]:
    from lossbench.data import DATASETS

    block = suite.evaluate
    assert block is not None
    datasets = [d.name for d in DATASETS.describe()]
    known = generated + datasets
    errors: list[ConfigError] = []
    seen: dict[str, int] = {}
    for i, spec in enumerate(block.ood):
        path: list[Any] = ["evaluate", "ood", i]
        name, params = spec.name, spec.params
        if name not in known:
            errors.append(ConfigError(message=f"unknown OOD source '{name}'", location=source.locate(path),
                                      value=name, allowed=known, suggestion=did_you_mean(name, known),
                                      details=["an OOD source is a dataset of `lossbench list datasets` or a "
                                               f"generated input ({', '.join(generated)})"]))
            continue
        allowed = [] if name in generated else list(OOD_DATASET_KEYS)
        for key, value in params.items():
            if key not in allowed:
                errors.append(ConfigError(
                    message=f"OOD source '{name}' takes no parameter '{key}'", location=source.locate([*path, key]),
                    value=key, allowed=allowed or None, suggestion=did_you_mean(str(key), allowed)))
            elif key == "root" and not isinstance(value, str):
                errors.append(ConfigError(message=f"root must be a path, got {value!r}",
                                          location=source.locate([*path, key]), value=value))
            elif key == "download" and not isinstance(value, bool):
                errors.append(ConfigError(message=f"download must be true or false, got {value!r}",
                                          location=source.locate([*path, key]), value=value))
        if name == suite.dataset.name and params.get("root") == suite.dataset.root:
            errors.append(ConfigError(
                message=f"OOD source '{name}' is the training dataset itself: its images are in distribution",
                location=source.locate(path), value=name,
                details=["name a dataset of other classes (e.g. svhn or cifar100 beside cifar10), or "
                         "uniform_noise"]))
        key = f"{name}|{params.get('root')}"
        if key in seen:
            errors.append(ConfigError(message=f"OOD source '{name}' is listed twice (also at evaluate.ood[{seen[key]}])",
                                      location=source.locate(path), value=name))
        seen.setdefault(key, i)
    return errors


def _check_heads(source: SuiteSource, suite: Suite) -> list[ConfigError]:
    """Corruption NLL/ECE and both OOD scores read class probabilities: embedding heads (k-NN) have none."""
    from lossbench.registries import registries

    errors = []
    for i, spec in enumerate(suite.grid.loss):
        if getattr(registries()["losses"].get(spec.name), "head", "logits") == "embedding":
            errors.append(ConfigError(
                message=f"loss '{spec.name}' has an embedding head; evaluate: scores class probabilities "
                        "(softmax of logits) and cannot score it",
                location=source.locate(["grid", "loss", i]), value=spec.name,
                details=["move embedding losses to a suite without evaluate:"]))
    return errors


def check_ood_data(suite: Suite) -> None:
    """Raise DataError, located at its `evaluate.ood` entry, for an OOD dataset whose root is unusable (what a
    dataset's identity checks without decoding it); called where the training data's identity is checked."""
    from lossbench.config.dataset import DatasetConfig
    from lossbench.data import dataset_identity
    from lossbench.errors import DataError
    from lossbench.shift.ood import GENERATED

    for i, spec in enumerate(suite.evaluate.ood if suite.evaluate else []):
        if spec.name in GENERATED:
            continue
        try:
            dataset_identity(DatasetConfig(name=spec.name, root=spec.params.get("root")))
        except DataError as exc:
            exc.location = suite.locate(["evaluate", "ood", i])
            exc.message = f"OOD source '{spec.name}': {exc.message}"
            # The data root options of the suite are the training data's; an OOD dataset names its own.
            exc.details = [f"give the OOD entry its own root: {{name: {spec.name}, root: PATH}}"]
            raise


def shift_metric_error(metric: str, suite: Suite, where: Location) -> ConfigError | None:
    """The error of a target metric (seeds target, tuning target) that only the `evaluate:` block measures when
    the suite's block does not measure it; None when the metric is not a shift metric or is measured."""
    block = suite.evaluate
    if metric.startswith("corrupt_"):
        if block is None or block.corruptions is None:
            return ConfigError(message=f"{metric} is measured only on corrupted test images, and the suite's "
                                       "evaluate: block names no corruptions", location=where, value=metric,
                               details=["add evaluate: {corruptions: {names: [...]}} to the suite"])
    elif metric.startswith("ood_") and (block is None or not block.ood):
        return ConfigError(message=f"{metric} is measured only against OOD inputs, and the suite's evaluate: "
                                   "block names no ood sources", location=where, value=metric,
                           details=["add evaluate: {ood: [uniform_noise]} (or a dataset) to the suite"])
    return None
