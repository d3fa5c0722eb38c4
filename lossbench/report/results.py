"""Read results directories into one table: one row per cell file, grouped into sources and grid points.

A *source* is one suite on one dataset (record fields `suite` and `config.dataset.name`); directories holding the
same source merge (their seeds add up), directories holding different ones appear side by side. A *grid point*
is a cell label within a source; its seeds are the rows. Reads only files: cells/*.json and suite.yaml.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from lossbench.axes import AXES
from lossbench.errors import RecordSchemaError, ReportError
from lossbench.record import TIMING_KEYS, CellRecord
from lossbench.store import read_cell_file

#: Axes every grid has, in display order; further axes found in the records follow in order of appearance
#: (the scenario axis appears where a suite varies it).
STANDARD_AXES = tuple(axis.name for axis in AXES if axis.standard)


@dataclass
class Source:
    """One suite on one dataset, possibly gathered from several directories."""

    suite: str
    dataset: str
    name: str
    dirs: list[Path]
    #: The parsed suite.yaml of the first directory that has one ({} when none does).
    suite_file: dict[str, Any] = field(default_factory=dict)
    #: Whether its cells are the final cells of a tuning run (their config holds a `tuned` block).
    tuned: bool = False


@dataclass
class Results:
    """Every kept cell record, as a table and as the records themselves (for curves, bins and matrices)."""

    #: One row per cell × seed: source, label, id, seed, status, order, one column per axis, per scalar metric
    #: (fractions, nats), per timing value (s, img/s, MiB) and epoch_s; diverged_epoch, error, file.
    frame: pd.DataFrame
    records: dict[str, CellRecord]
    sources: list[Source]
    axes: list[str]
    metrics: list[str]
    warnings: list[str]


def _read_dir(directory: Path, warnings: list[str]) -> list[tuple[Path, CellRecord]]:
    if not directory.exists():
        raise ReportError(message=f"results directory {directory} does not exist",
                          details=["give the --out directory of a `lossbench run` (default results/<suite name>)"])
    if not directory.is_dir():
        raise ReportError(message=f"{directory} is not a directory; give a results directory such as results/smoke")
    files = sorted((directory / "cells").glob("*.json"))
    if not files:
        hint = (f"this looks like the cells folder itself; give its parent, {directory.parent}"
                if directory.name == "cells" and any(directory.glob("*.json"))
                else f"run `lossbench run SUITE --out {directory}` first")
        if (directory / "tuning.csv").is_file():
            hint = ("tuning has begun (tuning.csv is there) but no cell has its verdict yet: the same "
                    "`lossbench run` command resumes it")
        raise ReportError(message=f"{directory} holds no cell results (no {directory / 'cells'}/*.json)",
                          details=[hint])
    out = []
    for path in files:
        try:
            record, why = read_cell_file(path)
        except RecordSchemaError as exc:
            raise ReportError(message=f"{path}: {exc.message}", details=exc.details) from None
        if record is None:
            warnings.append(f"ignored cell file {path.name} in {directory}: {why}")
            continue
        out.append((path, record))
    return out


def _read_suite(directory: Path, warnings: list[str]) -> dict[str, Any]:
    path = directory / "suite.yaml"
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        warnings.append(f"ignored unreadable {path}: {type(exc).__name__}")
        return {}
    return data if isinstance(data, dict) else {}


def _finished(record: CellRecord) -> str:
    return str(record.finished_at or "")


def _started(record: CellRecord) -> str:
    return str(record.started_at or "")


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def is_tuned(record: CellRecord) -> bool:
    """Whether the record is a final cell of a tuning run: its config holds the `tuned` block."""
    return isinstance(record.config.get("tuned"), dict)


def _shared_config(record: CellRecord) -> dict[str, Any]:
    """What every cell of one run shares: the configuration without the grid axes and the seed (dataset
    identity and options, model, training recipe). A tuned cell's chosen values differ from cell to cell by
    design, so they are left out too: every leaf named like the last part of a tuned path (`train.batch_size` →
    `batch_size`), and the `tuned` block itself."""
    shared = {k: v for k, v in record.config.items() if k not in ("seed", "tuned") and k not in record.axes}
    if not is_tuned(record):
        return shared
    tuned_names = {str(path).rsplit(".", 1)[-1] for path in (record.config["tuned"].get("params") or {})}
    return {leaf: v for leaf, v in _flatten(shared).items() if leaf.rsplit(".", 1)[-1] not in tuned_names}


def _group_hash(record: CellRecord) -> str:
    """Hash of the cell's configuration without its seed: the seeds of one grid point share it."""
    return _hash({k: v for k, v in record.config.items() if k != "seed"})


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def load_results(dirs: list[Path]) -> Results:
    """Read the cell files of every directory; raise ReportError when one is missing or holds no results."""
    if not dirs:
        raise ReportError(message="no results directory given")
    warnings: list[str] = []
    found: dict[str, tuple[Path, CellRecord]] = {}
    suite_files: dict[Path, dict[str, Any]] = {}
    record_dir: dict[str, Path] = {}
    for directory in dict.fromkeys(Path(d) for d in dirs):
        suite_files[directory] = _read_suite(directory, warnings)
        for path, record in _drop_earlier_runs(_read_dir(directory, warnings), directory, warnings):
            previous = found.get(record.id)
            if previous is not None:
                # A final result beats a failed one; among equals the later one wins (a rerun with --force).
                keep_new = ((record.status != "failed", _finished(record))
                            > (previous[1].status != "failed", _finished(previous[1])))
                kept = path if keep_new else previous[0]
                warnings.append(f"cell {record.id} ({record.label}, seed {record.seed}) is in both "
                                f"{previous[0].parent.parent} and {directory}; kept {kept.parent.parent}")
                if not keep_new:
                    continue
            found[record.id] = (path, record)
            record_dir[record.id] = directory
    if not found:
        raise ReportError(message="no readable cell results in " + ", ".join(str(d) for d in dirs),
                          details=warnings[:5])

    records = {rid: rec for rid, (_, rec) in found.items()}
    # One source per suite, dataset and shared configuration, in the order their directories were given:
    # directories of the same run merge their seeds, a run with other settings stands beside them.
    keys: dict[tuple[str, str, str, bool], list[Path]] = {}
    shared: dict[tuple[str, str, str, bool], dict[str, Any]] = {}
    source_key: dict[str, tuple[str, str, str, bool]] = {}
    position = {d: i for i, d in enumerate(suite_files)}
    for rid, rec in sorted(records.items(), key=lambda kv: (position[record_dir[kv[0]]], _started(kv[1]), kv[0])):
        key = (rec.suite or "?", rec.dataset, _hash(_shared_config(rec)), is_tuned(rec))
        source_key[rid] = key
        shared.setdefault(key, _shared_config(rec))
        dirs_of_key = keys.setdefault(key, [])
        if record_dir[rid] not in dirs_of_key:
            dirs_of_key.append(record_dir[rid])
    sources = _name_sources(keys, shared, suite_files)
    name_of = {key: src.name for key, src in zip(keys, sources)}
    # Tuned sources first: their final cells are the verdict; an untuned run beside them is the comparison.
    sources.sort(key=lambda s: not s.tuned)
    source_name = {rid: name_of[key] for rid, key in source_key.items()}

    _drop_relabelled(records, source_name, warnings)
    axes = list(STANDARD_AXES)
    for rec in sorted(records.values(), key=_started):
        axes.extend(a for a in rec.axes if a not in axes)
    axes = [a for a in axes if any(a in rec.axes for rec in records.values())]
    frame = _frame(records, {rid: p for rid, (p, _) in found.items()}, source_name, axes)
    metric_cols = [c for c in frame.columns if c.startswith("m:")]
    frame = frame.rename(columns={c: c[2:] for c in metric_cols})
    metrics = [c[2:] for c in metric_cols if frame[c[2:]].notna().any()]
    return Results(frame, records, sources, axes, metrics, warnings)


