"""The `evaluate:` block scored on a trained model: accuracy, NLL and ECE on every corruption × severity of the
test split, AUROC and FPR at 95 % TPR of the max-softmax and energy scores against every OOD source.

`run` scores each cell right after training, on the model in memory (`ShiftPlan.score`, called by the runner's
train_cell, so adaptive seeding and tuning can target these metrics); `lossbench evaluate` scores the saved final
checkpoints of a results directory (`evaluate_directory`), adding to the cell files without retraining.

In a cell record: `metrics.shift` (record.ShiftBlock) holds the detail (per corruption and severity, per OOD
source, and the list of evaluations with the sha256 of the checkpoint each scored), and the scalar summaries sit
beside the clean metrics, where the report's statistics, the tuning target and adaptive seeding can name them:

  corrupt_acc, corrupt_nll, corrupt_ece         means over every corruption × severity of the shift block
  ood_auroc_msp, ood_fpr95_msp, ood_auroc_energy, ood_fpr95_energy   means over the OOD sources
  shift_checkpoint_sha256                       the checkpoint the latest evaluation scored

Every cell sees the same corrupted images and the same OOD images (seeded by corruption, severity and chunk, not
by the cell), so cells and seeds compare on identical inputs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.device import Normalizer, autocast, engine_options
from lossbench.metrics import expected_calibration_error, predicted_class
from lossbench.record import Metrics, ShiftBlock
from lossbench.shift.corruptions import CORRUPTIONS
from lossbench.shift.ood import GENERATED, auroc, dataset_images, energy_score, fpr_at_tpr, generated_images, msp_score

if TYPE_CHECKING:
    from lossbench.config.schema import Suite
    from lossbench.data.base import ImageData
    from lossbench.device import EngineOptions
    from lossbench.losses.base import Loss

#: Images corrupted per random draw. Fixed (not the evaluation batch size), so the corrupted test split is the
#: same whatever batch size evaluates it.
CHUNK = 1000
#: Equal-width confidence bins of ECE (as the clean metrics: evaluate.CALIBRATION_BINS).
BINS = 15
#: Seed of the OOD images drawn from a dataset or generated.
OOD_SEED = 20_190_101
#: The scalar summaries a shift block gives, in the order the report shows them.
SUMMARY_METRICS = ("corrupt_acc", "corrupt_nll", "corrupt_ece", "ood_auroc_msp", "ood_fpr95_msp",
                   "ood_auroc_energy", "ood_fpr95_energy")
SHA_KEY = "shift_checkpoint_sha256"


@dataclass(frozen=True)
class OodSource:
    """An OOD source of the suite: a generated input, or a dataset of the registry (with its own root)."""

    name: str
    root: str | None = None
    download: bool = True

    @property
    def generated(self) -> bool:
        return self.name in GENERATED


@dataclass(frozen=True)
class ShiftPlan:
    """The suite's `evaluate:` block as the executors need it (picklable)."""

    corruptions: tuple[str, ...] = ()
    severities: tuple[int, ...] = ()
    ood: tuple[OodSource, ...] = ()
    cache_dir: str = ""
    #: Images of each OOD dataset already conformed, per process (not pickled: each worker loads its own).
    _ood_cache: dict[tuple[Any, ...], torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_suite(cls, suite: Suite, cache_dir: Path) -> ShiftPlan | None:
        block = suite.evaluate
        if block is None:
            return None
        c = block.corruptions
        return cls(
            corruptions=tuple(c.names or CORRUPTIONS) if c else (),
            severities=tuple(sorted(c.severities)) if c else (),
            ood=tuple(OodSource(s.name, s.params.get("root"), s.params.get("download", True)) for s in block.ood),
            cache_dir=str(cache_dir),
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ood_cache"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- scoring ---------------------------------------------------------------------------------------------

    def score(self, model: nn.Module, loss: Loss, data: ImageData, options: EngineOptions,
              eval_batch_size: int) -> dict[str, Any]:
        """The shift block of a trained model on `data` (already on options.device): clean, corruptions, ood;
        `eval_batch_size` images per forward pass."""
        t0 = time.perf_counter()
        device = options.device
        norm = Normalizer(data, device, options.channels_last)
        forward = _Forward(model, loss, norm, options, eval_batch_size)
        labels = data.test_y
        clean = forward(norm.to_unit(data.test_x))
        block: dict[str, Any] = {"clean": _classification(clean, labels), "corruptions": {}, "ood": {}}
        for name in self.corruptions:
            corruption = CORRUPTIONS[name]
            per_severity = {}
            for severity in self.severities:
                logits = []
                for chunk, start in enumerate(range(0, labels.shape[0], CHUNK)):
                    x = norm.to_unit(data.test_x[start:start + CHUNK])
                    g = _generator(device, f"{name}|{severity}|{chunk}") if corruption.random else None
                    logits.append(forward(corruption(x, severity, g)))
                per_severity[str(severity)] = _classification(torch.cat(logits), labels)
            block["corruptions"][name] = per_severity
        shape = (data.channels, *data.image_size)
        in_msp, in_energy = msp_score(clean), energy_score(clean)
        for source in self.ood:
            images = self._ood_images(source, int(labels.shape[0]), shape, device)
            out = torch.cat([forward(images[i:i + CHUNK]) for i in range(0, images.shape[0], CHUNK)])
            block["ood"][source.name] = {
                "auroc_msp": auroc(in_msp, msp_score(out)), "fpr95_msp": fpr_at_tpr(in_msp, msp_score(out)),
                "auroc_energy": auroc(in_energy, energy_score(out)),
                "fpr95_energy": fpr_at_tpr(in_energy, energy_score(out)),
                "images": int(images.shape[0]),
            }
        block["seconds"] = time.perf_counter() - t0
        return block

    def _ood_images(self, source: OodSource, n: int, shape: tuple[int, int, int],
                    device: torch.device) -> torch.Tensor:
        if source.generated:
            return generated_images(source.name, n, shape, OOD_SEED, device)
        key = (source, n, shape, str(device))
        if key not in self._ood_cache:
            self._ood_cache[key] = dataset_images(source.name, source.root, n, shape, OOD_SEED,
                                                  Path(self.cache_dir), source.download, device)
        return self._ood_cache[key]

    def describe(self) -> dict[str, Any]:
        """What this plan evaluates, as recorded with each evaluation."""
        return {"corruptions": list(self.corruptions), "severities": list(self.severities),
                "ood": [s.name for s in self.ood]}


class _Forward:
    """Class logits of float images in [0, 1]: standardized, in eval mode, no grad, in evaluation batches."""

    def __init__(self, model: nn.Module, loss: Loss, norm: Normalizer, options: EngineOptions, eval_batch_size: int):
        self.model, self.loss, self.norm, self.options = model, loss, norm, options
        self.eval_batch_size = eval_batch_size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        outs = []
        with torch.no_grad(), autocast(self.options.device, self.options.precision):
            for start in range(0, x.shape[0], self.eval_batch_size):
                chunk = x[start:start + self.eval_batch_size].contiguous(memory_format=self.norm.memory_format)
                outs.append(self.model(self.norm.standardize(chunk)).float())
        self.model.train(was_training)
        with torch.no_grad():
            return self.loss.to_logits(torch.cat(outs)).float()


def _generator(device: torch.device, key: str) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(zlib.crc32(key.encode()))


def _classification(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, NLL (nats per image) and ECE (15 equal-width bins) of logits; one host sync for all three."""
    probs = logits.softmax(dim=1)
    predicted = predicted_class(logits)
    values = torch.stack([
        (predicted == labels).float().mean(),
        F.cross_entropy(logits, labels),
        expected_calibration_error(probs, labels, predicted, bins=BINS),
    ]).tolist()
    return {"acc": values[0], "nll": values[1], "ece": values[2]}


# ---------------------------------------------------------------------------------------------------------------
# Into a cell record's metrics.


def merged_metrics(earlier: ShiftBlock | None, block: dict[str, Any], plan: ShiftPlan,
                   sha256: str | None) -> dict[str, Any]:
    """The metrics that add a fresh shift block to a record whose shift block was `earlier` (None if it had none):
    `shift` (entries of earlier evaluations stay unless this one scored them again; the evaluation is listed with
    the checkpoint's sha256), the scalar summaries recomputed, and the sha256, in the order they are written."""
    shift = earlier.to_dict() if isinstance(earlier, ShiftBlock) else {}
    merged = {
        "clean": block["clean"],
        "corruptions": {**shift.get("corruptions", {})},
        "ood": {**shift.get("ood", {}), **block["ood"]},
        "evaluations": list(shift.get("evaluations", [])),
    }
    for name, per_severity in block["corruptions"].items():
        merged["corruptions"][name] = {**merged["corruptions"].get(name, {}), **per_severity}
    merged["evaluations"].append({
        **plan.describe(), "checkpoint_sha256": sha256, "seconds": block.get("seconds"),
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    merged["checkpoint_sha256"] = sha256
    return {"shift": merged, **summarize(merged), SHA_KEY: sha256}


def summarize(shift: dict[str, Any]) -> dict[str, float]:
    """The scalar summaries of a shift block (only those it has data for)."""
    out: dict[str, float] = {}
    entries = [e for per in shift.get("corruptions", {}).values() for e in per.values()]
    if entries:
        for key in ("acc", "nll", "ece"):
            out[f"corrupt_{key}"] = sum(e[key] for e in entries) / len(entries)
    sources = list(shift.get("ood", {}).values())
    if sources:
        for key in ("auroc_msp", "fpr95_msp", "auroc_energy", "fpr95_energy"):
            out[f"ood_{key}"] = sum(s[key] for s in sources) / len(sources)
    return out


def stamp_checkpoint(metrics: Metrics, weights: bytes | None) -> None:
    """Record the sha256 of the final-weights file's bytes beside the shift metrics scored on the model in memory
    (`run` scores before the file is written; `keep: none` writes none and leaves the hash None)."""
    shift = metrics.shift
    if not isinstance(shift, ShiftBlock) or weights is None:
        return
    sha = hashlib.sha256(weights).hexdigest()
    shift.checkpoint_sha256 = sha
    if shift.evaluations:
        shift.evaluations[-1].checkpoint_sha256 = sha
    metrics.shift_checkpoint_sha256 = sha


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def score_into(metrics: dict[str, Any], notes: list[str], plan: ShiftPlan, model: nn.Module, loss: Loss,
               data: ImageData, options: EngineOptions, eval_batch_size: int) -> None:
    """Score a freshly trained model into its result's metrics (sha256 stamped later, by the driver). A failure of
    the evaluation keeps the training's result and says why in the notes."""
    try:
        # A fresh training: no earlier evaluation to merge with.
        metrics.update(merged_metrics(None, plan.score(model, loss, data, options, eval_batch_size), plan, None))
    except Exception as exc:  # an OOD dataset that cannot load must not throw away a trained cell
        notes.append(f"evaluation under shift failed: {type(exc).__name__}: {exc}; run `lossbench evaluate` on "
                     "the results directory to score the saved checkpoint")


# ---------------------------------------------------------------------------------------------------------------
# `lossbench evaluate`: saved checkpoints of a results directory.


@dataclass
class EvaluateSummary:
    """What `evaluate_directory` did: cells scored, and (label, seed, why) for each finished cell it skipped."""

    scored: list[str] = field(default_factory=list)
    skipped: list[tuple[str, int, str]] = field(default_factory=list)


def rebuild_model(config: dict[str, Any], payload: dict[str, Any], data: ImageData,
                  options: EngineOptions) -> tuple[nn.Module, Loss]:
    """The model and loss of a cell's resolved config, with the checkpoint's weights, on options.device."""
    from lossbench.components import model_facts
    from lossbench.registries import registries
    from lossbench.data.base import ImageShape
    from lossbench.regularizers import RegularizerSet

    reg = registries()
    loss = reg["losses"].build(config["loss"]["name"], config["loss"]["params"])
    regularizers = RegularizerSet([reg["regularizers"].build(r["name"], r["params"]) for r in config["regularizer"]])
    facts = model_facts(ImageShape(data.channels, *data.image_size, data.num_classes), loss, regularizers.dropout())
    model = reg["models"].build(config["model"]["name"], config["model"]["params"]).build(facts)
    loss.setup(data.num_classes)
    model.load_state_dict(payload["model"])
    loss.load_state_dict(payload["loss"])
    model = model.to(options.device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, loss.to(options.device)


def evaluate_directory(results_dir: Path, suite: Suite, cache_dir: Path,
                       on_cell: Callable[[str, int, int, int], None] | None = None) -> EvaluateSummary:
    """Score the final checkpoint of every done cell of `results_dir` on `suite.evaluate`, rewriting each cell
    file atomically with everything it had plus the new metrics. Holds the directory's lock meanwhile.

    Cells whose data differs from the suite's dataset, or without a final checkpoint, are skipped and listed."""
    from lossbench.checkpoint import CheckpointError, checkpoint_path, load_final
    from lossbench.data.request import DataRequest
    from lossbench.store import ResultsStore

    plan = ShiftPlan.from_suite(suite, cache_dir)
    assert plan is not None
    request = DataRequest.from_suite(suite, cache_dir)
    identity = request.identity()
    options = engine_options(suite.train.device, suite.train.precision, suite.train.compile)
    store = ResultsStore(results_dir)
    summary = EvaluateSummary()
    with store:
        records = sorted((r for r in store.records() if r.status == "done"), key=lambda r: (r.label, r.seed))
        todo = []
        for record in records:
            path = checkpoint_path(store.root, record.id)
            if (record.config.get("dataset") or {}).get("identity") != identity:
                summary.skipped.append((record.label, record.seed, "trained on other data than the suite's dataset"))
            elif not path.is_file():
                summary.skipped.append((record.label, record.seed, f"no final checkpoint ({path.name})"))
            else:
                todo.append((record, path))
        if not todo:
            return summary
        data = request.load().to(options.device)
        for i, (record, path) in enumerate(todo):
            if on_cell is not None:
                on_cell(record.label, record.seed, i, len(todo))
            sha = file_sha256(path)
            try:
                payload = load_final(path)
                model, loss = rebuild_model(payload["config"], payload, data, options)
            except (CheckpointError, RuntimeError, KeyError) as exc:
                # A foreign, truncated or mismatched file: this cell cannot be scored, the others can.
                summary.skipped.append((record.label, record.seed, f"{path.name}: {exc}"))
                continue
            block = plan.score(model, loss, data, options, suite.train.eval_batch_size)
            # Reread just before writing: the file on disk is the one to extend.
            current = store.read_cell(record.id) or record
            current.metrics.update(merged_metrics(current.metrics.shift, block, plan, sha))
            store.write_cell(current)
            summary.scored.append(record.id)
        store.rebuild_csv()
    return summary
