"""Train one cell on one device and return its result. No files, no printing: plain data in, plain data out.

The dataset sits on the device as uint8; each step gathers a batch by index, converts and augments it there,
normalizes it and takes one optimizer step. Running sums stay on the device, so the loop never waits for the
device; the host reads them once per epoch.
"""

from __future__ import annotations

import math
import resource
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from lossbench.augment import AUGMENTATIONS, AugmentationPipeline
from lossbench.data.base import ImageData
from lossbench.data.scenarios import SCENARIOS, ScenarioSet
from lossbench.embedding_eval import evaluate_retrieval, knn_class_scores, knn_probabilities
from lossbench.grid import Cell
from lossbench.losses import LOSSES, Loss
from lossbench.metrics import (
    confusion_matrix,
    expected_calibration_error,
    per_class_accuracy,
    reliability_bins,
    topk_correct,
)
from lossbench.models import MODELS
from lossbench.optim import OPTIMIZERS, SCHEDULES
from lossbench.regularizers import REGULARIZERS, RegularizerSet

Status = Literal["done", "diverged", "failed"]
Precision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class EngineOptions:
    """How to train, beyond what the cell itself says: where, at which precision, in what batch sizes."""

    device: torch.device
    precision: Precision
    epochs: int
    batch_size: int
    eval_batch_size: int = 2048
    #: Run the model in the channels-last memory layout (faster convolutions on CUDA and, measured, on CPU).
    channels_last: bool = False
    #: Compile the model with torch.compile (meant for CUDA GPUs; on CPU it measured slower: docs/performance.md).
    compile: bool = False


@dataclass
class EpochRecord:
    """What one epoch measured. Losses in nats per sample; accuracies in [0, 1]; time in seconds."""

    epoch: int
    train_loss: float
    train_acc: float | None
    test_loss: float
    test_acc: float
    test_top5: float
    lr: float
    epoch_s: float
    #: Seconds of training in this epoch, evaluation excluded (the device synchronized before and after).
    train_s: float | None = None
    penalty: float | None = None
    #: The penalty's share of the training objective, penalty / (train_loss + penalty); None without a penalty.
    penalty_share: float | None = None
    val_acc: float | None = None
    val_loss: float | None = None


@dataclass
class CellResult:
    """The outcome of one cell: status, final metrics, per-epoch history, timings and notes."""

    status: Status
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[EpochRecord] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    #: The sizes the cell trained and was tested on: train (after its scenario), val and test image counts,
    #: classes, and image_size as [channels, height, width].
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    diverged_epoch: int | None = None
    error: str | None = None
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["history"] = [asdict(h) for h in self.history]
        return out


ProgressFn = Callable[[str, dict[str, Any]], None]


# ---------------------------------------------------------------------------------------------------------------


def resolve_device(requested: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device that is absent raises ValueError."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA GPU")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was requested but the MPS backend is not available")
    return torch.device(requested)


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """`auto` is bf16 autocast on a CUDA GPU that supports it and fp32 elsewhere."""
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise ValueError("fp16 training needs a GPU; use bf16 or fp32 on the CPU")
        return requested  # type: ignore[return-value]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def _autocast(device: torch.device, precision: Precision) -> Any:
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this cell: CUDA max allocated, or the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Parts:
    model: nn.Module
    loss: Loss
    regularizers: RegularizerSet
    augment: AugmentationPipeline
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler


def build_parts(cell: Cell, data: ImageData, options: EngineOptions, steps_per_epoch: int) -> _Parts:
    """Construct the cell's components. Seeds the global RNG first, so weight init depends on the seed only."""
    loss = LOSSES.build(cell.loss.name, cell.loss.params)
    regs = RegularizerSet([REGULARIZERS.build(r.name, r.params) for r in cell.regularizer])
    model_spec = cell.config["model"]
    torch.manual_seed(cell.seed)
    builder = MODELS.build(
        model_spec["name"],
        model_spec["params"],
        in_channels=data.channels,
        image_size=data.image_size,
        out_features=loss.output_dim(data.num_classes),
        dropout=regs.dropout(),
    )
    model = builder.build().to(options.device)  # type: ignore[attr-defined]
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if options.compile:
        model.compile()  # in place: the module, its parameters and state_dict keys stay the same
    loss = loss.to(options.device)
    augment = AugmentationPipeline(
        [AUGMENTATIONS.build(a.name, a.params) for a in cell.augmentation], data.num_classes
    )
    optimizer = OPTIMIZERS.build(cell.optimizer.name, cell.optimizer.params).build(
        model.parameters(), fused=options.device.type == "cuda"
    )
    sched_spec = cell.config["train"]["schedule"]
    schedule = SCHEDULES.build(sched_spec["name"], sched_spec["params"]).build(
        optimizer, total_steps=steps_per_epoch * options.epochs, steps_per_epoch=steps_per_epoch
    )
    return _Parts(model, loss, regs, augment, optimizer, schedule)


