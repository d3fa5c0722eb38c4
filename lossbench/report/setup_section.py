"""report.md's Setup table: what ran (suite, data, model, training, seeds, cells), where (devices, machine load,
versions) and how long (the cells' compute, the runs' wall time)."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import Any

from lossbench.analysis.baseline import DEFAULT_BASELINE
from lossbench.record import STATUSES, CellRecord, Timings
from lossbench.report.aggregate import SourceAnalysis
from lossbench.report.leaderboard import LOAD_MARK
from lossbench.report.markdown_table import cell_text, duration, table
from lossbench.report.results import Results
from lossbench.store import read_runs


def distinct_values(values: Iterable[Any]) -> list[str]:
    """The distinct values that are not None, as text, in order."""
    return list(dict.fromkeys(str(v) for v in values if v is not None))


def _params(component: dict[str, Any] | None) -> str:
    if not component:
        return "—"
    params = component.get("params") or {}
    inner = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{component.get('name')}({inner})" if inner else str(component.get("name"))


def setup_table(a: SourceAnalysis, results: Results, out_dir: Path) -> list[str]:
    rows = a.rows
    recs = [results.records[i] for i in rows.sort_values("order")["id"]]
    first = recs[0]
    config = first.config
    train = config.get("train") or {}
    suite_file = a.source.suite_file
    status = rows["status"].value_counts()
    scenario_axes = [ax for ax in a.axes if ax not in DEFAULT_BASELINE and ax != "optimizer"]
    scenario = "; ".join(", ".join(a.levels[ax]) if ax == "scenario" else f"{ax}: {', '.join(a.levels[ax])}"
                         for ax in scenario_axes)
    if scenario == "none":
        scenario = ""
    devices = []
    for r in recs:
        env = r.env
        if env.device:
            threads = "?" if env.threads is None else env.threads
            devices.append(f"{env.device} ({env.device_name or '?'}, {threads} thread{'' if threads == 1 else 's'})")
    versions = []
    for key in ("lossbench", "torch", "torchvision", "python"):
        vs = distinct_values(getattr(r.env, key) for r in recs)
        if vs:
            versions.append(f"{key} {' / '.join(vs)}")
    seeds = sorted(set(int(s) for s in rows["seed"]))
    schedule = train.get("schedule") or {}
    started = sorted(str(r.started_at) for r in recs if r.started_at)
    finished = sorted(str(r.finished_at) for r in recs if r.finished_at)
    dirs = ", ".join(_results_place(d, out_dir) for d in a.source.dirs)
    counts = ", ".join(f"{int(status.get(s, 0))} {s}" for s in STATUSES)
    items = [
        ("suite", a.source.suite + (f" — {suite_file['description']}" if suite_file.get("description") else "")),
        ("dataset", a.source.dataset),
        ("data", _data_sizes(recs)),
        ("scenario", scenario or "none (the dataset as loaded)"),
        ("model", _params(config.get("model"))),
        ("training", f"{train.get('epochs', '?')} epochs, batch {_batch_sizes(recs)}, schedule "
                     f"{_params(schedule)}, precision {' / '.join(distinct_values(r.precision for r in recs)) or '?'}"),
        ("optimizer", (", ".join(a.levels.get("optimizer", [])) or "—") + _tuned_note(recs)),
        ("learning rate", _learning_rates(recs)),
        ("seeds", f"{', '.join(str(s) for s in seeds)} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''})"),
        ("cells", f"{len(a.summary)} grid points, {len(rows)} cell files: {counts}"),
        ("device", "; ".join(dict.fromkeys(devices)) or "—"),
        ("machine load", _machine_load(recs)),
        ("versions", ", ".join(versions) or "—"),
        ("git commit", ", ".join(v[:12] for v in distinct_values(r.env.git_commit for r in recs)) or "—"),
        ("compute", _compute(recs)),
        ("wall time", _wall_time(a.source.dirs)),
        ("run", f"{started[0]} → {finished[-1]}" if started and finished else "—"),
        ("results", dirs),
    ]
    return table(["", ""], ([k, cell_text(v)] for k, v in items), ["l", "l"])


def _compute(recs: list[CellRecord]) -> str:
    """The cells' time summed over cell files, and what it is made of: training, evaluation, the rest."""
    timed = [r for r in recs if r.timing.cell_s is not None]
    if not timed:
        total = sum(float(r.timing.train_time_s or 0.0) + float(r.timing.eval_time_s or 0.0) for r in recs)
        return (f"{duration(total)} of training and final evaluation in total (these cell files predate the "
                "timing of per-epoch evaluation and overhead: the run took longer)")

    def total(seconds: Callable[[Timings], float | None], shared: bool = False) -> float:
        # A pack's cells share its training time: each counts its share, so the sum is the pack's time once.
        return sum(float(seconds(r.timing) or 0.0) / (int(r.env.pack_size or 1) if shared else 1) for r in timed)

    cells, train = total(lambda t: t.cell_s), total(lambda t: t.train_time_s, True)
    evaluation, other = total(lambda t: t.eval_time_s), total(lambda t: t.overhead_s)
    text = (f"{duration(cells)} summed over {len(timed)} cell file(s): training {duration(train)}, evaluation "
            f"{duration(evaluation)} (after evaluated epochs and the final metrics), other per-cell work "
            f"{duration(other)} (building the model, loss and optimizer, choosing threads)")
    if len(timed) < len(recs):
        text += f"; {len(recs) - len(timed)} older cell file(s) without these times are not counted"
    return text


