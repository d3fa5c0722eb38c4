"""report.md: header, leaderboard, pivot tables, paired comparisons with the baseline, main effects, plots and
notes — one section set per source. Pure text from the analyses; deterministic for the same cell files."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lossbench.machine import overloaded
from lossbench.record import STATUSES, CellRecord
from lossbench.report.aggregate import CHANCE_MARGIN, DEFAULT_BASELINE, SourceAnalysis
from lossbench.report.measures import Measure, measure
from lossbench.report.plots import Plot
from lossbench.report.results import Results
from lossbench.report.stats import ALPHA, CONFIDENCE, PairedTest
from lossbench.store import read_runs

#: Secondary leaderboard columns, after the ranking metric (skipped when it is the ranking metric or absent).
LEADERBOARD_COLUMNS = ("test_acc", "test_top5", "test_nll", "ece", "gap", "epoch_s", "img_per_s", "peak_mem_mb")
#: Leaderboard columns measured in time: flagged where the machine was loaded while a cell ran.
TIMING_COLUMNS = ("epoch_s", "img_per_s")
LOAD_MARK = "⚠"
#: A seed's value is an outlier when it lies this many robust standard deviations from the nearest other seed of
#: its cell (a gap, not a distance from the mean: with 3 seeds, one bad seed drags the mean and median along).
OUTLIER_SCALE = 5.0
ONE_SEED = ("Only one seed per cell: no confidence intervals and no significance tests, because a t-interval needs "
            "the seed-to-seed spread, which one seed cannot show. Differences below are single draws; rerun with "
            "`--seeds 0,1,2` (finished cells are kept) to measure them.")


def cell_text(text: str) -> str:
    """Text safe inside a Markdown table cell (labels contain '|')."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: Sequence[str] | None = None) -> list[str]:
    """A GitHub-flavoured Markdown table; `align` holds 'l' or 'r' per column (default: first left, rest right)."""
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(cell_text(h) for h in headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _mean_ci(m: Measure, row: pd.Series) -> str:
    """`98.79 [97.74, 99.85]`: the mean over seeds and its 95% t-interval (cut at the metric's range)."""
    mean, low, high = row[f"{m.name}_mean"], row[f"{m.name}_ci_low"], row[f"{m.name}_ci_high"]
    if _missing(low):
        return m.show(mean)
    return f"{m.show(mean)} [{m.show(m.clip(low))}, {m.show(m.clip(high))}]"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _seeds_cell(row: pd.Series) -> str:
    done, total = int(row["n_done"]), int(row["n_seeds"])
    if done == total:
        return str(done)
    extra = [f"{int(row[k])} {k[2:]}" for k in ("n_diverged", "n_failed") if int(row[k])]
    return f"{done}/{total} ({', '.join(extra)})"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.1f} s"
    if seconds < 7200:
        return f"{seconds:,.0f} s ({seconds / 60:.1f} min)"
    return f"{seconds:,.0f} s ({seconds / 3600:.1f} h)"


def _values(records: list[CellRecord], field: str, key: str | None = None) -> list[str]:
    """The distinct values of a record field (or of one key of a dict field such as `env`), in order."""
    out = []
    for r in records:
        value: Any = getattr(r, field)
        if key is not None:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            out.append(str(value))
    return list(dict.fromkeys(out))


def _params(component: dict[str, Any] | None) -> str:
    if not component:
        return "—"
    params = component.get("params") or {}
    inner = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{component.get('name')}({inner})" if inner else str(component.get("name"))


def _header(a: SourceAnalysis, results: Results, out_dir: Path) -> list[str]:
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
        if env.get("device"):
            threads = env.get("threads", "?")
            devices.append(f"{env['device']} ({env.get('device_name') or '?'}, {threads} thread{'' if threads == 1 else 's'})")
    versions = []
    for key in ("lossbench", "torch", "torchvision", "python"):
        vs = _values(recs, "env", key)
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
                     f"{_params(schedule)}, precision {' / '.join(_values(recs, 'precision')) or '?'}"),
        ("optimizer", (", ".join(a.levels.get("optimizer", [])) or "—") + _tuned_note(recs)),
        ("learning rate", _learning_rates(recs)),
        ("seeds", f"{', '.join(str(s) for s in seeds)} ({len(seeds)} seed{'s' if len(seeds) != 1 else ''})"),
        ("cells", f"{len(a.summary)} grid points, {len(rows)} cell files: {counts}"),
        ("device", "; ".join(dict.fromkeys(devices)) or "—"),
        ("machine load", _machine_load(recs)),
        ("versions", ", ".join(versions) or "—"),
        ("git commit", ", ".join(v[:12] for v in _values(recs, "env", "git_commit")) or "—"),
        ("compute", _compute(recs)),
        ("wall time", _wall_time(a.source.dirs)),
        ("run", f"{started[0]} → {finished[-1]}" if started and finished else "—"),
        ("results", dirs),
    ]
    return table(["", ""], ([k, cell_text(v)] for k, v in items), ["l", "l"])


