"""The typed, versioned record of one cell's result: what `cells/<id>.json` holds.

The runner writes a `CellRecord`; the store, results.csv, the report, the progress display and the CLI table read
it, never the JSON directly. Status names and grid axis names are defined here once. Each JSON object of the
record that readers look into has its typed block: `Metrics`, `Timings` (`timing`), `DataSizes` (`data`),
`MachineLoad` (`load`), `Environment` (`env`) and one `Epoch` per history entry; `CellRecord.value(name)` is the
one way to read a figure by the name the report, adaptive seeding and tuning use.

Compatibility: the JSON key `schema` holds `SCHEMA_VERSION`. A file without it, or with an older version, is
read as it is (every field has a default); a file of a newer version raises `RecordSchemaError`, because this
version cannot know what its fields mean. Keys this version does not know are kept in `extra` and written back
unchanged, so reading and rewriting a record never loses anything; the same holds inside every block, whose keys
keep their order, so a rewritten file has the same bytes. Adding a field is one line below, with a default (files
written before it simply get the default).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from lossbench.errors import RecordError, RecordSchemaError
from lossbench.json_block import Block, ListOf, MapOf, Shape

#: The version of the record layout this lossbench writes and the newest it reads.
SCHEMA_VERSION = 1

Status = Literal["done", "diverged", "failed"]
#: Every status a cell can end with: trained to the end, stopped at a non-finite loss, raised an exception.
STATUSES: tuple[Status, ...] = get_args(Status)
#: Statuses that are final: a rerun skips these cells (a failed cell is retried).
FINAL_STATUSES: tuple[Status, ...] = ("done", "diverged")

#: The timings a report, adaptive seeding or tuning can name like a metric (the rest of `timing` is detail);
#: `epoch_s` is derived from them (Timings.epoch_seconds).
TIMING_KEYS = ("train_time_s", "eval_time_s", "overhead_s", "cell_s", "img_per_s", "peak_mem_mb", "epochs_run")

#: Keys without which a file is not a cell record at all.
_REQUIRED = ("id", "label", "seed", "status", "axes")


@dataclass
class Reliability(Block):
    """The calibration bins of a cell's test predictions (metrics.reliability_bins): per equal-width confidence
    bin, the predictions in it (a count, stored as a float) and their mean confidence and accuracy."""

    count: list[float] | None = None
    confidence: list[float] | None = None
    accuracy: list[float] | None = None


@dataclass
class ScenarioSummary(Block):
    """What a data scenario made of the training split (data.scenarios.TrainSplit.summary)."""

    train_size: int | None = None
    #: Training images per true class.
    class_counts: list[int] | None = None
    #: The share of training labels changed, in [0, 1], and their number.
    noise_rate: float | None = None
    noisy_labels: int | None = None


@dataclass
class ShiftScore(Block):
    """Accuracy in [0, 1], NLL in nats per image and ECE in [0, 1] on the clean or a corrupted test split."""

    acc: float | None = None
    nll: float | None = None
    ece: float | None = None


@dataclass
class OodScore(Block):
    """How well one OOD source is told from the test split: AUROC and FPR at 95 % TPR (in [0, 1]) of the
    max-softmax and the energy scores, and the OOD images scored."""

    auroc_msp: float | None = None
    fpr95_msp: float | None = None
    auroc_energy: float | None = None
    fpr95_energy: float | None = None
    images: int | None = None


@dataclass
class ShiftEvaluation(Block):
    """One scoring of a cell under shift: what it covered, the final-weights file it scored, its seconds and time."""

    corruptions: list[str] | None = None
    severities: list[int] | None = None
    ood: list[str] | None = None
    checkpoint_sha256: str | None = None
    seconds: float | None = None
    #: ISO 8601, UTC.
    at: str | None = None


@dataclass
class ShiftBlock(Block):
    """A cell's scores under shift (lossbench/shift/evaluate.py): clean, per corruption and severity (severities
    as text, "1" to "5"), per OOD source, and every evaluation that contributed."""

    clean: ShiftScore | None = None
    corruptions: dict[str, dict[str, ShiftScore]] | None = None
    ood: dict[str, OodScore] | None = None
    evaluations: list[ShiftEvaluation] | None = None
    #: The final-weights file the latest evaluation scored.
    checkpoint_sha256: str | None = None

    NESTED: ClassVar[dict[str, Shape]] = {"clean": ShiftScore, "corruptions": MapOf(MapOf(ShiftScore)),
                                          "ood": MapOf(OodScore), "evaluations": ListOf(ShiftEvaluation)}


@dataclass
class Metrics(Block):
    """A cell's final metrics; empty unless it is done. Accuracies and rates in [0, 1], losses and NLL in nats
    per sample. Which keys a cell has depends on its head, its scenario and its suite's `evaluate:` block."""

    test_acc: float | None = None
    test_top5: float | None = None
    #: The training loss on the test split.
    test_loss: float | None = None
    test_nll: float | None = None
    ece: float | None = None
    brier: float | None = None
    train_acc: float | None = None
    #: train_acc − test_acc.
    gap: float | None = None
    #: Test accuracy per class (None for a class without test images).
    per_class_acc: list[float | None] | None = None
    #: Test counts, [true class][predicted class].
    confusion: list[list[int]] | None = None
    reliability: Reliability | None = None
    #: Embedding heads: retrieval on the test split against the training set, and the k-NN classifier's settings.
    precision_at_1: float | None = None
    map_at_r: float | None = None
    knn_k: int | None = None
    knn_metric: str | None = None
    #: Trainable parameters of the model, and of the loss (class layer, centres; 0 for most losses).
    model_params: int | None = None
    loss_params: int | None = None
    #: A tuning trial: its last epoch's validation figures (it never measures the test split).
    val_acc: float | None = None
    val_loss: float | None = None
    val_top5: float | None = None
    val_nll: float | None = None
    val_ece: float | None = None
    #: For a cell trained under a data scenario.
    scenario: ScenarioSummary | None = None
    #: The `evaluate:` block's detail and its scalar summaries (means over corruptions × severities, over OOD
    #: sources).
    shift: ShiftBlock | None = None
    corrupt_acc: float | None = None
    corrupt_nll: float | None = None
    corrupt_ece: float | None = None
    ood_auroc_msp: float | None = None
    ood_fpr95_msp: float | None = None
    ood_auroc_energy: float | None = None
    ood_fpr95_energy: float | None = None
    #: The sha256 of the final-weights file the latest shift evaluation scored.
    shift_checkpoint_sha256: str | None = None

    NESTED: ClassVar[dict[str, Shape]] = {"reliability": Reliability, "scenario": ScenarioSummary,
                                          "shift": ShiftBlock}

    def scalars(self) -> dict[str, Any]:
        """Every metric that is one value (not a list or an object), by name, in the record's order."""
        return {k: v for k, v in self.to_dict().items() if not isinstance(v, (list, dict))}