def _wall_time(dirs: list[Path]) -> str:
    """The wall time of the latest run into each results directory, split as runs.json records it."""
    parts = []
    for directory in dirs:
        runs = read_runs(directory)
        if not runs:
            continue
        r = runs[-1]
        try:
            wall, cells_s, data_s, write_s = (float(r[k]) for k in ("wall_s", "cells_s", "data_s", "write_s"))
            startup = float(r.get("startup_s") or 0.0)
        except (KeyError, TypeError, ValueError):
            continue
        jobs = int(r.get("jobs") or 1)
        other = max(wall - startup - cells_s - data_s - write_s, 0.0)
        text = (f"latest run{f' into `{Path(directory).name}/`' if len(dirs) > 1 else ''} ({r.get('started_at', '?')}"
                f"{', interrupted' if r.get('interrupted') else ''}): {duration(wall)} for {r.get('cells', '?')} "
                f"cell file(s) — " + (f"{duration(startup)} starting (imports, planning), " if startup else "")
                + f"{duration(data_s)} loading data, {duration(cells_s)} in the cells, {duration(write_s)} writing "
                f"results, {duration(other)} other; writing this report came after")
        if jobs > 1:
            text += f"; {jobs} cells trained at once, so the cells' time adds up to more than the wall time"
        if len(runs) > 1:
            text += f" ({len(runs)} runs into this directory in all)"
        parts.append(text)
    return "; ".join(parts) or "— (no runs.json: written by an older lossbench, or by no run)"


def _results_place(directory: Path, out_dir: Path) -> str:
    """Where the cell files are, said so that it still means something when the report is read elsewhere."""
    rel = _rel(directory, out_dir)
    name = Path(directory).resolve().name
    if rel == ".":
        return f"`{name}/` — the folder of this report: cells/*.json (one per cell × seed) and results.csv"
    return f"`{rel}` (relative to this report): cells/*.json (one per cell × seed) and results.csv"


def _count_range(values: list[int]) -> str:
    low, high = min(values), max(values)
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


