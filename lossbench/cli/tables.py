"""The tables and summaries the `lossbench` command prints: a run's closing table of cells, what a run plans,
and `validate`'s grid, tuning and disk summaries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from lossbench.config.schema import Suite
    from lossbench.grid import Cell
    from lossbench.record import CellRecord
    from lossbench.runner import RunPlan


def _fmt(value: Any, spec: str = ".4f") -> str:
    """A table's figure, or a dash where there is none."""
    return "—" if value is None else format(value, spec)


# The closing table's columns after the cell's name, in the order they are given up when the terminal is narrow
# (the last ones first); seed, status and test accuracy are always kept.
TABLE_COLUMNS = ["seeds", "test acc", "95% CI", "ECE", "NLL", "gap", "train s"]
REQUIRED_COLUMNS = 3
#: A grid of more cells than this closes with its best and its worst cells only (the rest are in results.csv and
#: the report): thousands of rows would scroll the run's own summary off the screen.
TABLE_ROWS, TABLE_BEST, TABLE_WORST = 40, 25, 10


def cells_table(records: list[CellRecord], title: str, width: int | None = None) -> Table:
    """One row per cell (its seeds together), best mean test accuracy first: the seeds that finished, the mean of
    each metric over them, the ± of the 95% t-interval of the mean test accuracy, and the mean training seconds;
    every seed's own values are in the report; past TABLE_ROWS cells only the best and the worst are listed.
    Fitted to `width` columns: the cell's name wraps first (down to 20 characters), then the optional columns go,
    timing first; `width=None` keeps them all."""
    from lossbench.analysis.stats import t_interval

    by_cell: dict[str, list[CellRecord]] = {}
    for r in records:
        by_cell.setdefault(r.label, []).append(r)

    def mean(recs: list[CellRecord], key: str) -> float | None:
        values = [r.value(key) for r in recs]
        values = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return sum(values) / len(values) if values else None

    rows = []
    for label, recs in by_cell.items():
        done = [r for r in recs if r.status == "done"]
        accs = [float(r.metrics.test_acc) for r in done if isinstance(r.metrics.test_acc, float)]
        interval = t_interval(accs) if accs else None
        bad = [f"[{'yellow' if s == 'diverged' else 'red'}]{n} {s}[/]"
               for s, n in (("diverged", sum(r.status == "diverged" for r in recs)),
                            ("failed", sum(r.status == "failed" for r in recs))) if n]
        seeds = f"{len(done)}" if not bad else f"{len(done)}/{len(recs)} ({', '.join(bad)})"
        rows.append({
            "cell": label, "seeds": f"[green]{seeds}[/]" if not bad else seeds,
            "test acc": _fmt(interval.mean if interval else None),
            "95% CI": f"±{interval.half_width:.4f}" if interval and interval.half_width is not None else "—",
            "ECE": _fmt(mean(done, "ece"), ".3f"), "NLL": _fmt(mean(done, "test_nll"), ".3f"),
            "gap": _fmt(mean(done, "gap"), "+.3f"), "train s": _fmt(mean(recs, "train_time_s"), ".1f"),
            "_key": interval.mean if interval else -1.0,
        })
    rows.sort(key=lambda row: -row["_key"])
    hidden = len(rows) - TABLE_BEST - TABLE_WORST if len(rows) > TABLE_ROWS else 0
    if hidden:
        rows = rows[:TABLE_BEST] + [{"cell": f"[dim]… {hidden:,} more cells (results.csv, the report)[/]"}] + \
            rows[-TABLE_WORST:]

    def content_width(col: str) -> int:
        return max([len(col)] + [Text.from_markup(row.get(col, "")).cell_len for row in rows])

    cell_min_width = 20
    for keep in range(len(TABLE_COLUMNS), REQUIRED_COLUMNS - 1, -1):
        columns = TABLE_COLUMNS[:keep]
        # Each column takes its content, one space either side and a border; plus the table's left border.
        needed = 1 + (cell_min_width + 3) + sum(content_width(col) + 3 for col in columns)
        if width is None or needed <= width:
            break
    table = Table(title=title, caption="means over each cell's finished seeds; every seed in the report",
                  show_lines=False, expand=False)
    table.add_column("cell", overflow="fold", min_width=cell_min_width)
    for col in columns:
        table.add_column(col, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(row["cell"], *(row.get(col, "") for col in columns))
    return table


def cells_text(run_plan: RunPlan) -> str:
    """How many trainings a run plans: the cell count, or its range under adaptive seeding."""
    rounds = run_plan.rounds
    tune = run_plan.suite.tune
    tuning = "" if tune is None else (f"{tune.trials} tuning trial(s) per grid point on the validation split "
                                      f"({tune.sampler}, {tune.metric}, pruner {tune.pruner}), then ")
    if rounds is None:
        return f"{tuning}{len(run_plan.cells)} cell(s)"
    from lossbench.analysis.measures import measure

    low, high = rounds.bounds()
    rule = rounds.seeds
    unit = measure(rule.target.metric).diff_unit
    return (f"{tuning}{rounds.points} grid point(s) × {rule.min}–{rule.max} adaptive seeds ({low}–{high} trainings, "
            f"until ±{rule.target.half_width:g}{f' {unit}' if unit else ''} on {rule.target.metric})")

def checkpoint_disk(run_plan: RunPlan) -> str:
    """What the run's checkpoints take on disk (weights × cells), so that nobody fills a disk by surprise."""
    from lossbench.checkpoint import describe_disk, estimate_sizes

    policy = run_plan.job.engine.checkpoint
    # The optimizer state is sized only where a training state is kept: it imports torch._dynamo (seconds).
    sizes = estimate_sizes(run_plan.suite, run_plan.cells, with_state=policy.keep == "last" or policy.every > 0)
    return describe_disk(policy, sizes, len(run_plan.cells), run_plan.store.root)


def print_tuned_paths(console: Console, loaded: Suite, cells: list[Cell]) -> None:
    """Which parameters each grid point tunes, and the cost in epochs (trials × grid points × epochs, at most)."""
    from lossbench.tuning_space import cell_paths

    tune = loaded.tune
    table = Table(title=f"tuning: {tune.trials} trial(s) per grid point, {tune.sampler} sampler, {tune.metric}, "
                        f"pruner {tune.pruner}")
    table.add_column("grid point")
    table.add_column("tunes")
    points = {c.label: cell_paths(c, tune.space) for c in cells}
    for label, paths in points.items():
        table.add_row(escape(label), ", ".join(paths))
    console.print(table)
    console.print(f"tuning costs at most {tune.trials} × {len(points)} × {loaded.train.epochs} = "
                  f"{tune.trials * len(points) * loaded.train.epochs:,} epochs", highlight=False)


def grid_table(loaded: Suite, run_plan: RunPlan) -> Table:
    """`validate`'s table: the distinct levels of each grid axis, in grid order, and the seeds."""
    cells, grid, rounds = run_plan.cells, loaded.grid, run_plan.rounds
    axes = {axis: list(dict.fromkeys(c.axes[axis] for c in cells)) for axis in cells[0].axes}
    axes["seed"] = [str(s) for s in loaded.seed_list]
    title = cells_text(run_plan) if rounds else f"{len(cells)} cell(s)"
    table = Table(title=f"{loaded.name}: {title}")
    table.add_column("axis")
    table.add_column("levels", justify="right")
    table.add_column("values")
    for axis, values in axes.items():
        if (axis == "optimizer" and grid.optimizer is None) or (axis == "scenario" and len(values) == 1):
            axis = f"{axis} (fixed)"
        table.add_row(axis, str(len(values)), ", ".join(values))
    return table


def valid_text(loaded: Suite, run_plan: RunPlan) -> str:
    """`validate`'s verdict on a valid suite: how many trainings, on what, for how many epochs."""
    rounds = run_plan.rounds
    if rounds:
        from lossbench.analysis.measures import measure

        low, high = rounds.bounds()
        target = rounds.seeds.target
        unit = measure(target.metric).diff_unit
        return (f"[green]valid[/]: {low} to {high} trainings ({rounds.points} grid point(s), "
                f"{rounds.seeds.min} to {rounds.seeds.max} seeds each, until the 95% interval of each "
                f"difference from the baseline is within ±{target.half_width:g}{f' {unit}' if unit else ''} "
                f"on {target.metric}) on {loaded.dataset.name} with {loaded.model.name}, "
                f"{loaded.train.epochs} epoch(s) each")
    return (f"[green]valid[/]: {len(run_plan.cells)} cell(s) on {loaded.dataset.name} with {loaded.model.name}, "
            f"{loaded.train.epochs} epoch(s) each")
