"""The one table of grid axes agrees with everything that names the axes: the schema's `grid:` section, the
registries, the cells' labels and results.csv's columns."""

from __future__ import annotations

from lossbench.axes import AXES, AXIS_NAMES
from lossbench.config.schema import GridConfig
from lossbench.registries import KINDS
from lossbench.results_csv import CSV_COLUMNS


def test_the_grid_section_has_one_key_per_axis_in_table_order() -> None:
    assert tuple(GridConfig.model_fields) == AXIS_NAMES


def test_every_axis_names_a_registry() -> None:
    assert {axis.kind for axis in AXES} <= set(KINDS)


def test_results_csv_has_one_column_per_axis_in_table_order() -> None:
    start = CSV_COLUMNS.index(AXIS_NAMES[0])
    assert tuple(CSV_COLUMNS[start:start + len(AXES)]) == AXIS_NAMES


def test_a_cell_names_its_level_of_every_axis_in_table_order(write_suite) -> None:
    from lossbench.grid import expand
    from lossbench.suite import load_suite

    for cell in expand(load_suite(write_suite()), "digits:sklearn"):
        assert tuple(cell.axes) == AXIS_NAMES