@dataclass
class Timings(Block):
    """Where a cell's time went, in seconds, and its throughput."""

    #: The training steps.
    train_time_s: float | None = None
    #: Training images per second of training time.
    img_per_s: float | None = None
    #: Epochs trained (a diverged cell counts the epoch that diverged).
    epochs_run: int | None = None
    #: The device's peak memory, MiB.
    peak_mem_mb: float | None = None
    #: The evaluations after epochs, the final metrics, and both together.
    epoch_eval_s: float | None = None
    final_eval_s: float | None = None
    eval_time_s: float | None = None
    #: The epoch after which a resumed cell continued from its saved training state.
    resumed_after_epoch: int | None = None
    #: Neither training nor evaluation (building the parts, choosing threads, the record); a pack's cells share
    #: their pack's.
    overhead_s: float | None = None
    #: The cell's share of the wall time: train_time_s (a pack's share of it) + eval_time_s + overhead_s.
    cell_s: float | None = None

    def epoch_seconds(self) -> float | None:
        """Seconds per epoch, training and the evaluations after epochs together (the final metrics excluded:
        they are once per cell); files written before evaluation was timed per epoch give training alone. None
        when the epochs are unknown, NaN when the training time is."""
        epochs, train = _number(self.epochs_run), _number(self.train_time_s)
        if not epochs or not epochs > 0:
            return None
        if "epoch_eval_s" not in self.__dict__["_keys"]:
            return train / epochs
        return (train + _number(self.epoch_eval_s)) / epochs


@dataclass
class DataSizes(Block):
    """What a cell trained and was tested on: image counts, classes, image size."""

    #: Training images, after the cell's scenario.
    train: int | None = None
    val: int | None = None
    test: int | None = None
    classes: int | None = None
    class_names: list[str] | None = None
    #: [channels, height, width].
    image_size: list[int] | None = None


@dataclass
class MachineLoad(Block):
    """The machine's load while the cell ran (machine.load_block): 1-minute load averages and the process's CPU
    seconds at the start and the end, and the cores it could use."""

    cores: int | None = None
    start_load_1m: float | None = None
    start_cpu_time_s: float | None = None
    end_load_1m: float | None = None
    end_cpu_time_s: float | None = None

    def overloaded(self) -> float | None:
        """The highest load average when it exceeded the usable cores, else None."""
        if not self.cores:
            return None
        loads = [v for v in (self.start_load_1m, self.end_load_1m) if isinstance(v, (int, float))]
        if not loads or max(loads) <= float(self.cores):
            return None
        return max(loads)


@dataclass
class Environment(Block):
    """Versions and hardware a cell trained with."""

    lossbench: str | None = None
    python: str | None = None
    torch: str | None = None
    torchvision: str | None = None
    #: The device type (cpu, cuda, mps) and its model name.
    device: str | None = None
    device_name: str | None = None
    #: torch's thread count, the policy that chose it, its ceiling and the busy cores seen at the start.
    threads: int | None = None
    hostname: str | None = None
    platform: str | None = None
    git_commit: str | None = None
    thread_policy: str | None = None
    thread_ceiling: int | None = None
    busy_cores_at_start: float | None = None
    #: The cells trained together as one batched model with this one (lossbench/packing.py).
    pack_size: int | None = None


