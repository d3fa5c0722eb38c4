"""Several cells trained together as one batched model: `train.pack: N` / `lossbench run --pack N`.

A tiny CNN leaves a large GPU mostly idle; N cells that share an architecture can instead run as one model whose
every layer is batched over the cells (`torch.func.functional_call` under `torch.func.vmap`, which turns N
convolutions into one grouped convolution). Everything else stays per cell, exactly as in a sequential run:

- each cell builds its own model (same seed, same initial weights), loss, regularizers, augmentation, optimizer and
  learning-rate schedule and random streams with `components.build_cell`, as a sequential run does;
- each cell draws its own data order and augmentation parameters from its seed, gathers and augments its own batch;
- at every step the cells' parameters are stacked (a differentiable copy), the batched model computes every cell's
  outputs in one call, each cell's loss and penalty is computed on its own slice, and one backward pass through the
  sum of the cells' objectives fills each cell's own gradients (the cells share no parameter, so the sum's gradient
  with respect to one cell's weights is that cell's gradient alone); then each cell's optimizer steps;
- evaluation and the final metrics run per cell with the evaluator of its head (evaluate.py).

So a packed cell's result equals its sequential result up to floating-point rounding of the batched kernels, which
grows over the epochs (tests/test_packing.py states and checks the tolerance). Cells that cannot be packed train
on their own, as without the option: embedding losses (their k-NN evaluation and pair mining are per cell anyway),
dropout (a batched model would draw other masks than the sequential run), fp16 (one loss scaler per pack would
couple the cells), and models with buffers such as batch-norm statistics (updated in place, which vmap forbids).
"""

from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from lossbench.components import build_cell, registries
from lossbench.device import Normalizer, autocast, synchronize
from lossbench.engine import (
    CellParts,
    CellResult,
    EngineOptions,
    ProgressFn,
    epoch_record,
    finish_result,
    start_result,
    timed_evaluation,
)
from lossbench.evaluate import Evaluator, evaluator_for
from lossbench.grid import Cell

if TYPE_CHECKING:
    from lossbench.data.base import ImageData


def why_not_packable(cell: Cell, options: EngineOptions) -> str | None:
    """Why this cell must train on its own (a short reason), or None when it can join a pack."""
    if options.precision == "fp16":
        return "fp16 needs a loss scaler per cell"
    if "tuned" in cell.config and cell.config["train"]["batch_size"] != options.batch_size:
        return "its tuned batch size is its own"
    reg = registries()
    if getattr(reg["losses"].get(cell.loss.name), "head", "logits") != "logits":
        return "embedding losses are evaluated by k-NN per cell"
    for spec in cell.regularizer:
        placement = reg["regularizers"].build(spec.name, spec.params).dropout()
        if placement is not None and placement.requested():
            return "dropout masks would differ from a sequential run"
    return None


def pack_key(cell: Cell, num_classes: int) -> str:
    """Cells with the same key can share a pack: the same model with the same output width (a loss with its own
    class layer makes the model end in its feature width instead of the classes) and the same training split (a
    scenario's data is drawn from the seed, so cells with a scenario must also share the seed)."""
    loss = registries()["losses"].build(cell.loss.name, cell.loss.params)
    key: dict[str, Any] = {"model": cell.config["model"], "outputs": loss.output_dim(num_classes)}
    if cell.scenario:
        key["scenario"] = cell.config.get("scenario")
        key["seed"] = cell.seed
    return json.dumps(key, sort_keys=True, default=str)


def group_cells(cells: list[Cell], pack: int, options: EngineOptions, data: ImageData) -> list[list[Cell]]:
    """The cells in groups of at most `pack` that train together, in grid order of each group's first cell; a cell
    that cannot be packed is a group of its own."""
    if pack <= 1:
        return [[c] for c in cells]
    groups: list[list[Cell]] = []
    open_groups: dict[str, list[Cell]] = {}
    stateless: dict[str, bool] = {}
    for cell in cells:
        key = pack_key(cell, data.num_classes)
        if why_not_packable(cell, options) is not None:
            groups.append([cell])
            continue
        if key not in stateless:
            # Batch-norm statistics and other buffers are updated in place, which vmap cannot batch.
            model = build_cell(cell, data, replace(options, device=torch.device("cpu"), compile=False)).model
            stateless[key] = not any(True for _ in model.buffers())
        if not stateless[key]:
            groups.append([cell])
            continue
        group = open_groups.get(key)
        if group is None or len(group) >= pack:
            group = []
            open_groups[key] = group
            groups.append(group)
        group.append(cell)
    return groups


def batched_forward(skeleton: nn.Module) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """`f(params, x)`: the model `skeleton` run once per cell, batched: params maps each parameter name to the
    cells' values stacked on a new first dimension [P, ...], x holds one batch per cell [P, B, C, H, W], and the
    output is [P, B, out_features]. `skeleton` supplies only the structure, not the values."""

    def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(skeleton, params, (x,))

    return vmap(forward, in_dims=(0, 0))


def stack_parameters(models: list[nn.Module]) -> dict[str, torch.Tensor]:
    """The models' parameters stacked by name (a differentiable copy: gradients flow back to each model)."""
    names = [name for name, _ in models[0].named_parameters()]
    per_model = [dict(m.named_parameters()) for m in models]
    return {name: torch.stack([p[name] for p in per_model]) for name in names}


