"""A tuned source's Study read from files only: `<results>/tuning.csv` (one row per trial: cell, cell_id, trial,
state, one column per tuned path, the tuning metric, epochs), the final cells' `tuned` blocks (the chosen trial,
budget, seeds, sampler, pruner) and the `tune:` block of `<results>/suite.yaml` (the ranges), else the ranges
Optuna recorded in `<results>/tuning.db`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from lossbench.analysis.measures import measure
from lossbench.record import CellRecord, DataSizes
from lossbench.report.aggregate import SourceAnalysis
from lossbench.report.markdown_table import missing
from lossbench.report.results import Results, is_tuned
from lossbench.report.tuning_study import CellTuning, Range, Study, plain_value


TUNING_CSV = "tuning.csv"
#: Optuna's SQLite study storage beside the cell files (read only as a fallback for the ranges).
STUDY_DB = "tuning.db"
#: tuning.csv columns before the tuned paths; after them come the tuning metric and `epochs`.
LEADING_COLUMNS = ("cell", "cell_id", "trial", "state")


def read_space(suite_file: dict[str, Any]) -> dict[str, Range]:
    """The ranges of the `tune.space` block of a parsed suite.yaml ({} when it has none)."""
    tune = suite_file.get("tune") if isinstance(suite_file, dict) else None
    space = tune.get("space") if isinstance(tune, dict) else None
    out: dict[str, Range] = {}
    for path, spec in (space or {}).items():
        if not isinstance(spec, dict):
            continue
        if spec.get("choices") is not None:
            out[str(path)] = Range(str(path), choices=tuple(spec["choices"]))
        elif spec.get("low") is not None and spec.get("high") is not None:
            out[str(path)] = Range(str(path), float(spec["low"]), float(spec["high"]), bool(spec.get("log")))
    return out


def read_study_space(path: Path) -> dict[str, Range]:
    """The ranges the trials were drawn from, as Optuna recorded them in the study storage at `path` (the last
    recorded distribution of each parameter); {} when the file is absent or unreadable. Opened read-only."""
    import sqlite3

    if not path.is_file():
        return {}
    try:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
        from optuna.distributions import json_to_distribution

        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT param_name, distribution_json FROM trial_params ORDER BY param_id").fetchall()
        out: dict[str, Range] = {}
        for name, text in rows:
            dist = json_to_distribution(text)
            if isinstance(dist, CategoricalDistribution):
                out[name] = Range(name, choices=tuple(dist.choices))
            elif isinstance(dist, (FloatDistribution, IntDistribution)):
                out[name] = Range(name, float(dist.low), float(dist.high), bool(dist.log))
        return out
    except Exception:  # noqa: BLE001 — any unreadable storage means the same: the ranges are not known
        return {}


def _read_csv(directory: Path, problems: list[str]) -> pd.DataFrame | None:
    path = directory / TUNING_CSV
    if not path.exists():
        return None
    try:
        frame = pd.read_csv(path, dtype={"cell": str, "cell_id": str, "state": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        problems.append(f"{path} could not be read ({type(exc).__name__}); the trials are not shown")
        return None
    missing = [c for c in (*LEADING_COLUMNS, "epochs") if c not in frame.columns]
    if missing:
        problems.append(f"{path} lacks the column(s) {', '.join(missing)}; the trials are not shown")
        return None
    frame["trial"] = pd.to_numeric(frame["trial"], errors="coerce")
    frame = frame.dropna(subset=["trial"])
    frame["trial"] = frame["trial"].astype(int)
    return frame


def _tuned_blocks(records: list[CellRecord]) -> list[dict[str, Any]]:
    return [r.config["tuned"] for r in records if is_tuned(r)]


def _first(blocks: list[dict[str, Any]], key: str, default: Any = None) -> Any:
    return next((b[key] for b in blocks if b.get(key) is not None), default)


def load_study(analysis: SourceAnalysis, results: Results) -> Study | None:
    """The tuning of a tuned source (its cells carry `tuned` blocks); None for a source that was not tuned."""
    source = analysis.source
    if not source.tuned:
        return None
    recs = [results.records[i] for i in analysis.rows.sort_values("order")["id"]]
    blocks = _tuned_blocks(recs)
    tune = source.suite_file.get("tune") if isinstance(source.suite_file.get("tune"), dict) else {}
    problems: list[str] = []
    frames, files = [], []
    for directory in source.dirs:
        frame = _read_csv(Path(directory), problems)
        if frame is not None:
            frames.append(frame)
            files.append(Path(directory) / TUNING_CSV)
    trials = (pd.concat(frames, ignore_index=True).drop_duplicates(subset=["cell_id", "trial"], keep="last")
              if frames else pd.DataFrame(columns=[*LEADING_COLUMNS, "epochs"]))
    if not frames:
        problems.append(f"no {TUNING_CSV} beside the cell files: the trials themselves cannot be shown")
    metric_name = str(_first(blocks, "metric") or tune.get("metric") or "")
    if not metric_name:
        metric_name = next((c for c in reversed(trials.columns[:-1]) if c not in LEADING_COLUMNS), "val_acc")
    direction = _first(blocks, "direction") or ("minimize" if measure(metric_name).higher_is_better is False
                                                else "maximize")
    space = read_space(source.suite_file)
    space_from = "`tune.space` in suite.yaml"
    if not space:
        # suite.yaml is the latest run's: an untuned run into the same directory replaced it. The study's own
        # record of the ranges is still in tuning.db.
        for directory in source.dirs:
            space = space or read_study_space(Path(directory) / STUDY_DB)
        space_from = f"the study's record in {STUDY_DB}: suite.yaml is of a later run without `tune:`"
    paths = [c for c in trials.columns if c not in (*LEADING_COLUMNS, metric_name, "epochs")]
    for b in blocks:
        paths += [p for p in (b.get("params") or {}) if p not in paths]
    paths += [p for p in space if p not in paths]
    if not space:
        problems.append(f"neither suite.yaml nor {STUDY_DB} records the ranges (`tune.space`): no edge-of-range "
                        "check")
    budget = _first(blocks, "trials", tune.get("trials"))
    cells = _cells(trials, recs, metric_name, direction)
    train = (recs[0].config.get("train") or {}) if recs else {}
    return Study(
        analysis=analysis, metric=measure(metric_name), direction=direction,
        budget=int(budget) if budget is not None else None,
        sampler=str(_first(blocks, "sampler", tune.get("sampler", "?"))),
        sampler_seed=tune.get("seed"), pruner=str(_first(blocks, "pruner", tune.get("pruner", "?"))),
        paths=paths, space=space, cells=cells,
        tuning_seeds=sorted({int(s) for b in blocks for s in (b.get("tuning_seeds") or [])}),
        verdict_seeds=sorted({r.seed for r in recs}),
        data=next((r.data for r in recs if r.data), DataSizes()),
        epochs_per_trial=train.get("epochs"), csv_files=files, problems=problems, space_from=space_from,
    )


def _cells(trials: pd.DataFrame, recs: list[CellRecord], metric: str, direction: str) -> list[CellTuning]:
    """One CellTuning per grid cell, in the order of tuning.csv, then of the final cells not in it."""
    finals: dict[str, list[CellRecord]] = {}
    for r in recs:
        if is_tuned(r):
            finals.setdefault(str(r.config["tuned"].get("cell_id", r.label)), []).append(r)
    ids = list(dict.fromkeys([*trials["cell_id"].astype(str), *finals]))
    out = []
    for cell_id in ids:
        rows = trials[trials["cell_id"].astype(str) == cell_id].sort_values("trial").reset_index(drop=True)
        final = sorted(finals.get(cell_id, []), key=lambda r: r.seed)
        label = final[0].label if final else str(rows["cell"].iloc[0])
        loss = final[0].axes.get("loss") if final else None
        tuned = final[0].config["tuned"] if final else None
        if tuned is not None:
            chosen_trial, chosen_value = tuned.get("trial"), tuned.get("value")
            params = dict(tuned.get("params") or {})
        else:
            chosen_trial, chosen_value, params = _best_trial(rows, metric, direction)
        out.append(CellTuning(cell_id, label, str(loss or label.split(" | ")[0]), rows, final,
                              None if chosen_trial is None else int(chosen_trial),
                              None if chosen_value is None else float(chosen_value), params))
    return out


def _best_trial(rows: pd.DataFrame, metric: str, direction: str) -> tuple[int | None, float | None, dict[str, Any]]:
    if metric not in rows:
        return None, None, {}
    values = pd.to_numeric(rows[metric], errors="coerce").where(rows["state"] == "complete")
    if values.notna().sum() == 0:
        return None, None, {}
    best = values.idxmax() if direction == "maximize" else values.idxmin()
    row = rows.loc[best]
    skip = (*LEADING_COLUMNS, metric, "epochs")
    params = {k: plain_value(v) for k, v in row.items() if k not in skip and not missing(v)}
    return int(row["trial"]), float(values[best]), params