def _compute(recs: list[CellRecord]) -> str:
    """The cells' time summed over cell files, and what it is made of: training, evaluation, the rest."""
    timed = [r for r in recs if "cell_s" in r.timing]
    if not timed:
        total = sum(float(r.timing.get(k) or 0.0) for r in recs for k in ("train_time_s", "eval_time_s"))
        return (f"{_duration(total)} of training and final evaluation in total (these cell files predate the "
                "timing of per-epoch evaluation and overhead: the run took longer)")

    def total(key: str, shared: bool = False) -> float:
        # A pack's cells share its training time: each counts its share, so the sum is the pack's time once.
        return sum(float(r.timing.get(key) or 0.0) / (int(r.env.get("pack_size") or 1) if shared else 1)
                   for r in timed)

    cells, train, evaluation, other = total("cell_s"), total("train_time_s", True), total("eval_time_s"), \
        total("overhead_s")
    text = (f"{_duration(cells)} summed over {len(timed)} cell file(s): training {_duration(train)}, evaluation "
            f"{_duration(evaluation)} (after evaluated epochs and the final metrics), other per-cell work "
            f"{_duration(other)} (building the model, loss and optimizer, choosing threads)")
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
                f"{', interrupted' if r.get('interrupted') else ''}): {_duration(wall)} for {r.get('cells', '?')} "
                f"cell file(s) — " + (f"{_duration(startup)} starting (imports, planning), " if startup else "")
                + f"{_duration(data_s)} loading data, {_duration(cells_s)} in the cells, {_duration(write_s)} writing "
                f"results, {_duration(other)} other; writing this report came after")
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
    parts = [f"{split} {_count_range([int(b[split]) for b in blocks if split in b])}"
             for split in ("train", "val", "test") if any(split in b for b in blocks)]
    classes = sorted({int(b["classes"]) for b in blocks if "classes" in b})
    shapes = list(dict.fromkeys("×".join(str(v) for v in b["image_size"]) for b in blocks if b.get("image_size")))
    text = " · ".join(parts) + " images"
    if classes:
        text += f" · {', '.join(str(c) for c in classes)} classes"
    if shapes:
        text += f" · {', '.join(shapes)} (channels×height×width)"
    if len({int(b.get('train', 0)) for b in blocks}) > 1:
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
        history = [h for h in r.history if h.get("lr") is not None]
        if history:
            ends.setdefault(str(r.axes.get("optimizer", "")), []).append(
                (history[0]["lr"], history[0]["epoch"], history[-1]["lr"], history[-1]["epoch"]))
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
    loads = [float(b[k]) for b in blocks for k in ("start_load_1m", "end_load_1m") if b.get(k) is not None]
    cores = sorted({int(b["cores"]) for b in blocks if b.get("cores")})
    above = sum(overloaded(b) is not None for b in blocks)
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


