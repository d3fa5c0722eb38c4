"""Train one cell on one device: the loop, and nothing else. No files, no printing, no registry.

It receives everything already built (`CellParts`, from components.build_cell): the dataset sits on the device as
uint8; each step gathers a batch by index, converts and augments it there, normalizes it and takes one optimizer
step. Running sums stay on the device, so the loop never waits for the device; the host reads them once per epoch.
The evaluator of the loss's head (evaluate.py) measures each epoch and the final model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lossbench.checkpoint import CheckpointPolicy, capture_training, cpu_state, restore_training
from lossbench.device import Normalizer, Precision, autocast, peak_memory_mb, synchronize
from lossbench.evaluate import EpochEvaluation, Evaluator, evaluator_for
from lossbench.record import Status

if TYPE_CHECKING:  # types only: importing these packages would import their registries
    from lossbench.data.base import ImageData
    from lossbench.losses.base import Loss


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
    #: Evaluate on the test split every this many epochs, and always after the last one (train.eval_every).
    eval_every: int = 1
    #: Measure the test split (each epoch and at the end). A tuning trial sets it False: it is judged on the
    #: validation split only, and the test split is never read while tuning.
    evaluate_test: bool = True

    #: After which epochs the training state is handed to `save_state` (train.checkpoint).
    checkpoint: CheckpointPolicy = CheckpointPolicy()

    def evaluates(self, epoch: int) -> bool:
        """Whether epoch `epoch` (1-based) ends with an evaluation on the test split."""
        return epoch % self.eval_every == 0 or epoch == self.epochs


@dataclass
class CellParts:
    """Everything one cell trains with, built and seeded by components.build_cell.

    `augment` and `regularizers` are an AugmentationPipeline and a RegularizerSet (duck-typed here: the loop
    calls draw_epoch/__call__ and penalty/after_step). `order` draws the data order, `augment_rng` the
    augmentation parameters.
    """

    data: ImageData
    #: The data scenario's summary (noise rate, counts, notes), or None for the clean training split.
    scenario: dict[str, Any] | None
    model: nn.Module
    loss: Loss
    regularizers: Any
    augment: Any
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    order: torch.Generator
    augment_rng: np.random.Generator


@dataclass
class EpochRecord:
    """What one epoch measured. Losses in nats per sample; accuracies in [0, 1]; time in seconds.

    The test (and validation) fields are None in an epoch that was not evaluated (`train.eval_every`)."""

    epoch: int
    train_loss: float
    train_acc: float | None
    #: None when the test split is not evaluated (a tuning trial).
    test_loss: float | None
    test_acc: float | None
    test_top5: float | None
    lr: float
    #: Seconds of the whole epoch: training, its evaluation and the bookkeeping between them.
    epoch_s: float
    #: Seconds of training in this epoch, evaluation excluded (the device synchronized before and after).
    train_s: float | None = None
    #: Seconds of this epoch's evaluation on the test (and validation) split; 0 when it was not evaluated.
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
    #: A finished cell's final weights, {"model": state dict, "loss": state dict} on the CPU, for the runner to save.
    weights: dict[str, dict[str, torch.Tensor]] | None = None


ProgressFn = Callable[[str, dict[str, Any]], None]
#: Asked after each epoch's record; True ends training there (a tuning trial its pruner stops), status `done`.
StopFn = Callable[[EpochRecord], bool]
#: Receives a cell's training state (checkpoint.capture_training) after the epochs `train.checkpoint` names.
StateFn = Callable[[dict[str, Any]], None]


def _quiet(event: str, info: dict[str, Any]) -> None:
    return None


def train(parts: CellParts, loss_name: str, options: EngineOptions, progress: ProgressFn = _quiet,
          should_stop: StopFn | None = None, resume: dict[str, Any] | None = None,
          save_state: StateFn | None = None) -> CellResult:
    """Train and evaluate one cell. A non-finite training loss ends it as `diverged`; exceptions propagate.
    `should_stop`, asked after every epoch, may end training early (the result then has fewer epochs).

    `resume`, a training state saved by `save_state` for this cell, continues it after that state's epoch: the
    result is the one an uninterrupted training gives (bit for bit on the same device and thread count)."""
    device, data, model, loss_fn = options.device, parts.data, parts.model, parts.loss
    n = int(data.train_x.shape[0])
    steps_per_epoch = math.ceil(n / options.batch_size)
    norm = Normalizer(data, device, options.channels_last)
    evaluator = evaluator_for(loss_fn, data, norm, options)
    scaler = torch.amp.GradScaler(device.type, enabled=options.precision == "fp16")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    result = start_result(parts, evaluator, loss_name)
    train_seconds = eval_seconds = 0.0
    first_epoch = 1
    if resume is not None:
        restore_training(parts, scaler, resume)
        first_epoch, train_seconds, eval_seconds = resume["epoch"] + 1, resume["train_seconds"], resume["eval_seconds"]
        result.history = [EpochRecord(**h) for h in resume["history"]]
    progress("cell_start", {"epochs": options.epochs, "steps_per_epoch": steps_per_epoch, "first_epoch": first_epoch})
    for epoch in range(first_epoch, options.epochs + 1):
        synchronize(device)
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=parts.order).to(device)
        aug_params = parts.augment.draw_epoch(n, parts.augment_rng, device)
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
            with autocast(device, options.precision):
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
            if evaluator.measures_train_acc:
                correct += (loss_fn.to_logits(outputs.detach()).argmax(1) == labels).sum()
            progress("step", {"epoch": epoch, "step": step + 1})
        synchronize(device)
        epoch_train_s = time.perf_counter() - t0
        train_seconds += epoch_train_s

        train_loss = (loss_sum / n).item()
        if not math.isfinite(train_loss):
            result.status, result.diverged_epoch = "diverged", epoch
            result.error = f"training loss became {train_loss} in epoch {epoch}"
            progress("epoch", {"epoch": epoch, "train_loss": train_loss, "diverged": True})
            break
        evaluation, epoch_eval_s = timed_evaluation(evaluator, model, options.evaluates(epoch))
        eval_seconds += epoch_eval_s
        record = epoch_record(epoch, train_loss, correct.item() / n if evaluator.measures_train_acc else None,
                              evaluation, lr, t0, epoch_train_s, (penalty_sum / n).item() if has_penalty else None,
                              epoch_eval_s)
        result.history.append(record)
        # The state goes out before the epoch is announced: whoever acts on the announcement (a display, a fault
        # drill that kills the worker there) finds the epoch already saved.
        if save_state is not None and options.checkpoint.saves_state_after(epoch, options.epochs):
            save_state(capture_training(parts, scaler, epoch, train_seconds, eval_seconds,
                                        [asdict(h) for h in result.history]))
        progress("epoch", asdict(record))
        # Asked after the last epoch too, so that a trial's study holds every epoch's figure.
        if should_stop is not None and should_stop(record) and epoch < options.epochs:
            break
    return finish_result(result, model, evaluator, n, train_seconds, device, eval_seconds)


# The parts of a cell's result that every training loop shares (this one, and lossbench/packing.py's).


def start_result(parts: CellParts, evaluator: Evaluator, loss_name: str) -> CellResult:
    """A cell's result before its first epoch: the sizes of its data, and the notes on reading its metrics."""
    data = parts.data
    result = CellResult(status="done")
    result.data = {"train": int(data.train_x.shape[0]),
                   "val": 0 if data.val_x is None else int(data.val_x.shape[0]),
                   "test": int(data.test_x.shape[0]), "classes": data.num_classes,
                   "class_names": [str(c) for c in data.classes],
                   "image_size": [data.channels, *data.image_size]}
    if parts.scenario is not None:
        scenario = dict(parts.scenario)
        result.notes.extend(scenario.pop("notes"))
        if scenario["noisy_labels"]:
            result.notes.append("training labels are noisy: train_acc and train_loss are measured against the noisy "
                                "training labels; every test metric uses the clean test labels")
        result.metrics["scenario"] = scenario
    result.notes.extend(evaluator.notes(loss_name))
    return result


