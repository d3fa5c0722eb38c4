"""The `lossbench` command: run, report, evaluate, validate, list. A thin shell over the library; the only place that prints
errors and chooses exit codes (0 ok, 1 a cell failed, 2 bad input, 130 interrupted, 141 the reader of the output
went away)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from lossbench import __version__
from lossbench.analysis.measures import MEASURES
from lossbench.cli.running import (
    ExecutorOptions, announce, check_tensorboard, conclude, make_display, plan_run, suite_settings, write_run_report,
)
from lossbench.cli.shell import Command, Group, choices, completer, console, err_console, fail
from lossbench.cli.tables import checkpoint_disk, grid_table, print_tuned_paths, valid_text
from lossbench.errors import ConfigError, LossbenchError, ReportError, did_you_mean
from lossbench.registries import KINDS as COMPONENT_KINDS


app = typer.Typer(
    name="lossbench",
    cls=Group,
    help="Which loss, regularizer and augmentation should I use? Train a YAML grid of them and compare.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
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


@app.command(cls=Command)
def run(
    ctx: typer.Context,
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

    try:
        if tensorboard is not None:
            check_tensorboard(tensorboard)
        loaded = load_suite(suite, overrides or [], settings=suite_settings(ctx.params))
        out_dir = out or Path("results") / loaded.name
        planned = plan_run(loaded, out_dir, force, cache_dir, ExecutorOptions(
            executor, jobs, address, cpus_per_cell, gpus_per_cell, ray_data))
    except LossbenchError as exc:
        fail(exc, debug)
        return
    interactive = console.is_terminal and not plain
    announce(planned, out_dir)
    display = make_display(interactive, tensorboard, loaded.name, out_dir)
    try:
        summary = planned.train(display)
    except LossbenchError as exc:
        fail(exc, debug)
        return
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted:[/] finished cells are saved; run the same command again to resume")
        raise typer.Exit(130) from None
    conclude(loaded.name, summary, out_dir)
    if not no_report:
        try:
            files = write_run_report(out_dir, interactive)
        except LossbenchError as exc:
            fail(exc, debug)
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
        fail(exc, debug)
        return
    beside = f" (+ {len(files) - 1} file(s) beside it: summary, plots)" if len(files) > 1 else ""
    console.print(f"report: {files[0]}{beside}", highlight=False, soft_wrap=True)


@app.command(cls=Command)
def evaluate(
    ctx: typer.Context,
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
        loaded = load_suite(suite_file, settings=suite_settings(ctx.params))
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
        fail(exc, debug)
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
            fail(exc, debug)
            return
        console.print(f"report: {files[0]}", highlight=False)


@app.command(cls=Command)
def validate(
    ctx: typer.Context,
    suite: Path = typer.Argument(..., metavar="SUITE", help="The suite YAML file."),
    overrides: Optional[list[str]] = typer.Argument(None, metavar="KEY=VALUE", help=OVERRIDES_HELP, show_default=False),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="As for run."),
    as_json: bool = typer.Option(False, "--json", help="Print the cells as JSON."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Check SUITE without training: print the number of cells and the grid, or every error (exit 2)."""
    from lossbench.suite import load_suite

    try:
        loaded = load_suite(suite, overrides or [], settings=suite_settings(ctx.params))
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
        fail(exc, debug)
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
        fail(ConfigError(message=f"unknown kind '{kind}'", value=kind, allowed=KINDS,
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