def _leaderboard(a: SourceAnalysis, results: Results) -> list[str]:
    m = a.metric
    summary = a.summary
    extra = [measure(c) for c in LEADERBOARD_COLUMNS if c != m.name and f"{c}_mean" in summary.columns]
    loaded = _loaded_seeds(a, results)
    chance = set(a.at_chance())
    headers = ["#", "cell", f"{m.heading}, mean [95% CI]", "seeds", *[x.heading for x in extra]]
    rows = []
    for _, row in a.ranked().iterrows():
        name = cell_text(row["label"]) + (" (baseline)" if row["label"] == a.baseline else "") + (
            " ✗ at chance" if row["label"] in chance else "")
        flag = f" {LOAD_MARK}" if row["label"] in loaded else ""
        rows.append([int(row["rank"]), name, _mean_ci(m, row), _seeds_cell(row),
                     *[x.show(row[f"{x.name}_mean"]) + (flag if x.name in TIMING_COLUMNS else "") for x in extra]])
    lines = [f"Ranked by {m.heading} ({'higher' if m.higher_is_better is not False else 'lower'} is better). "
             "In brackets the 95% t-interval of the mean over seeds (n−1 degrees of freedom); the other columns are "
             "means over the same seeds. Gap = clean training accuracy − test accuracy (overfitting). Seconds per epoch "
             "count the training and the evaluation after the epoch (averaged over the epochs, evaluated or not)."
             + (" Intervals are cut at the metric's possible range." if m.bounds else "")]
    if m.higher_is_better is None:
        lines.append(f"(Whether higher or lower `{m.name}` is better is not known to lossbench; ranked high to low.)")
    if a.max_seeds == 1:
        lines += ["", f"> {ONE_SEED}"]
    lines.append("")
    lines += table(headers, rows, ["r", "l", "r", "r"] + ["r"] * len(extra)) if rows else [
        "No cell finished: nothing to rank."]
    if chance:
        lines += ["", f"✗ At chance: {len(chance)} cell(s) have a {_chance_text(a)}: they learned nothing usable. "
                      "They stay ranked here, but the headline's best cell and the main effects leave them out."]
    if loaded and any(x.name in TIMING_COLUMNS for x in extra):
        worst = max(load for seeds in loaded.values() for _, load, _ in seeds)
        lines += ["", f"{LOAD_MARK} Times measured on a loaded machine: while {len(loaded)} of these cells ran, the "
                      f"1-minute load average (up to {worst:.1f}) exceeded the cores the run could use, so their "
                      "time per epoch and throughput are inflated by waiting and do not compare with the others "
                      "(see *Machine load* under Setup)."]
    lines += ["", "**Diverged and failed cells** (never hidden; their seeds are left out of every statistic):", ""]
    if a.unranked.empty:
        lines.append("None: every cell finished.")
    else:
        bad = []
        for _, r in a.unranked.iterrows():
            when = f"epoch {int(r['diverged_epoch'])}" if not _missing(r["diverged_epoch"]) else "—"
            bad.append([cell_text(r["label"]), int(r["seed"]), r["status"], when, cell_text(r["error"] or "—"),
                        f"`{r['id']}`"])
        lines += table(["cell", "seed", "status", "when", "error", "cell id"], bad,
                       ["l", "r", "l", "l", "l", "l"])
    return lines


def _summary_line(a: SourceAnalysis) -> str:
    """One sentence a reader can stop at: the best cell, and whether it is told apart from its baseline — never
    stronger than the data: with fewer than two paired seeds it says that no test was possible."""
    m = a.metric
    ranked = a.ranked()
    if ranked.empty:
        return "**In short:** no cell finished, so there is nothing to rank."
    chance = a.at_chance()
    best = a.best()
    if best is None:
        return (f"**In short:** every finished cell is at chance level ({_chance_text(a)}): no cell learned "
                "anything usable, so none is named best.")
    seeds = int(best["n_done"])
    head = (f"**In short:** the best cell by {m.title} is `{best['label']}` ({m.show(best[f'{m.name}_mean'])}"
            f"{' ' + m.unit if m.unit and m.unit != '%' else m.unit}, {seeds} seed{'s' if seeds != 1 else ''}"
            + (f"; {len(chance)} cell(s) at chance level left out" if chance else "") + ")")
    comparisons = a.comparisons
    if not comparisons:
        return head + ("; there is no other cell to compare it with." if a.baseline is not None
                       else "; there is no baseline to compare it with.")
    if not any(c.test.tested for c in comparisons):
        most = max(c.test.n for c in comparisons)
        if most < 2:
            return (head + f"; **no test was possible**: each comparison with the baseline rests on {most} paired "
                    "seed(s), and a paired t-test needs two or more, so the differences below are single draws. "
                    f"Run more seeds to test them: the same `lossbench run` of suite `{a.source.suite}` with "
                    "`--seeds 0,1,2` (finished cells are kept).")
        return head + "; no comparison with the baseline could be tested (the paired comparison says why)."
    baselines = list(dict.fromkeys(c.baseline for c in comparisons))
    if best["label"] in baselines:
        own = [c for c in comparisons if c.baseline == best["label"]]
        tested = [c for c in own if c.test.tested]
        worse = sum(c.verdict == "worse" for c in tested)
        which = "the baseline" if len(baselines) == 1 else "a baseline (of the cells that share its other axes)"
        text = (f", which is {which}; {worse} of the {len(tested)} cell(s) tested against it "
                f"{'is' if len(tested) == 1 else 'are'} detectably worse (paired t-test, Holm-adjusted, α = {ALPHA})")
        if len(own) > len(tested):
            text += f"; {len(own) - len(tested)} could not be tested (too few paired seeds)"
        return head + text + "."
    comparison = next((c for c in comparisons if c.label == best["label"]), None)
    if comparison is None:
        return head + "; it was not compared with a baseline."
    base = comparison.baseline
    diff, interval = _diff(m, comparison.adjusted or comparison.test)
    unit = f" {m.diff_unit}" if m.diff_unit else ""
    level = f"{comparison.confidence:.1%} Holm-adjusted CI" if comparison.confidence else "CI"
    evidence = f"Δ {diff}{unit}" + (f", {level} {interval}" if interval != "—" else "") + (
        f", p (Holm) {_p(comparison.p_holm)}" if comparison.p_holm is not None else "")
    if comparison.verdict in ("better", "worse"):
        reading = f"it is detectably {comparison.verdict} than the baseline `{base}`"
    elif comparison.verdict.startswith("no detectable"):
        reading = f"it is **not distinguishable** from the baseline `{base}` with {comparison.test.n} paired seeds"
    else:
        reading = f"against the baseline `{base}`: {comparison.verdict}"
    return f"{head}; {reading} ({evidence})."