def timed_evaluation(evaluator: Evaluator, model: nn.Module, evaluate: bool) -> tuple[EpochEvaluation | None, float]:
    """(the epoch's evaluation, or None when this epoch is not evaluated; its seconds). The evaluation reads its
    results on the host (.item()), so the time includes the device's work."""
    if not evaluate:
        return None, 0.0
    t0 = time.perf_counter()
    evaluation = evaluator.epoch(model)
    return evaluation, time.perf_counter() - t0


def epoch_record(epoch: int, train_loss: float, train_acc: float | None, evaluation: EpochEvaluation | None,
                 lr: float, t0: float, train_s: float, penalty: float | None, eval_s: float = 0.0) -> EpochRecord:
    """One epoch's record; `t0` is the epoch's start (perf_counter), so epoch_s includes the evaluation.
    `evaluation` is None for an epoch that was not evaluated."""
    record = EpochRecord(
        epoch=epoch,
        train_loss=train_loss,
        train_acc=train_acc,
        test_loss=None if evaluation is None else evaluation.test_loss,
        test_acc=None if evaluation is None else evaluation.test_acc,
        test_top5=None if evaluation is None else evaluation.test_top5,
        lr=lr,
        epoch_s=time.perf_counter() - t0,
        train_s=train_s,
        eval_s=eval_s,
        penalty=penalty,
        val_acc=None if evaluation is None else evaluation.val_acc,
        val_loss=None if evaluation is None else evaluation.val_loss,
        val_top5=None if evaluation is None else evaluation.val_top5,
        val_nll=None if evaluation is None else evaluation.val_nll,
        val_ece=None if evaluation is None else evaluation.val_ece,
    )
    if record.penalty is not None and train_loss + record.penalty > 0:
        record.penalty_share = record.penalty / (train_loss + record.penalty)
    return record


