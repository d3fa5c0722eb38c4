"""The training loop: one model, or a pack of models trained as one, on one device. No files, no printing, no
registry.

It receives everything already built (`CellParts`, from components.build_cell) with the cell and its recipe: the
dataset sits on the device as uint8; each step gathers a batch by index, converts and augments it there, normalizes
it and takes one optimizer step. Running sums stay on the device, so the loop never waits for the device; the host
reads them once per epoch. The evaluator of the loss's head (evaluate.py) measures each epoch and the final model.

The loop exists once. What differs between one model and a pack is a `Layout`: how a step's batches go through the
model(s) and how the optimizers step (`SingleModel` here; the vmapped pack in packing.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from lossbench.device import EngineOptions, Normalizer, autocast, peak_memory_mb, synchronize
from lossbench.evaluate import EpochEvaluation, Evaluator, evaluator_for
from lossbench.record import Epoch, Status

if TYPE_CHECKING:  # types only: importing these packages would import their registries
    from lossbench.data.base import ImageData
    from lossbench.grid import Cell
    from lossbench.losses.base import Loss


@dataclass
class CellParts:
    """Everything one cell trains with, built and seeded by components.build_cell.

    `augment` and `regularizers` are an AugmentationPipeline and a RegularizerSet (duck-typed here: the loop
    calls draw_epoch/__call__ and penalty/after_step). `order` draws the data order, `augment_rng` the
    augmentation parameters. `scaler` scales the loss under fp16 (disabled at every other precision).
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
    scaler: torch.amp.GradScaler


@dataclass
class CellResult:
    """The outcome of one cell: status, final metrics, per-epoch history, timings and notes."""

    status: Status
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[Epoch] = field(default_factory=list)
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


@dataclass
class TrainingProgress:
    """Where a cell's training stands after an epoch, besides its parts: what a saved training state holds with
    them (checkpoint.py), and where a resumed cell continues."""

    epoch: int
    train_seconds: float
    eval_seconds: float
    history: list[Epoch]


ProgressFn = Callable[[str, dict[str, Any]], None]
#: Asked after each epoch's record; True ends training there (a tuning trial its pruner stops), status `done`.
StopFn = Callable[[Epoch], bool]
#: Called after every epoch with the cell's parts and progress (before the epoch is announced); whoever passes it
#: decides which epochs to save (checkpoint.py captures the state).
StateFn = Callable[[CellParts, TrainingProgress], None]


#: What one cell's step gives the loop: (the batch's outputs, its loss, its penalty or None).
StepOutput = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def quiet(event: str, info: dict[str, Any]) -> None:
    """The progress function of a cell nobody watches."""
    return None


@dataclass
class CellRun:
    """One cell as the loop trains it: the cell (its recipe, loss and whether it is a tuning trial), its built
    parts, and the hooks of whoever runs it."""

    cell: Cell
    parts: CellParts
    progress: ProgressFn = quiet
    should_stop: StopFn | None = None
    #: Continue after this point; the parts are already restored to it (checkpoint.restore_training).
    resume: TrainingProgress | None = None
    save_state: StateFn | None = None


class Layout(Protocol):
    """How the cells of one loop take a step: their models' forward pass and their optimizers' step."""

    #: Whether batches may be in the channels-last memory layout (a pack's 5-D batch may not).
    channels_last: bool

    def step(self, parts: list[CellParts], x: list[torch.Tensor], targets: list[torch.Tensor],
             options: EngineOptions) -> list[StepOutput]:
        """One optimizer step of each cell on its standardized batch; per cell (outputs, loss, penalty)."""
        ...

    def note(self, cells: int) -> str | None:
        """A note for each cell's result on how it trained, or None."""
        ...