class _Normalizer:
    """uint8 images → float, scaled to [0, 1], and (after augmentation) standardized per channel."""

    def __init__(self, data: ImageData, device: torch.device, channels_last: bool):
        self.mean = torch.tensor(data.mean, device=device, dtype=torch.float32).view(1, -1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(data.std, device=device, dtype=torch.float32).clamp(min=1e-6).view(1, -1, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(dtype=torch.float32, memory_format=self.memory_format).mul_(1.0 / 255.0)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


def class_scores(
    model: nn.Module, loss: Loss, x: torch.Tensor, norm: _Normalizer, options: EngineOptions
) -> torch.Tensor:
    """Model outputs for a whole split, in eval mode and large no-grad batches, as float32 [N, out_features]."""
    model.eval()
    outs = []
    with torch.no_grad(), _autocast(options.device, options.precision):
        for start in range(0, x.shape[0], options.eval_batch_size):
            batch = norm.standardize(norm.to_unit(x[start : start + options.eval_batch_size]))
            outs.append(model(batch).float())
    model.train()
    return torch.cat(outs) if outs else torch.zeros(0, 0, device=x.device)


def _split_metrics(
    outputs: torch.Tensor, labels: torch.Tensor, loss: Loss, batch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean loss, top-1 correct, top-5 correct) of logit outputs, as device tensors."""
    total = torch.zeros((), device=outputs.device)
    for start in range(0, outputs.shape[0], batch):
        o, y = outputs[start : start + batch], labels[start : start + batch]
        total += loss(o, y).detach() * o.shape[0]
    return total / max(outputs.shape[0], 1), topk_correct(outputs, labels, 1), topk_correct(outputs, labels, 5)


def _embedding_loss(outputs: torch.Tensor, labels: torch.Tensor, loss: Loss, batch: int) -> torch.Tensor:
    """Mean loss of embedding outputs in batches of `batch` (the training batch size), as a device tensor.

    Pair losses depend on which samples share a batch; a fixed shuffled order (seed 0) gives every batch several
    classes even where a split is stored sorted by class, and the same batches in every epoch and cell.
    """
    n = outputs.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(outputs.device)
    total = torch.zeros((), device=outputs.device)
    for start in range(0, n, batch):
        idx = order[start : start + batch]
        total += loss(outputs[idx], labels[idx]).detach() * idx.shape[0]
    return total / max(n, 1)


def _train_embeddings(
    model: nn.Module, loss: Loss, data: ImageData, norm: _Normalizer, options: EngineOptions
) -> torch.Tensor:
    """The clean training images' embeddings, eval mode: the reference set of k-NN evaluation."""
    return loss.embed(class_scores(model, loss, data.train_x, norm, options))


def _evaluate_split(
    outputs: torch.Tensor,
    labels: torch.Tensor,
    loss: Loss,
    options: EngineOptions,
    data: ImageData,
    train_embeddings: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean loss, top-1 correct, top-5 correct): argmax of logits, or k-NN against `train_embeddings`."""
    if train_embeddings is None:
        return _split_metrics(outputs, labels, loss, options.eval_batch_size)
    scores = knn_class_scores(
        loss.embed(outputs), train_embeddings, data.train_y, data.num_classes,
        k=loss.knn_k, metric=loss.knn_metric, batch_size=options.eval_batch_size,
    )
    test_loss = _embedding_loss(outputs, labels, loss, options.batch_size)
    return test_loss, topk_correct(scores, labels, 1), topk_correct(scores, labels, 5)


def train_cell(
    cell: Cell, data: ImageData, options: EngineOptions, progress: ProgressFn | None = None
) -> CellResult:
    """Train and evaluate one cell. Exceptions become a `failed` result; a non-finite loss a `diverged` one.

    `sys.exit()` in a user's loss or component is an exception of its cell too: only Ctrl-C stops the grid.
    """
    try:
        return _train(cell, data, options, progress or (lambda event, info: None))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        return CellResult(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())


def _train(cell: Cell, data: ImageData, options: EngineOptions, progress: ProgressFn) -> CellResult:
    device = options.device
    # The cell's data scenario (label noise, imbalance, subset) replaces the training split, drawn from the seed;
    # the test and validation splits stay as they are.
    data, scenario = ScenarioSet([SCENARIOS.build(s.name, s.params) for s in cell.scenario]).apply(data, cell.seed)
    n = int(data.train_x.shape[0])
    steps_per_epoch = math.ceil(n / options.batch_size)
    parts = build_parts(cell, data, options, steps_per_epoch)
    model, loss_fn = parts.model, parts.loss
    embedding = loss_fn.head == "embedding"
    norm = _Normalizer(data, device, options.channels_last)
    # Independent streams, all fixed by the seed: data order, augmentation parameters, dropout masks.
    order_gen = torch.Generator().manual_seed(cell.seed)
    aug_rng = np.random.default_rng([cell.seed, 1])
    torch.manual_seed(cell.seed + 1)
    scaler = torch.amp.GradScaler(device.type, enabled=options.precision == "fp16")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    result = CellResult(status="done")
    result.data = {"train": n, "val": 0 if data.val_x is None else int(data.val_x.shape[0]),
                   "test": int(data.test_x.shape[0]), "classes": data.num_classes,
                   "image_size": [data.channels, *data.image_size]}
    if scenario is not None:
        result.notes.extend(scenario.pop("notes"))
        if scenario["noisy_labels"]:
            result.notes.append("training labels are noisy: train_acc and train_loss are measured against the noisy "
                                "training labels; every test metric uses the clean test labels")
        result.metrics["scenario"] = scenario
    if embedding:
        result.notes.append(
            f"loss '{cell.loss.name}' has an embedding head: test_acc, test_top5, per-class accuracy and the "
            f"confusion matrix come from k-NN (k={loss_fn.knn_k}, {loss_fn.knn_metric}) against the training-set "
            "embeddings; test_nll and ece are computed on the k-NN class probabilities (rank-weighted neighbour "
            "votes v with add-one smoothing, p_c = (v_c + 1) / (sum v + C)); train_acc is leave-one-out k-NN on the "
            "clean training set; test_loss is the training loss on test embeddings in batches of the training "
            "batch size; per-epoch train_acc is not measured"
        )
    elif not loss_fn.probabilistic:
        result.notes.append(
            f"loss '{cell.loss.name}' does not train softmax(outputs) as probabilities; test NLL and ECE are "
            "computed on softmax(outputs) all the same"
        )
    train_seconds = 0.0
    # The last epoch's evaluation outputs; the final metrics reuse them (the model has not changed since).
    test_out: torch.Tensor | None = None
    train_emb: torch.Tensor | None = None
    progress("cell_start", {"epochs": options.epochs, "steps_per_epoch": steps_per_epoch})
    for epoch in range(1, options.epochs + 1):
        _sync(device)
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=order_gen).to(device)
        aug_params = parts.augment.draw_epoch(n, aug_rng, device)
        loss_sum = torch.zeros((), device=device)
        penalty_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        has_penalty = False
        lr = parts.schedule.get_last_lr()[0]
        for step, start in enumerate(range(0, n, options.batch_size)):
            idx = perm[start : start + options.batch_size]
            labels = data.train_y[idx]
            x, targets = parts.augment(norm.to_unit(data.train_x[idx]), labels, aug_params, start)
            x = norm.standardize(x)
            with _autocast(device, options.precision):
                outputs = model(x)
            loss = loss_fn(outputs, targets)
            penalty = parts.regularizers.penalty(model)
            total = loss if penalty is None else loss + penalty
            parts.optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(parts.optimizer)
            scaler.update()
            lr = parts.schedule.get_last_lr()[0]
            parts.schedule.step()
            parts.regularizers.after_step(model, lr)
            b = labels.shape[0]
            loss_sum += loss.detach() * b
            if penalty is not None:
                penalty_sum += penalty.detach() * b
                has_penalty = True
            if not embedding:
                correct += (outputs.detach().argmax(1) == labels).sum()
            progress("step", {"epoch": epoch, "step": step + 1})
        _sync(device)
        epoch_train_s = time.perf_counter() - t0
        train_seconds += epoch_train_s

        train_loss = (loss_sum / n).item()
        if not math.isfinite(train_loss):
            result.status, result.diverged_epoch = "diverged", epoch
            result.error = f"training loss became {train_loss} in epoch {epoch}"
            progress("epoch", {"epoch": epoch, "train_loss": train_loss, "diverged": True})
            break
        test_out = class_scores(model, loss_fn, data.test_x, norm, options)
        train_emb = _train_embeddings(model, loss_fn, data, norm, options) if embedding else None
        test_loss, top1, top5 = _evaluate_split(test_out, data.test_y, loss_fn, options, data, train_emb)
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            train_acc=None if embedding else correct.item() / n,
            test_loss=test_loss.item(),
            test_acc=top1.item() / data.test_y.shape[0],
            test_top5=top5.item() / data.test_y.shape[0],
            lr=lr,
            epoch_s=time.perf_counter() - t0,
            train_s=epoch_train_s,
            penalty=(penalty_sum / n).item() if has_penalty else None,
        )
        if record.penalty is not None and train_loss + record.penalty > 0:
            record.penalty_share = record.penalty / (train_loss + record.penalty)
        if data.val_x is not None and data.val_x.shape[0] > 0:
            val_out = class_scores(model, loss_fn, data.val_x, norm, options)
            val_loss, val_top1, _ = _evaluate_split(val_out, data.val_y, loss_fn, options, data, train_emb)
            record.val_loss, record.val_acc = val_loss.item(), val_top1.item() / data.val_y.shape[0]
        result.history.append(record)
        progress("epoch", asdict(record))

    epochs_run = len(result.history) + (1 if result.status == "diverged" else 0)
    result.timing = {
        "train_time_s": train_seconds,
        "img_per_s": n * epochs_run / train_seconds if train_seconds > 0 else 0.0,
        "epochs_run": epochs_run,
        "peak_mem_mb": peak_memory_mb(device),
    }
    if result.status == "done":
        t_eval = time.perf_counter()
        result.metrics.update(final_metrics(model, loss_fn, data, norm, options, test_out, train_emb))
        result.timing["eval_time_s"] = time.perf_counter() - t_eval
    return result


def final_metrics(
    model: nn.Module,
    loss_fn: Loss,
    data: ImageData,
    norm: _Normalizer,
    options: EngineOptions,
    test_out: torch.Tensor | None = None,
    train_emb: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Test top-1/top-5, loss, NLL and ECE (15 bins) of softmax(outputs), per-class accuracy, confusion matrix,
    and accuracy on the clean (un-augmented) training set, for the train–test gap.

    Embedding heads: class scores are k-NN votes against the training-set embeddings, NLL and ECE use the k-NN
    class probabilities, train accuracy is leave-one-out k-NN, and precision@1 and MAP@R are added.
    `test_out` and `train_emb`, when given, are the model's test outputs and training embeddings already computed
    for the last epoch; they are not computed again."""
    out = class_scores(model, loss_fn, data.test_x, norm, options) if test_out is None else test_out
    labels = data.test_y
    n = labels.shape[0]
    extra: dict[str, Any] = {}
    if loss_fn.head == "embedding":
        if train_emb is None:
            train_emb = _train_embeddings(model, loss_fn, data, norm, options)
        knn = {"k": loss_fn.knn_k, "metric": loss_fn.knn_metric, "batch_size": options.eval_batch_size}
        retrieval = evaluate_retrieval(loss_fn.embed(out), labels, train_emb, data.train_y, data.num_classes, **knn)
        scores = retrieval.scores
        probs = knn_probabilities(scores)
        log_probs = probs.log()
        test_loss = _embedding_loss(out, labels, loss_fn, options.batch_size)
        train_scores = knn_class_scores(train_emb, train_emb, data.train_y, data.num_classes, exclude_self=True, **knn)
        extra = {
            "precision_at_1": retrieval.precision_at_1.item(),
            "map_at_r": retrieval.map_at_r.item(),
            "knn_k": loss_fn.knn_k,
            "knn_metric": loss_fn.knn_metric,
        }
    else:
        scores = out
        log_probs = out.log_softmax(dim=1)
        probs = log_probs.exp()
        test_loss, _, _ = _split_metrics(out, labels, loss_fn, options.eval_batch_size)
        train_scores = class_scores(model, loss_fn, data.train_x, norm, options)
    top1, top5 = topk_correct(scores, labels, 1), topk_correct(scores, labels, 5)
    confusion = confusion_matrix(scores.argmax(1), labels, data.num_classes)
    train_acc = topk_correct(train_scores, data.train_y, 1).item() / data.train_y.shape[0]
    test_acc = top1.item() / n
    return {
        "test_acc": test_acc,
        "test_top5": top5.item() / n,
        "test_loss": test_loss.item(),
        "test_nll": torch.nn.functional.nll_loss(log_probs, labels).item(),
        "ece": expected_calibration_error(probs, labels, bins=15).item(),
        "train_acc": train_acc,
        "gap": train_acc - test_acc,
        "per_class_acc": [None if math.isnan(v) else v for v in per_class_accuracy(confusion).tolist()],
        "confusion": confusion.tolist(),
        "reliability": reliability_bins(probs, labels, bins=15),
        **extra,
    }