def _drop_earlier_runs(cells: list[tuple[Path, CellRecord]], directory: Path,
                       warnings: list[str]) -> list[tuple[Path, CellRecord]]:
    """The cells of a directory that share the settings of its latest run: files of an earlier run with other
    settings (say fewer epochs) stay in cells/ but must not be averaged with, or ranked beside, the new ones.
    Tuned and untuned cells are two runs that are both kept (the latest of each): the report shows how tuning
    changed the ranking."""
    kept = []
    for tuned in (False, True):
        group = [(p, r) for p, r in cells if is_tuned(r) == tuned]
        if not group:
            continue
        latest = max(group, key=lambda pr: _finished(pr[1]))[1]
        want = (latest.suite, _hash(_shared_config(latest)))
        kept += [(p, r) for p, r in group if (r.suite, _hash(_shared_config(r))) == want]
    if len(kept) < len(cells):
        warnings.append(f"ignored {len(cells) - len(kept)} cell file(s) in {directory} from an earlier run with "
                        "other settings (suite, dataset options, model or training recipe) than its latest run")
    return kept


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def _name_sources(keys: dict[tuple[str, str, str, bool], list[Path]],
                  shared: dict[tuple[str, str, str, bool], dict[str, Any]],
                  suite_files: dict[Path, dict[str, Any]]) -> list[Source]:
    """Name each source by what tells it apart: its dataset, else its suite, else both; sources that still share
    a name get `tuned` / `untuned` where one of them is tuned, then the settings in which they differ, e.g.
    `smoke (epochs=2)`."""
    suites = {s for s, _, _, _ in keys}
    datasets = {d for _, d, _, _ in keys}
    pairs = {(s, d) for s, d, _, _ in keys}
    base = {}
    for key in keys:
        suite, dataset = key[0], key[1]
        if len(datasets) == len(pairs):
            base[key] = dataset
        elif len(suites) == len(pairs):
            base[key] = suite
        else:
            base[key] = f"{suite} · {dataset}"
    base = {k: f"{name} · {'tuned' if k[3] else 'untuned'}" if any(
        base[o] == name and o[3] != k[3] for o in keys) else name for k, name in base.items()}
    out = []
    for key, dirs in keys.items():
        name = base[key]
        twins = [k for k in keys if base[k] == name]
        if len(twins) > 1:
            flat = {k: _flatten(shared[k]) for k in twins}
            leaves = sorted({leaf for f in flat.values() for leaf in f})
            differ = [leaf for leaf in leaves if len({json.dumps(f.get(leaf), default=str) for f in flat.values()}) > 1]
            shown = ", ".join(f"{leaf.rsplit('.', 1)[-1]}={flat[key].get(leaf)}" for leaf in differ[:3])
            name = f"{name} ({shown}{', …' if len(differ) > 3 else ''})"
        suite_file = next((suite_files[d] for d in dirs if suite_files.get(d)), {})
        out.append(Source(key[0], key[1], name, dirs, suite_file, tuned=key[3]))
    return out