def objective(parts: CellParts, outputs: torch.Tensor,
              targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(loss, penalty or None, loss + penalty) of one cell's batch outputs."""
    loss = parts.loss(outputs, targets)
    penalty = parts.regularizers.penalty(parts.model)
    return loss, penalty, loss if penalty is None else loss + penalty


class SingleModel:
    """One cell, one model: forward under autocast, backward and step through the cell's loss scaler."""

    def __init__(self, channels_last: bool):
        self.channels_last = channels_last

    def step(self, parts: list[CellParts], x: list[torch.Tensor], targets: list[torch.Tensor],
             options: EngineOptions) -> list[StepOutput]:
        (cell,) = parts
        with autocast(options.device, options.precision):
            outputs = cell.model(x[0])
        loss, penalty, total = objective(cell, outputs, targets[0])
        cell.optimizer.zero_grad(set_to_none=True)
        cell.scaler.scale(total).backward()
        cell.scaler.step(cell.optimizer)
        cell.scaler.update()
        return [(outputs, loss, penalty)]

    def note(self, cells: int) -> str | None:
        return None


class _Member:
    """One cell's share of the loop: its run, evaluator, result, timings and the running sums of its epoch."""

    def __init__(self, run: CellRun, options: EngineOptions, layout: Layout):
        self.run, self.parts, self.recipe = run, run.parts, run.cell.recipe
        self.norm = Normalizer(self.parts.data, options.device, layout.channels_last)
        self.evaluator: Evaluator = evaluator_for(self.parts.loss, self.parts.data, self.norm, options,
                                                  batch_size=self.recipe.batch_size,
                                                  eval_batch_size=self.recipe.eval_batch_size,
                                                  evaluate_test=run.cell.trial is None)
        self.result = start_result(self.parts, self.evaluator, run.cell.loss.name)
        self.n = int(self.parts.data.train_x.shape[0])
        resume = run.resume or TrainingProgress(0, 0.0, 0.0, [])
        self.first_epoch = resume.epoch + 1
        self.train_seconds, self.eval_seconds = resume.train_seconds, resume.eval_seconds
        self.result.history = list(resume.history)
        self.active = True
        self.perm = torch.zeros(0, dtype=torch.long)
        self.aug_params: Any = None
        self.lr = 0.0
        self.loss_sum = self.penalty_sum = self.correct = torch.zeros(())
        self.has_penalty = False

    def start_epoch(self, device: torch.device) -> None:
        """Draw the epoch's data order and augmentation parameters; zero the running sums."""
        self.perm = torch.randperm(self.n, generator=self.parts.order).to(device)
        self.aug_params = self.parts.augment.draw_epoch(self.n, self.parts.augment_rng, device)
        self.loss_sum = torch.zeros((), device=device)
        self.penalty_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.has_penalty = False
        self.lr = self.parts.schedule.get_last_lr()[0]

    def batch(self, start: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(standardized augmented images, training targets, labels) of the batch at `start` of this epoch."""
        data = self.parts.data
        idx = self.perm[start : start + size]
        labels = data.train_y[idx]
        x, targets = self.parts.augment(self.norm.to_unit(data.train_x[idx]), labels, self.aug_params, start)
        return self.norm.standardize(x), targets, labels

    def after_step(self, labels: torch.Tensor, outputs: torch.Tensor, loss: torch.Tensor,
                   penalty: torch.Tensor | None) -> None:
        """Advance the schedule, let the regularizers act on the stepped model, and add the step to the sums."""
        self.lr = self.parts.schedule.get_last_lr()[0]
        self.parts.schedule.step()
        self.parts.regularizers.after_step(self.parts.model, self.lr)
        b = labels.shape[0]
        self.loss_sum += loss.detach() * b
        if penalty is not None:
            self.penalty_sum += penalty.detach() * b
            self.has_penalty = True
        if self.evaluator.measures_train_acc:
            self.correct += (self.parts.loss.to_logits(outputs.detach()).argmax(1) == labels).sum()

    def end_epoch(self, epoch: int, t0: float, train_s: float) -> None:
        """Read the epoch's sums, stop a cell whose loss is not finite, evaluate, record, save, announce, and ask
        whether to stop. `t0` is the epoch's start (perf_counter), `train_s` its training seconds."""
        self.train_seconds += train_s
        report, n = self.run.progress, self.n
        train_loss = (self.loss_sum / n).item()
        if not math.isfinite(train_loss):
            self.active = False
            self.result.status, self.result.diverged_epoch = "diverged", epoch
            self.result.error = f"training loss became {train_loss} in epoch {epoch}"
            report("epoch", {"epoch": epoch, "train_loss": train_loss, "diverged": True})
            return
        evaluation, eval_s = timed_evaluation(self.evaluator, self.parts.model, self.recipe.evaluates(epoch))
        self.eval_seconds += eval_s
        record = epoch_record(epoch, train_loss, self.correct.item() / n if self.evaluator.measures_train_acc
                              else None, evaluation, self.lr, t0, train_s,
                              (self.penalty_sum / n).item() if self.has_penalty else None, eval_s)
        self.result.history.append(record)
        # The state goes out before the epoch is announced: whoever acts on the announcement (a display, a fault
        # drill that kills the worker there) finds the epoch already saved.
        if self.run.save_state is not None:
            self.run.save_state(self.parts, TrainingProgress(epoch, self.train_seconds, self.eval_seconds,
                                                             list(self.result.history)))
        report("epoch", record.to_dict())
        # Asked after the last epoch too, so that a trial's study holds every epoch's figure.
        if self.run.should_stop is not None and self.run.should_stop(record) and epoch < self.recipe.epochs:
            self.active = False


def train(run: CellRun, options: EngineOptions) -> CellResult:
    """Train and evaluate one cell. A non-finite training loss ends it as `diverged`; exceptions propagate.
    `run.should_stop`, asked after every epoch, may end training early (the result then has fewer epochs).

    With `run.resume` (the parts restored to a saved training state) the cell continues after that state's epoch:
    the result is the one an uninterrupted training gives (bit for bit on the same device and thread count)."""
    return train_together([run], options, SingleModel(options.channels_last))[0]


def train_together(runs: list[CellRun], options: EngineOptions, layout: Layout) -> list[CellResult]:
    """Train the cells of `runs` in one loop, stepping together as `layout` says; one result per cell, in order.
    They must share the epochs, the batch size and the size of their training split."""
    device = options.device
    members = [_Member(run, options, layout) for run in runs]
    n, recipe = members[0].n, members[0].recipe
    if any(m.n != n or (m.recipe.epochs, m.recipe.batch_size) != (recipe.epochs, recipe.batch_size)
           for m in members):
        raise ValueError("cells trained together must share epochs, batch size and the size of the training split")
    steps_per_epoch = math.ceil(n / recipe.batch_size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for m in members:
        m.run.progress("cell_start", {"epochs": recipe.epochs, "steps_per_epoch": steps_per_epoch,
                                      "first_epoch": m.first_epoch})
    for epoch in range(min(m.first_epoch for m in members), recipe.epochs + 1):
        live = [m for m in members if m.active and epoch >= m.first_epoch]
        if not live:
            break
        synchronize(device)
        t0 = time.perf_counter()
        for m in live:
            m.start_epoch(device)
        for step, start in enumerate(range(0, n, recipe.batch_size)):
            x, targets, labels = zip(*(m.batch(start, recipe.batch_size) for m in live))
            stepped = layout.step([m.parts for m in live], list(x), list(targets), options)
            for m, y, (outputs, loss, penalty) in zip(live, labels, stepped):
                m.after_step(y, outputs, loss, penalty)
                m.run.progress("step", {"epoch": epoch, "step": step + 1})
        synchronize(device)
        train_s = time.perf_counter() - t0
        for m in live:
            m.end_epoch(epoch, t0, train_s)
    note = layout.note(len(members))
    for m in members:
        finish_result(m.result, m.parts.model, m.evaluator, n, m.train_seconds, device, m.eval_seconds)
        if note is not None:
            m.result.notes.append(note)
    return [m.result for m in members]


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's state dict on the CPU, detached (the tensors themselves where they already are on the CPU)."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


# The parts of a cell's result.


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
                 lr: float, t0: float, train_s: float, penalty: float | None, eval_s: float = 0.0) -> Epoch:
    """One epoch's record; `t0` is the epoch's start (perf_counter), so epoch_s includes the evaluation.
    `evaluation` is None for an epoch that was not evaluated."""
    record = Epoch(
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
    if result.status == "done" and not evaluator.evaluate_test:
        # A tuning trial: its last epoch's validation figures are its result; nothing is measured on test.
        last = result.history[-1].to_dict() if result.history else {}
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