def _chance_text(a: SourceAnalysis) -> str:
    """`within 2 points of chance, 1/10 = 10.00%`."""
    chance = a.chance
    where = f", 1/{round(1 / chance)} = {chance * 100:.2f}%" if chance else ""
    return f"test accuracy within {CHANCE_MARGIN * 100:g} points of chance{where}"


def _loaded_seeds(a: SourceAnalysis, results: Results) -> dict[str, list[tuple[int, float, int]]]:
    """Per cell label, the done seeds that ran while the load average exceeded the usable cores:
    (seed, highest load seen at the seed's start or end, cores)."""
    out: dict[str, list[tuple[int, float, int]]] = {}
    done = a.rows[a.rows["status"] == "done"].sort_values("seed")
    for rid, label, seed in zip(done["id"], done["label"], done["seed"]):
        load = results.records[rid].load
        worst = overloaded(load)
        if worst is not None:
            out.setdefault(label, []).append((int(seed), worst, int(load["cores"])))
    return out


def _robust_scale(values: pd.DataFrame) -> float:
    """1.4826 × the median absolute deviation of every value from its cell's median, over the whole grid: the
    typical seed-to-seed spread (a standard deviation for normal noise) that one bad seed cannot inflate."""
    residuals = values.sub(values.median(axis=1), axis=0).abs().stack()
    return 1.4826 * float(residuals.median()) if len(residuals) else math.nan


def _outlying_seed(values: pd.Series, threshold: float) -> Any:
    """The seed (index) whose value is furthest from the nearest other value, if that gap exceeds `threshold`;
    None when there are fewer than 3 values or no gap is that large. At most one per cell: with 3 seeds and one
    bad draw, the two others are far from it too but close to each other."""
    if len(values) < 3:
        return None
    # The nearest other value is a neighbour in sorted order: O(n log n), where comparing every pair took
    # 45 s on a report of 100 cells × 100 seeds.
    array = values.to_numpy(dtype=float)
    order = np.argsort(array, kind="stable")
    steps = np.diff(array[order])
    nearest = np.full(len(array), np.inf)
    nearest[:-1] = steps
    nearest[1:] = np.minimum(nearest[1:], steps)
    gaps = pd.Series(np.empty(len(array)), index=values.index)
    gaps.iloc[order] = nearest
    seed = gaps.idxmax()
    return seed if gaps[seed] > threshold else None


