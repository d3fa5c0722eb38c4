"""What `lossbench run` does between its options and its summary: the suite values its options set, the executor
they ask for (checked against the suite), the header line, the display, and the closing table and report."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from lossbench.cli.shell import console, err_console
from lossbench.cli.tables import cells_table, cells_text
from lossbench.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from lossbench.config.schema import Suite
    from lossbench.execution import Executor
    from lossbench.parallel import ProcessExecutor
    from lossbench.progress import RunDisplay
    from lossbench.ray_executor import RayExecutor
    from lossbench.runner import RunPlan, RunSummary


def parse_seeds(text: str | None) -> list[int] | None:
    """`--seeds 0,1,2` as a list of integers (None when not given)."""
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s != ""]
    except ValueError:
        raise ConfigError(message=f"--seeds takes comma-separated integers such as 0,1,2; got {text!r}") from None
    if not seeds:
        raise ConfigError(message="--seeds is empty; give at least one integer")
    return seeds


def parse_threads(text: str | None) -> int | str | None:
    """`--threads`: `auto` or a whole number, 1 or more (None when not given)."""
    if text is None or text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(message=f"--threads {text!r}: must be auto or a whole number, 1 or more", value=text,
                          allowed=["auto", "a whole number ≥ 1"], suggestion=did_you_mean(text, ["auto"]))
    return int(text)


#: The options of SUITE_OPTIONS whose text is parsed before it goes into the suite; the others go as given.
_PARSERS: dict[str, Callable[[Any], Any]] = {"seeds": parse_seeds, "threads": parse_threads}


def suite_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """The suite values that a command's options set (config/options.py's SUITE_OPTIONS, by name; None: not
    given), from the command's parameters: `load_suite(..., settings=suite_settings(ctx.params))`."""
    from lossbench.config.options import SUITE_OPTIONS

    return {option.name: _PARSERS.get(option.name, lambda value: value)(params[option.name])
            for option in SUITE_OPTIONS if option.name in params}


def check_tensorboard(log_dir: Path) -> None:
    """--tensorboard: the package is installed and the directory can take the events (ConfigError otherwise)."""
    from lossbench.tensorboard import check_available, check_log_dir

    check_available()
    check_log_dir(log_dir)


@dataclass(frozen=True)
class ExecutorOptions:
    """Where `run` trains: --executor, --jobs and the Ray options as given (None: not given)."""

    name: str
    jobs: int
    address: str | None
    cpus_per_cell: float | None
    gpus_per_cell: float | None
    ray_data: str | None


@dataclass(frozen=True)
class PlannedRun:
    """A run ready to start: its plan, the executor that trains it, and the header's words for where it trains
    (`device cpu · 2 jobs × 1 torch thread`, `Ray (auto) · 1 CPU per cell`)."""

    plan: RunPlan
    executor: Executor
    where: str

    def train(self, display: RunDisplay) -> RunSummary:
        """Train the plan's pending cells (runner.run), timing the run from this process's start."""
        from lossbench import runner
        from lossbench.run_clock import process_age_s

        return runner.run(self.plan, executor=self.executor, display=display, startup_s=process_age_s())


def plan_run(loaded: Suite, out_dir: Path, force: bool, cache_dir: Path | None,
             chosen: ExecutorOptions) -> PlannedRun:
    """The run's plan and the executor the options ask for, checked against the suite. Raises LossbenchError
    before anything is written."""
    from lossbench import runner  # after the suite: a malformed file is refused before torch loads (seconds)
    from lossbench.data.cache import DEFAULT_CACHE
    from lossbench.execution import LocalExecutor

    cluster = cluster_executor(chosen.name, chosen.address, chosen.cpus_per_cell, chosen.gpus_per_cell,
                               chosen.ray_data)
    run_plan = runner.plan(loaded, out_dir, force=force, cache_dir=cache_dir or DEFAULT_CACHE,
                           check_device=cluster is None)
    run_plan.store.check_not_locked()  # a busy directory is refused before the header is printed
    parallel = parallel_executor(chosen.jobs, cluster, loaded.train.threads)
    if cluster is not None and loaded.tune is not None and loaded.tune.pruner != "none":
        raise ConfigError(message=f"tune.pruner {loaded.tune.pruner} stops trials from the process that trains "
                                  "them, through the study file in the results directory, which Ray workers on "
                                  "other machines cannot reach",
                          location=loaded.locate(["tune", "pruner"]),
                          details=["tune with pruner: none on Ray, or prune on one machine with --jobs N"])
    if loaded.train.pack > 1 and (parallel is not None or cluster is not None):
        raise ConfigError(message=f"train.pack {loaded.train.pack} (or --pack) trains packs in this process; "
                                  "it does not combine with --jobs or --executor ray",
                          details=["drop --jobs / --executor, or set --pack 1"])
    if cluster is not None:
        return PlannedRun(run_plan, cluster, cluster.describe())
    where = f"device {run_plan.job.engine.options().device}" + (f" · {parallel.describe()}" if parallel else "")
    return PlannedRun(run_plan, parallel or LocalExecutor(), where)