def finish_result(result: CellResult, model: nn.Module, evaluator: Evaluator, n: int, train_seconds: float,
                  device: torch.device, epoch_eval_seconds: float = 0.0) -> CellResult:
    """Add the timings (`n` training images per epoch) and, for a finished cell, the final metrics.

    Timing keys, in seconds: `train_time_s` (the training steps), `epoch_eval_s` (the evaluations after epochs),
    `final_eval_s` (the final metrics), `eval_time_s` (both evaluations together)."""
    epochs_run = len(result.history) + (1 if result.status == "diverged" else 0)
    result.timing = {
        "train_time_s": train_seconds,
        "img_per_s": n * epochs_run / train_seconds if train_seconds > 0 else 0.0,
        "epochs_run": epochs_run,
        "peak_mem_mb": peak_memory_mb(device),
        "epoch_eval_s": epoch_eval_seconds,
        "final_eval_s": 0.0,
        "eval_time_s": epoch_eval_seconds,
    }
    if result.status == "done" and not evaluator.options.evaluate_test:
        # A tuning trial: its last epoch's validation figures are its result; nothing is measured on test.
        last = asdict(result.history[-1]) if result.history else {}
        result.metrics.update({k: v for k, v in last.items() if k.startswith("val_") and v is not None})
    elif result.status == "done":
        t_eval = time.perf_counter()
        result.metrics.update(evaluator.final(model))
        # Trainable parameters: the model's, and the loss's own (class layer, centres; 0 for most losses).
        result.metrics["model_params"] = sum(p.numel() for p in model.parameters())
        result.metrics["loss_params"] = sum(p.numel() for p in evaluator.loss.parameters())
        result.timing["final_eval_s"] = time.perf_counter() - t_eval
        result.timing["eval_time_s"] = epoch_eval_seconds + result.timing["final_eval_s"]
        result.weights = {"model": cpu_state(model), "loss": cpu_state(evaluator.loss)}
    return result