def _drop_relabelled(records: dict[str, CellRecord], source_name: dict[str, str], warnings: list[str]) -> None:
    """Keep, for each label of each source, only its most recently run configuration: two configurations under
    one label (a component's default changed between runs) must not be averaged as seeds of one cell."""
    groups: dict[tuple[str, str], dict[str, list[str]]] = {}
    for rid, rec in records.items():
        groups.setdefault((source_name[rid], rec.label), {}).setdefault(_group_hash(rec), []).append(rid)
    for (_, label), by_hash in groups.items():
        if len(by_hash) < 2:
            continue
        latest = max(by_hash, key=lambda h: max(_finished(records[r]) for r in by_hash[h]))
        for h, ids in by_hash.items():
            if h == latest:
                continue
            for rid in ids:
                del records[rid]
            warnings.append(f"ignored {len(ids)} older cell file(s) of '{label}' whose configuration differs from "
                            f"its latest run: {', '.join(sorted(ids))}")


def _frame(records: dict[str, CellRecord], paths: dict[str, Path], source_name: dict[str, str],
           axes: list[str]) -> pd.DataFrame:
    rows = []
    for order, (rid, rec) in enumerate(sorted(records.items(), key=lambda kv: (_started(kv[1]), kv[1].label,
                                                                                kv[1].seed, kv[0]))):
        row: dict[str, Any] = {
            "source": source_name[rid],
            "label": rec.label,
            "id": rid,
            "seed": rec.seed,
            "status": rec.status,
            "order": order,
            "diverged_epoch": rec.diverged_epoch,
            "error": rec.error.strip().splitlines()[0] if rec.error and rec.error.strip() else None,
            "file": str(paths[rid]),
            # The number of classes of the data the cell was tested on (chance accuracy is its inverse).
            "classes": _number(rec.data.classes),
        }
        for axis in axes:
            row[axis] = str(rec.axes.get(axis, "—"))
        done = rec.status == "done"
        names = [*rec.metrics.scalars(), *(["val_acc"] if rec.last_val_acc is not None else []), *TIMING_KEYS,
                 "epoch_s"]
        for name in names:
            row[f"m:{name}"] = _number(rec.value(name)) if done else math.nan
        rows.append(row)
    return pd.DataFrame(rows)