def cluster_executor(name: str, address: str | None, cpus_per_cell: float | None, gpus_per_cell: float | None,
                      ray_data: str | None) -> RayExecutor | None:
    """The executor that --executor names: None for local (the local executor), a RayExecutor for ray."""
    ray_flags = {"--address": address, "--cpus-per-cell": cpus_per_cell, "--gpus-per-cell": gpus_per_cell,
                 "--ray-data": ray_data}
    if name == "local":
        given = [flag for flag, value in ray_flags.items() if value is not None]
        if given:
            raise ConfigError(message=f"{', '.join(given)} only apply with --executor ray")
        return None
    if name != "ray":
        raise ConfigError(message=f"unknown executor '{name}'", value=name, allowed=["local", "ray"],
                          suggestion=did_you_mean(name, ["local", "ray"]))
    from lossbench.ray_executor import RayExecutor

    return RayExecutor(address, cpus_per_cell=1.0 if cpus_per_cell is None else cpus_per_cell,
                       gpus_per_cell=gpus_per_cell or 0.0, data=ray_data or "object_store")  # type: ignore[arg-type]


def parallel_executor(jobs: int, cluster: RayExecutor | None, threads: int | str) -> ProcessExecutor | None:
    """The executor that --jobs asks for: None for one cell at a time, a ProcessExecutor for several at once."""
    if jobs == 1:
        return None
    if cluster is not None:
        raise ConfigError(message="--jobs applies to the local executor; with --executor ray, --cpus-per-cell and "
                                  "--gpus-per-cell decide how many cells train at once")
    from lossbench.parallel import ProcessExecutor

    return ProcessExecutor(jobs, threads_per_job=threads if isinstance(threads, int) else None)


def announce(planned: PlannedRun, out_dir: Path) -> None:
    """The run's header line, and a warning for each file of cells/ that is not a cell record."""
    run_plan, where = planned.plan, planned.where
    suite = run_plan.suite
    console.print(f"[bold]{suite.name}[/]: {cells_text(run_plan)} · {suite.dataset.name} · {suite.model.name} · "
                  f"{suite.train.epochs} epoch(s) · {where} → {out_dir}", highlight=False)
    ids = {c.id for c in run_plan.cells}
    for path, why in run_plan.ignored:
        then = "its cell is trained again" if path.stem in ids else "left as it is"
        err_console.print(f"[yellow]warning:[/] ignored {escape(path.name)} in {escape(str(path.parent))}: "
                          f"{escape(why)}; {then}", highlight=False, soft_wrap=True)


def make_display(interactive: bool, tensorboard: Path | None, suite_name: str, out_dir: Path) -> RunDisplay:
    """A live display on a terminal (plain lines otherwise), and TensorBoard's writer beside it with
    --tensorboard."""
    from lossbench.progress import DisplayGroup, PlainDisplay, RichDisplay

    display: RunDisplay = RichDisplay(console) if interactive else PlainDisplay()
    if tensorboard is None:
        return display
    from lossbench.tensorboard import TensorBoardWriter

    return DisplayGroup([display, TensorBoardWriter(tensorboard, suite_name, out_dir)])


def conclude(suite_name: str, summary: RunSummary, out_dir: Path) -> None:
    """The closing table of cells and the line of counts."""
    cells = len({r.label for r in summary.records})
    console.print(cells_table(summary.records, f"{suite_name} — {cells} cell(s), {len(summary.records)} "
                              f"training(s)", console.width))
    console.print(
        f"{f'tuning trials {summary.trials} (tuning.csv) · ' if summary.trials else ''}"
        f"ran {summary.ran}, skipped {summary.skipped}, diverged {summary.diverged}, failed {summary.failed} · "
        f"results: {out_dir / 'results.csv'}",
        highlight=False,
    )


def write_run_report(out_dir: Path, interactive: bool) -> list[Path]:
    """Write the results directory's report; the files written, report.md first."""
    from lossbench.report import write_report

    # The report takes seconds (plots): say so, so that the wait is not mistaken for a hang.
    if interactive:
        with console.status("writing report…"):
            return write_report([out_dir])
    console.print("writing report…", highlight=False)
    return write_report([out_dir])
