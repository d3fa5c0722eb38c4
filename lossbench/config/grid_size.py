"""The grid's size, counted from the axis lengths of the raw suite before anything is validated or expanded."""

from __future__ import annotations

import math

from lossbench.axes import AXIS_NAMES
from lossbench.config.fields import MAX_ADAPTIVE_SEEDS, MAX_CELLS
from lossbench.config.source import SuiteSource
from lossbench.errors import ConfigError


def grid_size_error(source: SuiteSource) -> ConfigError | None:
    """The number of cells from the axis lengths alone, refused above MAX_CELLS before anything is expanded."""
    grid = source.data.get("grid")
    if not isinstance(grid, dict):
        return None
    seeds = source.data.get("seeds", [0])
    counts = {axis: len(grid[axis]) for axis in AXIS_NAMES if isinstance(grid.get(axis), list)}
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
