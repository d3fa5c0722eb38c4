"""A suite's raw data with where each value came from: the file line, or the command-line option that set it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lossbench.errors import ConfigError, Location
from lossbench.overrides import set_path
from lossbench.suite_yaml import KeyPath, dotted, parse_yaml, read_suite_text


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
