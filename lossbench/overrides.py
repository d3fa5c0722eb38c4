"""Command-line overrides of a suite: `lossbench run SUITE train.epochs=2 grid.loss=[cross_entropy,focal]`.

The key is a dotted path into the suite (`train.optimizer.lr`, `grid.loss[1].gamma`); the value is YAML, read
by the same strict reader as suite files. Overrides replace values before validation, so the schema checks them
like the file's own, and their errors name the override as typed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lossbench.errors import ConfigError, Location
from lossbench.suite_yaml import KeyPath, dotted, parse_yaml

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


@dataclass(frozen=True)
class Override:
    """One `key=value` from the command line, parsed."""

    text: str
    path: KeyPath
    value: Any
    #: Problems in the value that do not stop reading it (a non-finite number), reported with the suite's.
    problems: list[ConfigError] = field(default_factory=list, compare=False)

    @property
    def label(self) -> str:
        return override_label(self.text)


#: Characters of an override shown in messages; a longer one is cut, with its length.
_SHOWN_CHARS = 80


def override_label(text: str) -> str:
    """How messages name an override: `override 'train.epochs=0'`, a long one cut with its length."""
    if len(text) <= _SHOWN_CHARS:
        return f"override '{text}'"
    return f"override '{text[:_SHOWN_CHARS]}…' ({len(text):,} characters)"


def parse_override(text: str) -> Override:
    """Parse `key=value`; errors name the override."""
    where = Location(option=override_label(text))
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(message="an override is key=value with a dotted key, e.g. train.epochs=2 or "
                                  "grid.loss=[cross_entropy,focal]", location=where)
    path = parse_key_path(key, where)
    doc = parse_yaml(raw, where)
    return Override(text, path, doc.data, doc.problems)


def parse_key_path(key: str, where: Location) -> KeyPath:
    """'grid.loss[1].gamma' -> ('grid', 'loss', 1, 'gamma')."""
    path: list[Any] = []
    for part in key.split("."):
        match = _SEGMENT.fullmatch(part)
        if match is None:
            raise ConfigError(
                message=f"'{key}' is not a dotted key: write names joined by dots, with [N] for a list item "
                        "(train.optimizer.lr, grid.loss[1].gamma)", location=where)
        path.append(match.group(1))
        path.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
    return tuple(path)


def set_path(data: dict[str, Any], path: KeyPath, value: Any, option: str) -> list[KeyPath]:
    """Set `data` at `path` to `value`, creating mappings for missing keys; return the paths of the mappings it
    created (wholly the override's, so errors about them name it).

    A component written by name (`optimizer: sgd`) becomes a mapping when a parameter is set under it
    (`train.optimizer.lr=0.01` -> `{name: sgd, lr: 0.01}`).
    """
    created: list[KeyPath] = []
    node: Any = data
    for depth, key in enumerate(path):
        last = depth == len(path) - 1
        here = dotted(path[:depth]) or "the suite"
        if isinstance(key, int):
            if not isinstance(node, list):
                raise ConfigError(message=f"{here} is not a list, so [{key}] does not apply",
                                  location=Location(option=option))
            if key >= len(node):
                raise ConfigError(message=f"{here} has {len(node)} item(s), so [{key}] does not exist "
                                          "(replace the whole list instead)", location=Location(option=option))
        elif not isinstance(node, dict):
            raise ConfigError(message=f"{here} is {_kind(node)}, not a mapping, so it has no key '{key}'",
                              location=Location(option=option))
        if last:
            node[key] = value
            return created
        child = node[key] if isinstance(key, int) else node.get(key)
        if child is None:
            child = {}
            created.append(path[:depth + 1])
        elif isinstance(child, str) and not isinstance(path[depth + 1], int):
            child = {"name": child}
        node[key] = child
        node = child


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text '{value}'"
    return f"the value {value}"
