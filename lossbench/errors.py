"""Typed errors raised by the library; only the command (`lossbench/cli/`) turns them into messages and exit codes."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Location:
    """Where a bad value came from: a file with a 1-based line and column, or the command-line option or override
    that set it (`--epochs 0`, `override 'train.epochs=0'`), and the dotted path inside the suite."""

    file: str | None = None
    line: int | None = None
    column: int | None = None
    path: str | None = None
    option: str | None = None

    def __str__(self) -> str:
        if self.option:
            # A value from the command line has no line in the file; the option is where to look.
            return f"{self.option} at {self.path}" if self.path else self.option
        where = self.file or ""
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.path:
            where += f" at {self.path}" if where else self.path
        return where


def did_you_mean(value: str, choices: Iterable[str]) -> str | None:
    """The closest known name to `value`, or None when nothing is close."""
    matches = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


@dataclass
class LossbenchError(Exception):
    """Base of every error lossbench reports to a user (exit code 2)."""

    message: str
    location: Location | None = None
    value: object = None
    allowed: list[str] | None = None
    suggestion: str | None = None
    details: list[str] = field(default_factory=list)
    #: The component parameter at fault, so that the error can point at that parameter's line.
    parameter: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        where = str(self.location) if self.location else ""
        head = f"{where}: {self.message}" if where else self.message
        lines = [head]
        if self.allowed:
            shown = ", ".join(self.allowed[:40]) + (", …" if len(self.allowed) > 40 else "")
            lines.append(f"  allowed: {shown}")
        if self.suggestion:
            lines.append(f"  did you mean '{self.suggestion}'?")
        lines.extend(f"  {d}" for d in self.details)
        return "\n".join(lines)


class ConfigError(LossbenchError):
    """The suite file is missing, unreadable or invalid."""


class UnknownComponentError(ConfigError):
    """A loss, regularizer, augmentation, model, dataset, optimizer or schedule name is not registered."""


class ModelFitError(ConfigError):
    """A model cannot take the dataset's images as configured, or cannot place the dropout a regularizer asks for.

    `parameter` names the model's suite parameter to change, when one is to blame (e.g. `padding`)."""


@dataclass
class DataError(LossbenchError):
    """A dataset cannot be found, read or decoded.

    `option` names the dataset option whose value the data cannot satisfy (a key of the suite's `dataset:`, e.g.
    `train_subset` when the split holds fewer images); None when the data itself is at fault (its root or, without
    one, its name). It tells `located_data_error` which suite key to point at."""

    option: str | None = None


class ResultsLockedError(LossbenchError):
    """Another lossbench process holds the results directory."""


class ForeignDirectoryError(LossbenchError):
    """A results directory was asked for where another program keeps its files: lossbench does not write there."""


class ResultsWriteError(LossbenchError):
    """A results file cannot be written (read-only directory, full disk, ...); what was written before is intact."""


class SuiteErrors(ConfigError):
    """Several configuration errors found in one pass over the suite."""

    def __init__(self, errors: list[ConfigError]):
        self.errors = errors
        super().__init__(message=f"{len(errors)} error(s) in the suite")

    def render(self) -> str:
        return "\n".join(e.render() for e in self.errors)


class ReportError(LossbenchError):
    """Results cannot be reported as asked: a directory is missing or empty, or an option names nothing there."""


class RecordError(LossbenchError):
    """A cell result file is not a lossbench cell record."""


class RecordSchemaError(RecordError):
    """A cell result file was written by a newer lossbench, with a record schema this version cannot read."""