def _per_seed(a: SourceAnalysis) -> list[str]:
    m = a.metric
    rows = a.rows[a.rows["status"] == "done"].dropna(subset=[m.name])
    if rows.empty:
        return ["No cell finished: no per-seed values."]
    if int(a.summary["n_seeds"].max()) <= 1:
        return [f"One seed per cell: the leaderboard above shows every value of {m.title}."]
    values = rows.pivot_table(index="label", columns="seed", values=m.name, aggfunc="first")
    order = [x for x in a.summary["label"] if x in values.index]
    values = values.loc[order]
    seeds = sorted(int(c) for c in values.columns)
    scale = _robust_scale(values) if len(seeds) >= 3 else math.nan
    status = a.rows.set_index(["label", "seed"])["status"].to_dict()
    flagged = 0
    table_rows = []
    for label in order:
        present = values.loc[label].dropna()
        outlier = _outlying_seed(present, OUTLIER_SCALE * scale) if scale > 0 else None
        flagged += outlier is not None
        cells = []
        for seed in seeds:
            value = values.loc[label].get(seed)
            if _missing(value):
                cells.append(str(status.get((label, seed), "—")))
                continue
            cells.append(f"**{m.show(value)}** ⚠" if seed == outlier else m.show(value))
        spread = m.show(present.max() - present.min()) if len(present) > 1 else "—"
        table_rows.append([cell_text(label), *cells, spread])
    unit = f" {m.diff_unit}" if m.diff_unit else ""
    lines = [f"{m.title.capitalize()} of every seed{f' ({m.unit})' if m.unit else ''}, cells in leaderboard order; "
             "range = highest − lowest seed."]
    if scale > 0:
        lines[0] += (f" ⚠ marks an outlier: the seed of a cell (3 seeds or more) that lies furthest from its other "
                     f"seeds, when it is further than {OUTLIER_SCALE:g} × {m.show(scale)}{unit} from all of them, where "
                     f"{m.show(scale)}{unit} is the grid's typical seed-to-seed spread (1.4826 × the median absolute "
                     "deviation of every seed from its cell's median)"
                     + (f" — {flagged} here: it pulls its cell's mean and widens its interval." if flagged
                        else "; none here."))
    if a.rows.groupby("label")["seed"].nunique().nunique() > 1:
        lines[0] += (" Cells ran different numbers of seeds (as adaptive seeding decides): — marks a seed a cell "
                     "did not run.")
    return lines + [""] + table(["cell", *[f"seed {s}" for s in seeds], "range"], table_rows)


def _pivots(a: SourceAnalysis) -> list[str]:
    m = a.metric
    lines: list[str] = []
    if not a.pivots:
        return ["No pivot table: the grid varies the loss alone." if len(a.levels.get("loss", [])) > 1
                else "No pivot table: the grid has a single loss and no other axis with two or more levels."]
    for p in a.pivots:
        others = [x for x in a.axes if x not in (p.rows, p.columns) and len(a.levels[x]) > 1]
        averaged = f", averaged over {', '.join(others)}" if others else ""
        lines += [f"Mean {m.heading} by {p.rows} × {p.columns}{averaged}:", ""]
        rows = [[cell_text(idx), *[m.show(v) for v in p.table.loc[idx]]] for idx in p.table.index]
        lines += table([f"{p.rows} / {p.columns}", *[str(c) for c in p.table.columns]], rows)
        lines.append("")
    return lines[:-1]


def _diff(m: Measure, t: PairedTest) -> tuple[str, str]:
    """Δ and its interval in display units; the interval is cut at the largest possible difference."""
    if _missing(t.mean_diff):
        return "—", "—"
    if t.low is None or t.high is None or not t.tested:
        return m.show(t.mean_diff, signed=True), "—"
    span = m.bounds[1] - m.bounds[0] if m.bounds else math.inf
    low, high = max(t.low, -span), min(t.high, span)
    return m.show(t.mean_diff, signed=True), f"[{m.show(low, signed=True)}, {m.show(high, signed=True)}]"


