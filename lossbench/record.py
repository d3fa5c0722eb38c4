"""The typed, versioned record of one cell's result: what `cells/<id>.json` holds.

The runner writes a `CellRecord`; the store, results.csv, the report, the progress display and the CLI table read
it, never the JSON directly. Status names and grid axis names are defined here once.

Compatibility: the JSON key `schema` holds `SCHEMA_VERSION`. A file without it, or with an older version, is
read as it is (every field has a default); a file of a newer version raises `RecordSchemaError`, because this
version cannot know what its fields mean. Keys this version does not know are kept in `extra` and written back
unchanged, so reading and rewriting a record never loses anything. Adding a field is one line below, with a
default (files written before it simply get the default).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from lossbench.errors import RecordError, RecordSchemaError

#: The version of the record layout this lossbench writes and the newest it reads.
SCHEMA_VERSION = 1

Status = Literal["done", "diverged", "failed"]
#: Every status a cell can end with: trained to the end, stopped at a non-finite loss, raised an exception.
STATUSES: tuple[Status, ...] = get_args(Status)
#: Statuses that are final: a rerun skips these cells (a failed cell is retried).
FINAL_STATUSES: tuple[Status, ...] = ("done", "diverged")

#: The grid axes, in display order (the columns of results.csv and of the report's tables).
AXES: tuple[str, ...] = ("loss", "regularizer", "augmentation", "optimizer", "scenario")

#: Keys without which a file is not a cell record at all.
_REQUIRED = ("id", "label", "seed", "status", "axes")


@dataclass
class CellRecord:
    """One cell × seed: what it is (id, label, axes, resolved config), how it ended, and what it measured.

    Units: accuracies in [0, 1], losses in nats per sample, times in seconds, memory in MiB.
    """

    id: str
    label: str
    seed: int
    status: Status
    #: The value of each grid axis as a short label, e.g. {"loss": "focal(gamma=2)", ...}.
    axes: dict[str, str]
    suite: str = ""
    #: The fully resolved configuration the cell id hashes (dataset identity, model, recipe, components, seed).
    config: dict[str, Any] = field(default_factory=dict)
    diverged_epoch: int | None = None
    error: str | None = None
    traceback: str | None = None
    #: Sentences that explain how metrics were computed for this cell (k-NN heads, noisy labels, ...).
    notes: list[str] = field(default_factory=list)
    #: Final metrics (test_acc, test_top5, test_loss, test_nll, ece, brier, train_acc, gap, per_class_acc,
    #: confusion, reliability, ...); empty unless the status is done.
    metrics: dict[str, Any] = field(default_factory=dict)
    #: One entry per epoch (see engine.EpochRecord).
    history: list[dict[str, Any]] = field(default_factory=list)
    #: train_time_s, img_per_s, epochs_run, peak_mem_mb, eval_time_s.
    timing: dict[str, Any] = field(default_factory=dict)
    #: The sizes the cell trained and was tested on: train (after its scenario), val, test, classes, image_size.
    data: dict[str, Any] = field(default_factory=dict)
    #: The machine's load while the cell ran (machine.load_block): load averages, CPU time, usable cores.
    load: dict[str, Any] = field(default_factory=dict)
    precision: str | None = None
    #: Versions and hardware: python, torch, device, device_name, threads, git_commit, ...
    env: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None
    schema_version: int = SCHEMA_VERSION
    #: Keys of the file this version does not know, kept so that a rewrite loses nothing.
    extra: dict[str, Any] = field(default_factory=dict)
    #: The cell's final-weights file (lossbench/checkpoint.py) as bytes, on its way from the process that trained
    #: the cell to the one that writes the results directory; never part of the JSON.
    weights: bytes | None = field(default=None, repr=False, compare=False)

    # -- derived values every reader needs -----------------------------------------------------------------------

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def metric(self, name: str) -> Any:
        """A final metric, or None when the cell did not measure it (failed, diverged, other head)."""
        return self.metrics.get(name)

    @property
    def epochs(self) -> int | None:
        """Epochs the recipe asked for."""
        return (self.config.get("train") or {}).get("epochs")

    @property
    def device(self) -> str | None:
        return self.env.get("device")

    @property
    def dataset(self) -> str:
        return str((self.config.get("dataset") or {}).get("name") or "?")

    @property
    def settings_id(self) -> str:
        """12 hex digits naming what every cell of one run shares: the configuration without the grid axes and
        the seed (dataset identity and options, model, training recipe). Rows of one label and seed from runs
        with other settings differ here."""
        shared = {k: v for k, v in self.config.items() if k != "seed" and k not in self.axes}
        return hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()[:12]

    @property
    def last_val_acc(self) -> float | None:
        """Validation accuracy of the last epoch, when the suite held out a validation split."""
        return self.history[-1].get("val_acc") if self.history else None

    @property
    def noise_rate(self) -> float | None:
        """The realised label-noise rate of the training split, when a scenario added noise."""
        return (self.metrics.get("scenario") or {}).get("noise_rate")

    @property
    def error_line(self) -> str | None:
        """The first line of the error, at most 200 characters."""
        return self.error.strip().splitlines()[0][:200] if self.error and self.error.strip() else None

    # -- JSON ----------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the record, with the schema version under `schema`."""
        out: dict[str, Any] = {"schema": self.schema_version}
        for f in dataclasses.fields(self):
            if f.name not in ("schema_version", "extra", "weights"):
                out[f.name] = getattr(self, f.name)
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    @classmethod
    def from_dict(cls, data: Any, source: Path | str | None = None) -> CellRecord:
        """Read a record from its JSON object. Raises RecordSchemaError for a newer schema, RecordError for an
        object that is not a cell record."""
        where = f"{source}: " if source is not None else ""
        if not isinstance(data, dict):
            raise RecordError(message=f"{where}not a lossbench cell result (a JSON {type(data).__name__})")
        version = data.get("schema", 1)
        if not isinstance(version, int) or isinstance(version, bool):
            raise RecordError(message=f"{where}not a lossbench cell result (schema {version!r})")
        if version > SCHEMA_VERSION:
            raise RecordSchemaError(
                message=f"{where}written by a newer lossbench (record schema {version}; this version reads up to "
                        f"{SCHEMA_VERSION})",
                value=version,
                details=["upgrade lossbench to read it (uv sync / pip install -U lossbench), or move the file away"],
            )
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise RecordError(message=f"{where}not a lossbench cell result (missing {', '.join(missing)})")
        if data["status"] not in STATUSES:
            raise RecordError(message=f"{where}not a lossbench cell result (unknown status {data['status']!r})",
                              value=data["status"], allowed=list(STATUSES))
        if not isinstance(data["axes"], dict) or isinstance(data["seed"], bool) or not isinstance(data["seed"], int):
            raise RecordError(message=f"{where}not a lossbench cell result (axes or seed of the wrong type)")
        if not isinstance(data["id"], str) or not isinstance(data["label"], str) or not all(
            isinstance(v, str) for v in data["axes"].values()
        ):
            raise RecordError(message=f"{where}not a lossbench cell result (id, label or axes not text)")
        known = {f.name for f in dataclasses.fields(cls)} - {"schema_version", "extra", "weights"}
        values = {k: v for k, v in data.items() if k in known}
        for name, empty in (("config", dict), ("notes", list), ("metrics", dict), ("history", list),
                            ("timing", dict), ("data", dict), ("load", dict), ("env", dict)):
            # Absent or null (older files): empty. Present with another type: the file is not trustworthy, and a
            # cell read from it would be skipped on resume with nothing to report.
            if values.get(name) is not None and not isinstance(values[name], empty):
                raise RecordError(message=f"{where}not a lossbench cell result ('{name}' is a JSON "
                                          f"{type(values[name]).__name__}, not a JSON {empty.__name__})")
            if not isinstance(values.get(name), empty):
                values[name] = empty()
        values["suite"] = str(values.get("suite") or "")
        extra = {k: v for k, v in data.items() if k not in known and k != "schema"}
        return cls(**values, schema_version=version, extra=extra)
