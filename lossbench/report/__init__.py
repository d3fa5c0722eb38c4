"""`lossbench report`: turn results directories into a report people can trust. Reads only files.

    from lossbench.report import write_report
    write_report([Path("results/smoke")])                 # results/smoke/report.md, summary.csv, plots/*.png

Formats: `md` (report.md with its plots and summary.csv), `csv` (summary.csv), `latex` (leaderboard.tex),
`json` (report.json). Where they go: `out` as a directory, or as a file whose suffix matches the format; by
default the one results directory given (several directories need an explicit `out`).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

from lossbench.errors import ForeignDirectoryError, Location, ReportError
from lossbench.atomic_write import atomic_write_text
from lossbench.store import MARKER, MARKER_TEXT, check_results_dir

__all__ = [
    "FORMATS", "ReportError", "Results", "SourceAnalysis", "analyse", "load_results", "write_report",
]

# Imported on first use: they bring pandas and scipy.stats (seconds), which the commands that only need the
# report's metric names (`run`'s and `validate`'s option checks) must not pay for at start-up.
_LAZY = {"SourceAnalysis": "aggregate", "analyse": "aggregate", "Results": "results", "load_results": "results"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"lossbench.report.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Format → (default file name, accepted suffixes of an --out file).
FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "md": ("report.md", (".md", ".markdown")),
    "csv": ("summary.csv", (".csv",)),
    "latex": ("leaderboard.tex", (".tex",)),
    "json": ("report.json", (".json",)),
}


def _destination(dirs: list[Path], out: Path | None, fmt: str) -> Path:
    default_name, suffixes = FORMATS[fmt]
    if out is None:
        if len(dirs) != 1:
            raise ReportError(message=f"{len(dirs)} results directories merge into one report: say where it goes "
                                      "with --out DIR")
        return Path(dirs[0]) / default_name
    out = Path(out)
    if out.suffix.lower() in suffixes:
        return out
    known = {s for _, (_, sfx) in FORMATS.items() for s in sfx}
    if out.suffix.lower() in known:
        raise ReportError(message=f"--out {out} names a {out.suffix} file, but the format is {fmt}",
                          details=[f"use --format matching the file, or a directory, or a file ending in "
                                   f"{' or '.join(suffixes)}"])
    return out / default_name


def _claim(directory: Path, out: Path) -> None:
    """Check that lossbench may write files of its own choosing (report.md, summary.csv, plots/) into
    `directory`, the --out directory or the one an --out file sits in, and mark it as lossbench's. Another
    program's directory is refused: a named file of a single-file format is the only thing written elsewhere."""
    try:
        check_results_dir(directory)
    except ForeignDirectoryError as exc:
        exc.location = Location(option=f"--out {out}")
        exc.details = [f"give --out a new directory, e.g. --out {directory / 'lossbench-report'}, or name one file "
                       "with --format csv, latex or json"]
        raise
    if not (directory / MARKER).is_file():
        atomic_write_text(directory / MARKER, MARKER_TEXT)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "source"


def write_report(dirs: list[Path], out: Path | None = None, *, baseline: str | None = None,
                 metric: str = "test_acc", fmt: str = "md", plots: bool = True,
                 columns: str | None = None) -> list[Path]:
    """Read the results directories and write the report in `fmt`; return the files written, main file first.
    `columns` (comma-separated metric names) chooses the LaTeX table's columns after the ranking metric.

    Raises ReportError for a missing or empty directory, an unknown metric or baseline, or a bad destination.
    """
    from lossbench.report import formats, markdown
    from lossbench.report.aggregate import analyse
    from lossbench.report.results import load_results

    if fmt not in FORMATS:
        raise ReportError(message=f"unknown report format '{fmt}'", value=fmt, allowed=list(FORMATS))
    dirs = [Path(d) for d in dirs]
    results = load_results(dirs)
    analyses = analyse(results, metric, baseline)
    target = _destination(dirs, out, fmt)
    out_dir = target.parent
    if out is not None and (fmt == "md" or target != Path(out)):
        _claim(out_dir, Path(out))
    written = [target]
    if fmt == "csv":
        atomic_write_text(target, formats.summary_csv(analyses))
    elif fmt == "json":
        atomic_write_text(target, formats.report_json(analyses, results))
    elif fmt == "latex":
        atomic_write_text(target, formats.leaderboard_latex(analyses, columns, results))
    else:
        figures, tuning_figures, shift_figures = {}, {}, {}
        if plots:
            from lossbench.report import shift, tuning_plots
            from lossbench.report.plots import make_plots
            from lossbench.report.tuning_files import load_study

            multi = len(analyses) > 1
            for a in analyses:
                subdir = f"plots/{_slug(a.source.name)}" if multi else "plots"
                figures[a.source.name] = make_plots(a, results.records, out_dir, subdir)
                study = load_study(a, results)
                if study is not None:
                    tuning_figures[a.source.name] = tuning_plots.make_plots(study, out_dir, subdir)
                shift_figures[a.source.name] = shift.make_plots(a, results.records, out_dir, subdir)
        atomic_write_text(target, markdown.render(analyses, results, figures, out_dir, tuning_figures,
                                                  shift_figures))
        summary = out_dir / FORMATS["csv"][0]
        atomic_write_text(summary, formats.summary_csv(analyses))
        written.append(summary)
        written += [out_dir / p.path for plist in (*figures.values(), *tuning_figures.values(),
                                                       *shift_figures.values()) for p in plist]
    return written