def _comparisons(a: SourceAnalysis) -> list[str]:
    m = a.metric
    unit = f" ({m.diff_unit})" if m.diff_unit else ""
    lines = []
    if a.baseline_note:
        lines += [f"Note: {a.baseline_note}.", ""]
    if not a.comparisons:
        return lines + ["No comparison: there is no other cell to compare with the baseline."]
    baselines = {c.baseline for c in a.comparisons}
    tested = sum(c.test.tested for c in a.comparisons)
    if len(baselines) == 1:
        lines.append(f"Baseline: `{next(iter(baselines))}`.")
    unit_text = f", in {m.diff_unit}" if m.diff_unit else ""
    delta = f"Δ = cell − baseline in {m.title}{unit_text}, paired on seed over the seeds both cells finished"
    if tested:
        lines.append(f"{delta}; two-sided p of the paired t-test, then Holm-adjusted over the {tested} tested "
                     f"comparison(s) of this table; verdict at α = {ALPHA} after Holm. The interval is Holm-adjusted "
                     "too: a paired t interval at the level of the comparison's Holm step (shown in brackets; at "
                     f"least {CONFIDENCE:.0%}), so it excludes 0 exactly when the verdict is better or worse.")
        seeds = a.source.suite_file.get("seeds")
        target = seeds.get("target") if isinstance(seeds, dict) else None
        if isinstance(target, dict) and target.get("metric", "test_acc") == m.name:
            lines[-1] += (" Adaptive seeding chose each cell's seeds by stopping on its paired interval of this "
                          "metric; the intervals and p-values here do not account for that stopping and can be "
                          "optimistic (the Adaptive seeding section's interval does: docs/adaptive-seeds.md).")
    else:
        lines.append(f"{delta}. No comparison could be tested; the verdicts say why.")
    lines.append("")
    headers = ["cell", *(["baseline"] if len(baselines) > 1 else []), f"Δ {m.title}{unit}",
               f"Holm-adjusted CI{unit}", "p", "p (Holm)", "seeds", "verdict"]
    rows = []
    for c in a.comparisons:
        diff, interval = _diff(m, c.adjusted or c.test)
        if c.confidence is not None and interval != "—":
            interval += f" ({c.confidence:.1%})"
        rows.append([cell_text(c.label), *([cell_text(c.baseline)] if len(baselines) > 1 else []), diff, interval,
                     _p(c.test.p), _p(c.p_holm), c.test.n, c.verdict])
    align = ["l", *(["l"] if len(baselines) > 1 else []), "r", "r", "r", "r", "r", "l"]
    return lines + table(headers, rows, align)


def _effects(a: SourceAnalysis) -> list[str]:
    m = a.metric
    unit = f" ({m.diff_unit})" if m.diff_unit else ""
    if not a.effects:
        return ["No main effects: no axis has two or more levels."]
    lines = [f"Each level's mean {m.heading} over its cells (every cell weighs the same, whatever the other axes) "
             "and Δ, its difference from the reference level's mean. The 95% interval pairs the two levels on seed "
             "and uses the seeds on which every cell involved finished (column seeds); where some seeds diverged or "
             "failed it need not be centred on Δ. These intervals are unadjusted: each holds at 95% on its own, not "
             "jointly."]
    if a.at_chance():
        lines[-1] += (f" Cells at chance level are left out ({', '.join(f'`{x}`' for x in a.at_chance())}): a cell "
                      "that learned nothing would pull its levels down whatever they do.")
    lines.append("")
    for axis, effects in a.effects.items():
        ref = effects[0].reference
        lines += [f"**{axis}** (reference: `{ref}`)", ""]
        rows = []
        for e in effects:
            if e.diff is None:
                diff, interval, seeds = "reference", "", ""
            else:
                diff = m.show(e.delta, signed=True)
                interval = _diff(m, e.diff)[1]
                seeds = str(e.diff.n)
            rows.append([cell_text(e.level), e.cells, m.show(e.mean), diff, interval, seeds])
        lines += table(["level", "cells", f"mean {m.heading}", f"Δ vs reference{unit}", f"95% CI{unit}, unadjusted",
                        "seeds"],
                       rows)
        lines.append("")
    return lines[:-1]


def _plots(plots: list[Plot]) -> list[str]:
    if not plots:
        return ["No plots: no cell finished."]
    lines = []
    for p in plots:
        lines += [f"![{p.title}]({p.path})", "", f"*{p.caption}*", ""]
    return lines[:-1]