def _data_sizes(recs: list[CellRecord]) -> str:
    """`train 1,437 · val 0 · test 360 images · 10 classes · 1×8×8 (channels×height×width)`."""
    blocks = [r.data for r in recs if r.data]
    if not blocks:
        return "— (these cell files predate recorded data sizes)"
    counts = {split: [n for b in blocks if (n := getattr(b, split)) is not None] for split in ("train", "val", "test")}
    parts = [f"{split} {_count_range([int(n) for n in found])}" for split, found in counts.items() if found]
    classes = sorted({int(b.classes) for b in blocks if b.classes is not None})
    shapes = list(dict.fromkeys("×".join(str(v) for v in b.image_size) for b in blocks if b.image_size))
    text = " · ".join(parts) + " images"
    if classes:
        text += f" · {', '.join(str(c) for c in classes)} classes"
    if shapes:
        text += f" · {', '.join(shapes)} (channels×height×width)"
    if len({int(b.train or 0) for b in blocks}) > 1:
        text += "; the training count varies with the scenario"
    return text


def _tuned_note(recs: list[CellRecord]) -> str:
    """For tuned cells: which recipe values were tuned per cell, so the optimizer line is not read as theirs."""
    paths = list(dict.fromkeys(p for r in recs if isinstance(r.config.get("tuned"), dict)
                               for p in r.config["tuned"].get("params") or {}))
    return f" before tuning; tuned per cell: {', '.join(paths)} (see Tuning)" if paths else ""


def _batch_sizes(recs: list[CellRecord]) -> str:
    """The batch size, or its range where cells differ (tuned per cell)."""
    sizes = sorted({int(b) for r in recs if (b := (r.config.get("train") or {}).get("batch_size")) is not None})
    if len(sizes) > 1:
        return f"{sizes[0]}–{sizes[-1]} (differs by cell)"
    return str(sizes[0]) if sizes else "?"


def _learning_rates(recs: list[CellRecord]) -> str:
    """The learning rate at the end of the first and of the last epoch, per optimizer setting; its range over
    the cells where they differ (tuned per cell)."""
    ends: dict[str, list[tuple[float, int, float, int]]] = {}
    for r in recs:
        history = [h for h in r.history if h.lr is not None]
        if history:
            ends.setdefault(str(r.axes.get("optimizer", "")), []).append(
                (history[0].lr, history[0].epoch, history[-1].lr, history[-1].epoch))
    seen: dict[str, str] = {}
    for key, found in ends.items():
        first, first_epoch, last, last_epoch = found[0]
        if len({(a, c) for a, _, c, _ in found}) == 1:
            seen[key] = f"{first:.3g} after epoch {first_epoch} → {last:.3g} after epoch {last_epoch}"
        else:
            low, high = min(a for a, *_ in found), max(a for a, *_ in found)
            seen[key] = (f"{low:.3g}–{high:.3g} after epoch {first_epoch} (differs by cell) → "
                         f"{min(c for *_, c, _ in found):.3g}–{max(c for *_, c, _ in found):.3g} after epoch "
                         f"{last_epoch}")
    if not seen:
        return "—"
    if len(seen) == 1:
        return next(iter(seen.values()))
    return "; ".join(f"{k}: {v}" for k, v in seen.items())


def _machine_load(recs: list[CellRecord]) -> str:
    """The 1-minute load averages seen at cell starts and ends against the usable cores, and how many cell files
    ran above them."""
    blocks = [r.load for r in recs if r.load]
    if not blocks:
        return "— (not recorded in these cell files)"
    loads = [float(v) for b in blocks for v in (b.start_load_1m, b.end_load_1m) if v is not None]
    cores = sorted({int(b.cores) for b in blocks if b.cores})
    above = sum(b.overloaded() is not None for b in blocks)
    text = (f"1-minute load average {min(loads):.2f}–{max(loads):.2f} at cell starts and ends" if loads
            else "load average not available on this OS")
    text += f", {'/'.join(str(c) for c in cores)} usable cores; "
    text += (f"{above} of {len(blocks)} cell files ran with the load above the cores: their times are marked "
             f"{LOAD_MARK} in the leaderboard" if above else "never above the cores")
    return text


def _rel(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:
        return str(path)