class _PackedCell:
    """One cell's share of a pack: its parts (built and seeded as for a sequential run), evaluator and sums."""

    def __init__(self, cell: Cell, data: ImageData, options: EngineOptions):
        self.cell = cell
        self.parts: CellParts = build_cell(cell, data, options)
        # The batched model takes [P, B, C, H, W]: no channels-last layout for a 5-D batch.
        self.norm = Normalizer(self.parts.data, options.device, channels_last=False)
        self.evaluator: Evaluator = evaluator_for(self.parts.loss, self.parts.data, self.norm, options)
        self.result = start_result(self.parts, self.evaluator, cell.loss.name)
        self.train_seconds = 0.0
        self.eval_seconds = 0.0
        self.active = True
        self.perm = torch.zeros(0, dtype=torch.long)
        self.aug_params: Any = None
        self.lr = 0.0
        self.loss_sum = torch.zeros((), device=options.device)
        self.penalty_sum = torch.zeros((), device=options.device)
        self.correct = torch.zeros((), device=options.device, dtype=torch.long)
        self.has_penalty = False

    def start_epoch(self, n: int, device: torch.device) -> None:
        self.perm = torch.randperm(n, generator=self.parts.order).to(device)
        self.aug_params = self.parts.augment.draw_epoch(n, self.parts.augment_rng, device)
        self.loss_sum = torch.zeros((), device=device)
        self.penalty_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.has_penalty = False
        self.lr = self.parts.schedule.get_last_lr()[0]


def train_pack(cells: list[Cell], data: ImageData, options: EngineOptions,
               progress: list[ProgressFn] | None = None) -> list[CellResult]:
    """Train `cells` (of one `pack_key`, none rejected by `why_not_packable`) as one batched model; one result per
    cell, in order. An exception fails every cell of the pack, with its traceback."""
    progress = progress or [lambda event, info: None] * len(cells)
    try:
        return _train_pack(cells, data, options, progress)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        error, trace = f"{type(exc).__name__}: {exc}", traceback.format_exc()
        return [CellResult(status="failed", error=error, traceback=trace) for _ in cells]


def _train_pack(cells: list[Cell], data: ImageData, options: EngineOptions,
                progress: list[ProgressFn]) -> list[CellResult]:
    device = options.device
    members = [_PackedCell(c, data, options) for c in cells]
    n = int(members[0].parts.data.train_x.shape[0])  # after the scenario, the same for the whole pack (pack_key)
    if any(int(m.parts.data.train_x.shape[0]) != n for m in members):
        raise ValueError("the cells of a pack must train on splits of the same size")
    steps_per_epoch = math.ceil(n / options.batch_size)
    batched = batched_forward(members[0].parts.model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for report in progress:
        report("cell_start", {"epochs": options.epochs, "steps_per_epoch": steps_per_epoch})
    for epoch in range(1, options.epochs + 1):
        synchronize(device)
        t0 = time.perf_counter()
        live = [m for m in members if m.active]
        for m in live:
            m.start_epoch(n, device)
        for step, start in enumerate(range(0, n, options.batch_size)):
            batches, targets, labels = [], [], []
            for m in live:
                idx = m.perm[start : start + options.batch_size]
                y = m.parts.data.train_y[idx]
                x, t = m.parts.augment(m.norm.to_unit(m.parts.data.train_x[idx]), y, m.aug_params, start)
                batches.append(m.norm.standardize(x))
                targets.append(t)
                labels.append(y)
            # A differentiable copy: the backward pass below fills each cell's own parameters' gradients.
            params = stack_parameters([m.parts.model for m in live])
            with autocast(device, options.precision):
                outputs = batched(params, torch.stack(batches))
            total = torch.zeros((), device=device)
            for i, m in enumerate(live):
                loss = m.parts.loss(outputs[i], targets[i])
                penalty = m.parts.regularizers.penalty(m.parts.model)
                total = total + (loss if penalty is None else loss + penalty)
                b = labels[i].shape[0]
                m.loss_sum += loss.detach() * b
                if penalty is not None:
                    m.penalty_sum += penalty.detach() * b
                    m.has_penalty = True
                m.correct += (m.parts.loss.to_logits(outputs[i].detach()).argmax(1) == labels[i]).sum()
            for m in live:
                m.parts.optimizer.zero_grad(set_to_none=True)
            total.backward()
            for m in live:
                m.parts.optimizer.step()
                m.lr = m.parts.schedule.get_last_lr()[0]
                m.parts.schedule.step()
                m.parts.regularizers.after_step(m.parts.model, m.lr)
                progress[members.index(m)]("step", {"epoch": epoch, "step": step + 1})
        synchronize(device)
        train_s = time.perf_counter() - t0
        for m in live:
            report = progress[members.index(m)]
            m.train_seconds += train_s
            train_loss = (m.loss_sum / n).item()
            if not math.isfinite(train_loss):
                m.active = False
                m.result.status, m.result.diverged_epoch = "diverged", epoch
                m.result.error = f"training loss became {train_loss} in epoch {epoch}"
                report("epoch", {"epoch": epoch, "train_loss": train_loss, "diverged": True})
                continue
            evaluation, eval_s = timed_evaluation(m.evaluator, m.parts.model, options.evaluates(epoch))
            m.eval_seconds += eval_s
            record = epoch_record(epoch, train_loss, m.correct.item() / n, evaluation, m.lr, t0, train_s,
                                  (m.penalty_sum / n).item() if m.has_penalty else None, eval_s)
            m.result.history.append(record)
            report("epoch", asdict(record))
        if not any(m.active for m in members):
            break
    for m in members:
        finish_result(m.result, m.parts.model, m.evaluator, n, m.train_seconds, device, m.eval_seconds)
        m.result.notes.append(f"trained in a pack of {len(members)} cells as one batched model (train.pack); "
                              f"train_time_s and img_per_s are the pack's, shared by its cells")
    return [m.result for m in members]
