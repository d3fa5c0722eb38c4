"""The command-line options that set one value of a suite (`--epochs 2` sets `train.epochs`), as one table.

A value set this way is validated like the file's, and its errors name the option as typed (`--device gpu`)
instead of a line of the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lossbench.config.source import SuiteSource
from lossbench.suite_yaml import KeyPath


@dataclass(frozen=True)
class SuiteOption:
    """A command-line option that replaces the suite's value at `path`."""

    #: The keyword it is given under (`settings` of `load_suite`) and the option's parameter name in the CLI.
    name: str
    #: The option as typed on the command line.
    flag: str
    #: Where its value goes in the suite.
    path: KeyPath

    def label(self, value: Any) -> str:
        """The option as the user typed it, for messages (`--seeds 0,1,2`)."""
        shown = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        return f"{self.flag} {shown}"


SUITE_OPTIONS: tuple[SuiteOption, ...] = (
    SuiteOption("epochs", "--epochs", ("train", "epochs")),
    SuiteOption("seeds", "--seeds", ("seeds",)),
    SuiteOption("device", "--device", ("train", "device")),
    SuiteOption("data_root", "--data-root", ("dataset", "root")),
    SuiteOption("threads", "--threads", ("train", "threads")),
    SuiteOption("pack", "--pack", ("train", "pack")),
)


def apply_options(source: SuiteSource, settings: Mapping[str, Any]) -> None:
    """Set each option of SUITE_OPTIONS that `settings` gives a value (None: not given), in the table's order.

    Raises KeyError for a name that is not in the table: a caller's mistake, not the user's.
    """
    unknown = set(settings) - {option.name for option in SUITE_OPTIONS}
    if unknown:
        raise KeyError(f"not a suite option: {', '.join(sorted(unknown))}")
    for option in SUITE_OPTIONS:
        value = settings.get(option.name)
        if value is not None:
            source.set_from_command_line(option.path, value, option.label(value))