@dataclass
class Epoch(Block):
    """What one epoch measured, as the training loop reports it and a cell's history keeps it. Losses in nats
    per sample; accuracies in [0, 1]; times in seconds. The test (and validation) fields are None in an epoch that
    was not evaluated (`train.eval_every`), the test ones in every epoch of a tuning trial (it never reads the
    test split)."""

    WRITES_NONE: ClassVar[bool] = True

    epoch: int | None = None
    train_loss: float | None = None
    train_acc: float | None = None
    test_loss: float | None = None
    test_acc: float | None = None
    test_top5: float | None = None
    lr: float | None = None
    #: The whole epoch: training, its evaluation and the bookkeeping between them.
    epoch_s: float | None = None
    #: Training in this epoch, evaluation excluded (the device synchronized before and after).
    train_s: float | None = None
    #: This epoch's evaluation on the test (and validation) split; 0 when it was not evaluated.
    eval_s: float | None = None
    penalty: float | None = None
    #: The penalty's share of the training objective, penalty / (train_loss + penalty); None without a penalty.
    penalty_share: float | None = None
    val_acc: float | None = None
    val_loss: float | None = None
    val_top5: float | None = None
    #: Validation NLL of the head's class probabilities (nats per sample) and ECE (in [0, 1]).
    val_nll: float | None = None
    val_ece: float | None = None


def _number(value: Any) -> float:
    """A JSON number as a float; NaN for anything else (null, text, a boolean)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


#: The record's JSON objects that have a block type, with it.
_BLOCKS: dict[str, type[Block]] = {"metrics": Metrics, "timing": Timings, "data": DataSizes, "load": MachineLoad,
                                   "env": Environment}


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
    #: Final metrics; empty unless the status is done.
    metrics: Metrics = field(default_factory=Metrics)
    #: One entry per epoch trained.
    history: list[Epoch] = field(default_factory=list)
    timing: Timings = field(default_factory=Timings)
    data: DataSizes = field(default_factory=DataSizes)
    load: MachineLoad = field(default_factory=MachineLoad)
    precision: str | None = None
    env: Environment = field(default_factory=Environment)
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

    def value(self, metric: str) -> Any:
        """A figure of the cell by the name the report, adaptive seeding and tuning use: a final metric; else
        `val_acc` of the last epoch; else a timing of TIMING_KEYS; else `epoch_s` (Timings.epoch_seconds).
        None when the cell has none (failed, diverged, another head)."""
        value = self.metrics.get(metric)
        if value is None and metric == "val_acc":
            value = self.last_val_acc
        if value is None and metric in TIMING_KEYS:
            value = self.timing.get(metric)
        if value is None and metric == "epoch_s":
            value = self.timing.epoch_seconds()
        return value

    @property
    def epochs(self) -> int | None:
        """Epochs the recipe asked for."""
        return (self.config.get("train") or {}).get("epochs")

    @property
    def device(self) -> str | None:
        return self.env.device

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
        return self.history[-1].val_acc if self.history else None

    @property
    def noise_rate(self) -> float | None:
        """The realised label-noise rate of the training split, when a scenario added noise."""
        scenario = self.metrics.scenario
        return scenario.noise_rate if isinstance(scenario, ScenarioSummary) else None

    @property
    def error_line(self) -> str | None:
        """The first line of the error, at most 200 characters."""
        return self.error.strip().splitlines()[0][:200] if self.error and self.error.strip() else None

    # -- JSON ----------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the record, with the schema version under `schema`."""
        out: dict[str, Any] = {"schema": self.schema_version}
        for f in dataclasses.fields(self):
            if f.name in ("schema_version", "extra", "weights"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, Block):
                value = value.to_dict()
            elif f.name == "history":
                value = [epoch.to_dict() for epoch in value]
            out[f.name] = value
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    @classmethod
    def from_dict(cls, data: Any, source: Path | str | None = None) -> CellRecord:
        """Read a record from its JSON object. Raises RecordSchemaError for a newer schema, RecordError for an
        object that is not a cell record."""
        where = f"{source}: " if source is not None else ""
        version = _check_record(data, where)
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
        if not all(isinstance(epoch, dict) for epoch in values["history"]):
            raise RecordError(message=f"{where}not a lossbench cell result ('history' holds an entry that is not "
                                      "a JSON object)")
        for name, block in _BLOCKS.items():
            values[name] = block.from_dict(values[name])
        values["history"] = [Epoch.from_dict(epoch) for epoch in values["history"]]
        values["suite"] = str(values.get("suite") or "")
        extra = {k: v for k, v in data.items() if k not in known and k != "schema"}
        return cls(**values, schema_version=version, extra=extra)


def _check_record(data: Any, where: str) -> int:
    """The schema version of a JSON object that is a cell record this version can read; raises RecordSchemaError
    for a newer schema, RecordError for anything else. `where` prefixes the messages."""
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
    return version
