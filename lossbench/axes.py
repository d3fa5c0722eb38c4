"""The grid axes, one row each: what a suite varies under `grid:`, and how every later stage names it.

An axis's name is the key under `grid:` in a suite, the Cell's field, the key in a record's `axes`, and the
results.csv column; its kind names the registry its components come from (lossbench/registries.py). This module
imports nothing of lossbench's, so that the suite's schema below the component families can read it too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Axis:
    """One grid axis."""

    name: str
    #: The registry kind its components come from (a key of `registries()`).
    kind: str
    #: A level may list several components applied together (`[hflip, crop]`); otherwise a level is one.
    stacked: bool
    #: Every report table shows it; an axis that is not standard is shown where a suite varies it.
    standard: bool = True
    #: Its value in records written before the axis existed (None: every record has it).
    absent: str | None = None


#: The grid axes, in display order: the order of the grid's product (loss slowest), of cell labels, of
#: results.csv's columns and of the report's tables.
AXES: tuple[Axis, ...] = (
    Axis("loss", "losses", stacked=False),
    Axis("regularizer", "regularizers", stacked=True),
    Axis("augmentation", "augmentations", stacked=True),
    Axis("optimizer", "optimizers", stacked=False),
    # Results written before the scenario axis existed trained on the clean data.
    Axis("scenario", "scenarios", stacked=True, standard=False, absent="none"),
)

#: The axes' names, in display order.
AXIS_NAMES: tuple[str, ...] = tuple(axis.name for axis in AXES)
