"""The `lossbench` command: run, report, evaluate, validate, list. A thin shell over the library; the only place that prints
errors and chooses exit codes (0 ok, 1 a cell failed, 2 bad input, 130 interrupted, 141 the reader of the output
went away)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lossbench import __version__
from lossbench.analysis.measures import MEASURES
from lossbench.cli.shell import Command, Group, choices, completer, usable_std_streams
from lossbench.cli.tables import cells_table, cells_text, checkpoint_disk, grid_table, print_tuned_paths, valid_text
from lossbench.registries import KINDS as COMPONENT_KINDS
from lossbench.errors import ConfigError, LossbenchError, ReportError, did_you_mean


app = typer.Typer(
    name="lossbench",
    cls=Group,
    help="Which loss, regularizer and augmentation should I use? Train a YAML grid of them and compare.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Logs and pipes get a wide console so that tables keep one line per cell.
usable_std_streams()
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

# The enumerated options. They are shown in help and offered by shell completion; the values are still checked by
# the library, so that a typo gets a did-you-mean and the option's name in the message.
DEVICES = ["auto", "cpu", "cuda", "mps"]
EXECUTORS = ["local", "ray"]
RAY_DATA = ["object_store", "worker_cache"]
REPORT_FORMATS = ["md", "csv", "latex", "json"]

# Help text is rich markup: "\\[" prints a bracket.
OVERRIDES_HELP = ("Suite values to change, as KEY=VALUE with a dotted key and a YAML value: train.epochs=2 "
                  "train.optimizer.lr=0.01 grid.loss=\\[cross_entropy,focal] dataset.train_subset=2000.")

KINDS = list(COMPONENT_KINDS)
#: The metrics lossbench knows how to show, offered by completion of `report --metric`.
METRIC_NAMES = list(MEASURES)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"lossbench {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_print_version,
                                 help="Print the version and exit."),
) -> None:
    """Which loss, regularizer and augmentation should I use? Train a YAML grid of them and compare."""


def _fail(exc: LossbenchError, debug: bool) -> None:
    if debug:
        raise exc
    # The message is text, not markup: `lossbench[ray]` or `[hflip, crop]` must print as written.
    err_console.print(f"[bold red]error:[/] {escape(exc.render())}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s != ""]
    except ValueError:
        raise ConfigError(message=f"--seeds takes comma-separated integers such as 0,1,2; got {text!r}") from None
    if not seeds:
        raise ConfigError(message="--seeds is empty; give at least one integer")
    return seeds


def _parse_threads(text: str | None) -> int | str | None:
    if text is None or text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(message=f"--threads {text!r}: must be auto or a whole number, 1 or more", value=text,
                          allowed=["auto", "a whole number ≥ 1"], suggestion=did_you_mean(text, ["auto"]))
    return int(text)


@app.command(cls=Command)
def run(
    suite: Path = typer.Argument(..., metavar="SUITE", help="The suite YAML file."),
    overrides: Optional[list[str]] = typer.Argument(None, metavar="KEY=VALUE", help=OVERRIDES_HELP, show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results directory (default: results/<suite name>)."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Local copy of the dataset: torchvision files, an image-folder directory, or a .tar.gz/.zip archive with train/ and test/."),
    device: Optional[str] = typer.Option(None, "--device", "-d", metavar=choices(DEVICES), autocompletion=completer(DEVICES), help="Where cells train (overrides train.device)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="Override train.epochs."),
    seeds: Optional[str] = typer.Option(None, "--seeds", "-s", help="Override the seeds, e.g. 0,1,2."),
    force: bool = typer.Option(False, "--force", "-f", help="Rerun every cell, even those with results."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Decoded-dataset cache (default ~/.cache/lossbench)."),
    plain: bool = typer.Option(False, "--plain", help="Plain progress lines even on a terminal."),
    threads: Optional[str] = typer.Option(None, "--threads", help="torch threads per cell on the CPU: auto (one per core that other processes leave idle, chosen before each cell) or a whole number (overrides train.threads)."),
    pack: Optional[int] = typer.Option(None, "--pack", help="Train up to N cells that share a model together as one batched model (a GPU lever; overrides train.pack; docs/performance.md)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Cells trained at once on this machine, each in its own process (the CPU threads are split between them; on a GPU they share it)."),
    executor: str = typer.Option("local", "--executor", metavar=choices(EXECUTORS), autocompletion=completer(EXECUTORS), help="local (this machine) or ray (a Ray cluster; docs/clusters.md)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster: auto | ray://HOST:PORT | HOST:PORT (default: RAY_ADDRESS, else a new local instance)."),
    gpus_per_cell: Optional[float] = typer.Option(None, "--gpus-per-cell", help="Ray: GPUs per cell; a fraction such as 0.25 shares a GPU (default 0)."),
    cpus_per_cell: Optional[float] = typer.Option(None, "--cpus-per-cell", help="Ray: CPUs per cell (default 1)."),
    ray_data: Optional[str] = typer.Option(None, "--ray-data", metavar=choices(RAY_DATA), autocompletion=completer(RAY_DATA), help="Ray: object_store (the driver sends the tensors; default) or worker_cache (every node loads the data root)."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write report.md at the end (run `lossbench report` later)."),
    tensorboard: Optional[Path] = typer.Option(None, "--tensorboard", "-t", help="Also write TensorBoard events to this directory: one run per cell × seed with per-epoch curves and the final metrics as hparams (needs lossbench\\[tensorboard])."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Train every cell of SUITE that has no result yet, and write results/<suite>/ and its report."""
    from lossbench.suite import load_suite
    from lossbench.progress import DisplayGroup, PlainDisplay, RichDisplay

    try:
        if tensorboard is not None:
            from lossbench.tensorboard import check_available, check_log_dir

            check_available()
            check_log_dir(tensorboard)
        settings = {"epochs": epochs, "seeds": _parse_seeds(seeds), "device": device, "data_root": data_root,
                    "threads": _parse_threads(threads), "pack": pack}
        loaded = load_suite(suite, overrides or [], settings=settings)
        from lossbench import runner  # after the suite: a malformed file is refused before torch loads (seconds)
        from lossbench.data.cache import DEFAULT_CACHE
        from lossbench.run_clock import process_age_s

        out_dir = out or Path("results") / loaded.name
        cluster = _cluster_executor(executor, address, cpus_per_cell, gpus_per_cell, ray_data)
        run_plan = runner.plan(loaded, out_dir, force=force, cache_dir=cache_dir or DEFAULT_CACHE,
                               check_device=cluster is None)
        run_plan.store.check_not_locked()  # a busy directory is refused before the header is printed
        parallel = _parallel_executor(jobs, cluster, loaded.train.threads)
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
    except LossbenchError as exc:
        _fail(exc, debug)
        return
    interactive = console.is_terminal and not plain
    console.print(
        f"[bold]{loaded.name}[/]: {cells_text(run_plan)} · {loaded.dataset.name} · {loaded.model.name} · "
        f"{loaded.train.epochs} epoch(s) · "
        f"{cluster.describe() if cluster else f'device {run_plan.job.engine.options().device}'}"
        f"{f' · {parallel.describe()}' if parallel else ''} → {out_dir}",
        highlight=False,
    )
    ids = {c.id for c in run_plan.cells}
    for path, why in run_plan.ignored:
        then = "its cell is trained again" if path.stem in ids else "left as it is"
        err_console.print(f"[yellow]warning:[/] ignored {escape(path.name)} in {escape(str(path.parent))}: "
                          f"{escape(why)}; {then}", highlight=False, soft_wrap=True)
    display = RichDisplay(console) if interactive else PlainDisplay()
    if tensorboard is not None:
        from lossbench.tensorboard import TensorBoardWriter

        display = DisplayGroup([display, TensorBoardWriter(tensorboard, loaded.name, out_dir)])
    try:
        summary = runner.run(run_plan, executor=cluster or parallel, display=display,
                             startup_s=process_age_s())
    except LossbenchError as exc:
        _fail(exc, debug)
        return
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted:[/] finished cells are saved; run the same command again to resume")
        raise typer.Exit(130) from None
    cells = len({r.label for r in summary.records})
    console.print(cells_table(summary.records, f"{loaded.name} — {cells} cell(s), {len(summary.records)} "
                               f"training(s)", console.width))
    console.print(
        f"{f'tuning trials {summary.trials} (tuning.csv) · ' if summary.trials else ''}"
        f"ran {summary.ran}, skipped {summary.skipped}, diverged {summary.diverged}, failed {summary.failed} · "
        f"results: {out_dir / 'results.csv'}",
        highlight=False,
    )
    if not no_report:
        from lossbench.report import write_report

        try:
            # The report takes seconds (plots): say so, so that the wait is not mistaken for a hang.
            if interactive:
                with console.status("writing report…"):
                    files = write_report([out_dir])
            else:
                console.print("writing report…", highlight=False)
                files = write_report([out_dir])
        except LossbenchError as exc:
            _fail(exc, debug)
            return
        console.print(f"report: {files[0]}", highlight=False)
    if summary.failed:
        err_console.print(f"[red]{summary.failed} cell(s) failed[/]: tracebacks are in their files under {out_dir / 'cells'}")
        raise typer.Exit(1)