def _notes(a: SourceAnalysis, results: Results) -> list[str]:
    notes: list[str] = []
    partial = a.summary[(a.summary["n_done"] > 0) & (a.summary["n_done"] < a.summary["n_seeds"])]
    if len(partial):
        notes.append(f"{len(partial)} cell(s) are ranked on fewer seeds than they ran, because the other seeds "
                     "diverged or failed; their means describe only the seeds that finished.")
    recs = [results.records[i] for i in a.rows["id"]]
    for path, what in ((("env", "git_commit"), "lossbench commits"), (("env", "lossbench"), "lossbench versions"),
                       (("env", "torch"), "torch versions"), (("env", "device_name"), "devices")):
        found = _values(recs, *path)
        if len(found) > 1:
            notes.append(f"The cells ran on {len(found)} different {what} (see Setup): where what a cell does "
                         "changed in between, their numbers are not comparable.")
    by_note: dict[str, list[str]] = {}
    for rid in a.rows.sort_values("order")["id"]:
        rec = results.records[rid]
        for note in rec.notes:
            labels = by_note.setdefault(str(note), [])
            if rec.label not in labels:
                labels.append(rec.label)
    for note, labels in by_note.items():
        notes.append(f"{note} (cells: {', '.join(f'`{x}`' for x in labels)})")
    return [f"- {n}" for n in notes]


def render(analyses: list[SourceAnalysis], results: Results, plots: dict[str, list[Plot]], out_dir: Path,
           tuning_plots: dict[str, list[Plot]] | None = None,
           shift_plots: dict[str, list[Plot]] | None = None) -> str:
    """The whole report.md; `plots` maps a source name to its figures (paths relative to out_dir), and
    `tuning_plots` and `shift_plots` to those of its Tuning and Under shift sections."""
    suites = list(dict.fromkeys(a.source.suite for a in analyses))
    m = analyses[0].metric
    lines = [f"# lossbench report: {', '.join(suites)}", ""]
    multi = len(analyses) > 1
    if multi:
        lines += [f"{len(analyses)} sources side by side: " + ", ".join(f"**{a.source.name}**" for a in analyses)
                  + ". Each is analysed on its own below (its own baseline, its own Holm family).", ""]
        lines += ["## Side by side", ""] + _side_by_side(analyses) + [""]
    h = "###" if multi else "##"
    for a in analyses:
        if multi:
            lines += [f"## {a.source.name}", ""]
        lines += [_summary_line(a), ""]
        sections = [
            ("Setup", _header(a, results, out_dir)),
            ("Leaderboard", _leaderboard(a, results)),
            (f"Every seed ({m.title})", _per_seed(a)),
            ("Pivot tables", _pivots(a)),
            (f"Paired comparison with the baseline ({m.title})", _comparisons(a)),
            ("Main effects", _effects(a)),
            ("Plots", _plots(plots.get(a.source.name, []))),
        ]
        from lossbench.report.seeding import adaptive_rule, section

        rule = adaptive_rule(a.source.suite_file)
        if rule is not None:
            sections.insert(4, ("Adaptive seeding", section(a, rule)))
        from lossbench.report import tuning

        study = tuning.load_study(a, results)
        if study is not None:
            figures = (tuning_plots or {}).get(a.source.name, [])
            sections.insert(2, ("Tuning", tuning.section(study, analyses, figures)))
            caveat = tuning.caveat(study)
            if caveat:
                lines += [caveat, ""]
        from lossbench.report import shift

        at = next(i for i, (title, _) in enumerate(sections) if title == "Plots")
        sections[at:at] = shift.sections(a, results.records, (shift_plots or {}).get(a.source.name, []))
        notes = _notes(a, results)
        if notes:
            sections.append(("Notes", notes))
        for title, body in sections:
            lines += [f"{h} {title}", "", *body, ""]
    if results.warnings:
        lines += ["## Files left out", "", *[f"- {w}" for w in results.warnings], ""]
    return "\n".join(lines).rstrip() + "\n"


def _side_by_side(analyses: list[SourceAnalysis]) -> list[str]:
    m = analyses[0].metric
    labels: list[str] = []
    for a in analyses:
        labels += [x for x in a.summary["label"] if x not in labels]
    per_source = [a.summary.set_index("label") for a in analyses]
    rows = []
    for label in labels:
        row = [cell_text(label)]
        for s in per_source:
            row.append(_mean_ci(m, s.loc[label]) + f" (#{int(s.loc[label, 'rank'])})"
                       if label in s.index and not _missing(s.loc[label, "rank"]) else "—")
        rows.append(row)
    return [f"{m.heading}, mean [95% CI] (rank within the source):", "",
            *table(["cell", *[a.source.name for a in analyses]], rows)]
