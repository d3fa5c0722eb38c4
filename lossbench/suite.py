"""The one loader `validate` and `run` share: `load_suite(path)` parses the YAML, validates the structure, then
runs the semantic checks, each of which lives beside what it checks (components, data, checkpoints, shift,
tuning, the seeds target), and raises one `SuiteErrors` listing everything wrong before anything trains.

It sits above everything it checks, so the schema below (lossbench/config/) imports none of it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lossbench.config.grid_size import grid_size_error
from lossbench.config.messages import in_file_order, structural_errors
from lossbench.config.options import apply_options
from lossbench.config.schema import Suite
from lossbench.config.source import SuiteSource, read_suite_file
from lossbench.config.tune_schema import ParamRange
from lossbench.errors import SuiteErrors
from lossbench.overrides import parse_override
from lossbench.registry import add_import_dir


def parse_suite(source: SuiteSource) -> Suite:
    """Structure, components, parameters and combinations of a suite; raises SuiteErrors listing every problem."""
    errors = list(source.problems)
    too_big = grid_size_error(source)
    if too_big is not None:
        raise SuiteErrors([*errors, too_big])
    # The checks import torch and the registries: a file that is not a suite, or a grid too big, is refused
    # before they load (seconds).
    from lossbench.checkpoint import check_checkpoint
    from lossbench.component_checks import check_components, check_model_fit
    from lossbench.data.checks import check_data_memory, check_dataset
    from lossbench.seed_rounds import check_seed_target
    from lossbench.shift.checks import check_evaluate
    from lossbench.tuning_space import check_tune

    suite: Suite | None = None
    try:
        suite = Suite.model_validate(source.data)
    except ValidationError as exc:
        errors.extend(structural_errors(source, exc))
    component_errors = [*check_dataset(source), *check_components(source)]
    errors.extend(component_errors)
    if suite is not None and not errors:
        errors.extend(check_model_fit(source, suite))
        errors.extend(check_data_memory(source, suite))
    if suite is not None:
        errors.extend(check_seed_target(source, suite))
        errors.extend(check_checkpoint(source, suite))
    if suite is not None and suite.evaluate is not None:
        errors.extend(check_evaluate(source, suite))
    tuned = suite if suite is not None else _suite_without_bad_ranges(source)
    if tuned is not None and tuned.tune is not None and not component_errors:
        errors.extend(check_tune(source, tuned))
    if errors or suite is None:
        raise SuiteErrors(in_file_order(errors))
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


def load_suite(path: str | Path, overrides: Sequence[str] = (), settings: Mapping[str, Any] | None = None) -> Suite:
    """Read a suite file, apply command-line overrides (`train.epochs=2`) and options, and validate the result.

    `settings` maps the name of an option of SUITE_OPTIONS (config/options.py) to its value, None where the option
    was not given: `{"epochs": 2, "seeds": [0, 1]}`. A value set from the command line is validated like the
    file's, and its errors name the override or option (`override 'train.epochs=0'`, `--device gpu`) instead of a
    line of the file.
    """
    source = read_suite_file(path)
    # Custom components may live beside the suite, as modules beside a script do.
    add_import_dir(Path(path).parent)
    parsed = [parse_override(text) for text in overrides]
    for override in parsed:
        source.problems.extend(override.problems)
        source.set_from_command_line(override.path, override.value, override.label)
    apply_options(source, settings or {})
    data = source.data
    if isinstance(data.get("dataset"), dict) and isinstance(data["dataset"].get("root"), str):
        # A relative data root in the file is relative to the suite file, so a suite works from any directory;
        # one given on the command line is relative to where the command runs.
        root = Path(data["dataset"]["root"]).expanduser()
        if not root.is_absolute() and ("dataset", "root") not in source.origins:
            root = (Path(path).parent / root)
        data["dataset"]["root"] = str(root)
    return parse_suite(source)