@app.command(cls=Command)
def report(
    results_dirs: Optional[list[Path]] = typer.Argument(None, metavar="RESULTS_DIR", help="Results directories written by `lossbench run`; several merge into one report.", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="A directory, or a file ending in .md/.csv/.tex/.json (default: the results directory; needed with several)."),
    baseline: Optional[str] = typer.Option(None, "--baseline", "-b", help="Label of the cell to compare with (default: 'cross_entropy | none | none', else the best cell)."),
    metric: str = typer.Option("test_acc", "--metric", "-m", autocompletion=completer(METRIC_NAMES), help="Metric to rank and compare on: test_acc, test_nll, ece, gap, ..."),
    columns: Optional[str] = typer.Option(None, "--columns", help="LaTeX: the columns after the ranking metric, comma-separated metric names (default: ece), e.g. ece,test_nll,epoch_s."),
    fmt: str = typer.Option("md", "--format", "-f", metavar=choices(REPORT_FORMATS), autocompletion=completer(REPORT_FORMATS), help="md (report.md + plots + summary.csv), csv, latex or json."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Statistics, tables and plots of finished cells (report.md). Reads result files only; never trains."""
    from lossbench.report import write_report

    try:
        if not results_dirs:
            found = sorted(str(p.parent) for p in Path("results").glob("*/cells"))
            raise ReportError(message="give one or more results directories, e.g. `lossbench report results/smoke`",
                              details=[f"found here: {', '.join(found)}"] if found else [])
        if columns is not None and fmt != "latex":
            raise ReportError(message="--columns chooses the LaTeX table's columns: it needs --format latex",
                              value=columns, details=["add --format latex, or drop --columns"])
        files = write_report(list(results_dirs), out, baseline=baseline, metric=metric, fmt=fmt, columns=columns)
    except LossbenchError as exc:
        _fail(exc, debug)
        return
    beside = f" (+ {len(files) - 1} file(s) beside it: summary, plots)" if len(files) > 1 else ""
    console.print(f"report: {files[0]}{beside}", highlight=False, soft_wrap=True)


@app.command(cls=Command)
def evaluate(
    results_dir: Path = typer.Argument(..., metavar="RESULTS_DIR", help="A results directory written by `lossbench run` (with checkpoints/)."),
    suite: Optional[Path] = typer.Option(None, "--suite", help="Suite whose evaluate: block to score (default: RESULTS_DIR/suite.yaml); its dataset must be the one the cells trained on."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="As for run."),
    device: Optional[str] = typer.Option(None, "--device", "-d", metavar=choices(DEVICES), autocompletion=completer(DEVICES), help="Where to evaluate (overrides train.device)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Decoded-dataset cache (default ~/.cache/lossbench)."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not rewrite report.md at the end."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Score the saved final weights of every finished cell on an evaluate: block (corruptions, OOD) without
    retraining; the new metrics are added to the cell files, beside what they had."""
    from lossbench.suite import load_suite
    from lossbench.errors import ReportError
    from lossbench.store import is_lossbench_dir

    try:
        if not results_dir.is_dir() or not is_lossbench_dir(results_dir):
            raise ReportError(message=f"{results_dir} is not a lossbench results directory",
                              value=str(results_dir), details=["give the directory `lossbench run` wrote, e.g. "
                                                               "results/shift-smoke"])
        suite_file = suite or results_dir / "suite.yaml"
        loaded = load_suite(suite_file, settings={"data_root": data_root, "device": device})
        if loaded.evaluate is None:
            raise ConfigError(message=f"{suite_file} has no evaluate: block: nothing to score",
                              details=["give --suite FILE with one, e.g. evaluate: {corruptions: {names: "
                                       "[gaussian_noise]}, ood: [uniform_noise]}"])
        from lossbench.data.cache import DEFAULT_CACHE
        from lossbench.shift.checks import check_ood_data
        from lossbench.shift.evaluate import evaluate_directory

        check_ood_data(loaded)

        def on_cell(label: str, seed: int, i: int, n: int) -> None:
            console.print(f"scoring {escape(label)} · seed {seed} ({i + 1}/{n})", highlight=False)

        summary = evaluate_directory(results_dir, loaded, cache_dir or DEFAULT_CACHE, on_cell)
    except LossbenchError as exc:
        _fail(exc, debug)
        return
    for label, seed, why in summary.skipped:
        err_console.print(f"[yellow]skipped:[/] {escape(label)} · seed {seed}: {escape(why)}", highlight=False)
    console.print(f"scored {len(summary.scored)} cell(s), skipped {len(summary.skipped)} · results: "
                  f"{results_dir / 'cells'}", highlight=False)
    if summary.scored and not no_report:
        from lossbench.report import write_report

        try:
            files = write_report([results_dir])
        except LossbenchError as exc:
            _fail(exc, debug)
            return
        console.print(f"report: {files[0]}", highlight=False)


def _cluster_executor(name: str, address: str | None, cpus_per_cell: float | None, gpus_per_cell: float | None,
                      ray_data: str | None) -> Any:
    """The executor that --executor names: None for local (the runner's default), a RayExecutor for ray."""
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


def _parallel_executor(jobs: int, cluster: Any, threads: int | str) -> Any:
    """The executor that --jobs asks for: None for one cell at a time, a ProcessExecutor for several at once."""
    if jobs == 1:
        return None
    if cluster is not None:
        raise ConfigError(message="--jobs applies to the local executor; with --executor ray, --cpus-per-cell and "
                                  "--gpus-per-cell decide how many cells train at once")
    from lossbench.parallel import ProcessExecutor

    return ProcessExecutor(jobs, threads_per_job=threads if isinstance(threads, int) else None)


@app.command(cls=Command)
def validate(
    suite: Path = typer.Argument(..., metavar="SUITE", help="The suite YAML file."),
    overrides: Optional[list[str]] = typer.Argument(None, metavar="KEY=VALUE", help=OVERRIDES_HELP, show_default=False),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="As for run."),
    as_json: bool = typer.Option(False, "--json", help="Print the cells as JSON."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Check SUITE without training: print the number of cells and the grid, or every error (exit 2)."""
    from lossbench.suite import load_suite

    try:
        loaded = load_suite(suite, overrides or [], settings={"data_root": data_root})
        # Imported after the suite is read: a malformed file is refused before torch loads (seconds).
        from lossbench.data.cache import DEFAULT_CACHE
        from lossbench.data.load import check_dataset_files
        from lossbench.errors import DataError
        from lossbench.data.request import located_data_error
        from lossbench.runner import plan

        # force: validate reads no results, so a directory of another suite there is none of its business.
        run_plan = plan(loaded, Path("results") / loaded.name, cache_dir=DEFAULT_CACHE, force=True)
        try:
            # Image headers, empty and single classes of a local image folder (nothing is decoded).
            check_dataset_files(loaded.dataset)
        except DataError as exc:
            raise located_data_error(loaded, exc) from None
    except LossbenchError as exc:
        _fail(exc, debug)
        return
    cells = run_plan.cells
    if as_json:
        print(json.dumps([{"id": c.id, "label": c.label, "seed": c.seed, **c.axes} for c in cells], indent=1))
        return
    console.print(grid_table(loaded, run_plan))
    if loaded.tune is not None:
        print_tuned_paths(console, loaded, cells)
    console.print(valid_text(loaded, run_plan), highlight=False)
    console.print(checkpoint_disk(run_plan), highlight=False)


@app.command("list", cls=Command)
def list_components(
    kind: Optional[str] = typer.Argument(None, metavar="KIND", autocompletion=completer(KINDS), help="One of " + ", ".join(KINDS) + " (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List registered components with their parameters, defaults and one-line docs."""
    from lossbench.registries import registries as component_registries

    registries = component_registries()
    if kind is not None and kind not in registries:
        # `list loss`, `list model`: the singular of each kind (losses → loss, models → model).
        singular = {(k[:-2] if k.endswith("sses") else k[:-1]): k for k in registries}
        kind = singular.get(kind, kind)
    if kind is not None and kind not in registries:
        _fail(ConfigError(message=f"unknown kind '{kind}'", value=kind, allowed=KINDS,
                          suggestion=did_you_mean(kind, KINDS)), debug=False)
    kinds = [kind] if kind else KINDS
    # Models also show their size: trainable parameters at 3x32x32 inputs and 10 classes, defaults.
    sizes = {c.name: registries["models"].parameter_count(c.name) for c in registries["models"].describe()
             } if "models" in kinds else {}
    if as_json:
        print(json.dumps({k: [{"name": c.name, "doc": c.doc, "params": [
            {"name": p.name, "type": p.annotation, "default": p.default, "required": p.required} for p in c.params
        ], **({"parameter_count": sizes[c.name]} if k == "models" else {})} for c in registries[k].describe()]
            for k in kinds}, indent=1, default=str))
        return
    for k in kinds:
        table = Table(title=k, title_justify="left", show_header=True, expand=False)
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("parameters (defaults)")
        if k == "models":
            table.add_column("weights at 3×32×32,\n10 classes", justify="right")
        table.add_column("description")
        for c in registries[k].describe():
            params = ", ".join(f"{p.name}: {p.annotation}" + ("" if p.required else f" = {p.default!r}")
                               for p in c.params)
            size = [f"{sizes[c.name]:,}"] if k == "models" else []
            table.add_row(c.name, params or "—", *size, c.doc)
        if k == "models":
            table.add_row("torchvision:<name>", "—", "", "any classification model of torchvision.models (resnet50, "
                          "vit_b_16, ...), random init, first conv and classifier adapted")
        console.print(table)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except LossbenchError as exc:  # raised with --debug: show the traceback, keep the exit code
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
