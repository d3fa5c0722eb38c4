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

The loop itself is the engine's (engine.train_together), the same as for one cell; this module holds the grouping
(which cells pack together) and the pack's layout (`PackedModels`: the batched forward and the step).

So a packed cell's result equals its sequential result up to floating-point rounding of the batched kernels, which
grows over the epochs (tests/test_packing.py states and checks the tolerance). Cells that cannot be packed train
on their own, as without the option: embedding losses (their k-NN evaluation and pair mining are per cell anyway),
dropout (a batched model would draw other masks than the sequential run), fp16 (one loss scaler per pack would
couple the cells), and models with buffers such as batch-norm statistics (updated in place, which vmap forbids).
Cells pack only with cells of the same epochs and batch size (a tuned recipe may differ from the suite's)."""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from lossbench.components import build_cell, build_loss, build_regularizers
from lossbench.device import EngineOptions, autocast
from lossbench.engine import (CellParts, CellResult, CellRun, ProgressFn, StepOutput, objective, quiet,
                              train_together)
from lossbench.grid import Cell

if TYPE_CHECKING:
    from lossbench.data.base import ImageData


def why_not_packable(cell: Cell, options: EngineOptions) -> str | None:
    """Why this cell must train on its own (a short reason), or None when it can join a pack."""
    if options.precision == "fp16":
        return "fp16 needs a loss scaler per cell"
    if build_loss(cell).head != "logits":
        return "embedding losses are evaluated by k-NN per cell"
    if build_regularizers(cell).dropout().requested():
        return "dropout masks would differ from a sequential run"
    return None


def pack_key(cell: Cell, num_classes: int) -> str:
    """Cells with the same key can share a pack: the same model with the same output width (a loss with its own
    class layer makes the model end in its feature width instead of the classes), the same epochs and batch size
    (one loop steps them together), and the same training split (a scenario's data is drawn from the seed, so cells
    with a scenario must also share the seed)."""
    recipe = cell.recipe
    key: dict[str, Any] = {"model": recipe.model.plain(), "outputs": build_loss(cell).output_dim(num_classes),
                           "epochs": recipe.epochs, "batch_size": recipe.batch_size}
    if cell.scenario:
        key["scenario"] = [s.plain() for s in cell.scenario]
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


class PackedModels:
    """The layout of a pack: the cells' models as one batched model (`batched_forward` of the first cell's model),
    one backward pass through the sum of the cells' objectives, then each cell's optimizer steps."""

    #: The batched model takes [P, B, C, H, W]: no channels-last layout for a 5-D batch.
    channels_last = False

    def __init__(self, skeleton: nn.Module):
        self.forward = batched_forward(skeleton)

    def step(self, parts: list[CellParts], x: list[torch.Tensor], targets: list[torch.Tensor],
             options: EngineOptions) -> list[StepOutput]:
        # A differentiable copy: the backward pass below fills each cell's own parameters' gradients.
        params = stack_parameters([p.model for p in parts])
        with autocast(options.device, options.precision):
            outputs = self.forward(params, torch.stack(x))
        total = torch.zeros((), device=options.device)
        stepped: list[StepOutput] = []
        for i, cell in enumerate(parts):
            loss, penalty, objective_i = objective(cell, outputs[i], targets[i])
            total = total + objective_i
            stepped.append((outputs[i], loss, penalty))
        for cell in parts:
            cell.optimizer.zero_grad(set_to_none=True)
        total.backward()
        for cell in parts:
            cell.optimizer.step()
        return stepped

    def note(self, cells: int) -> str | None:
        return (f"trained in a pack of {cells} cells as one batched model (train.pack); train_time_s and img_per_s "
                "are the pack's, shared by its cells")


def train_pack(cells: list[Cell], data: ImageData, options: EngineOptions,
               progress: list[ProgressFn] | None = None) -> list[CellResult]:
    """Train `cells` (of one `pack_key`, none rejected by `why_not_packable`) as one batched model; one result per
    cell, in order. An exception fails every cell of the pack, with its traceback."""
    progress = progress or [quiet] * len(cells)
    try:
        runs = [CellRun(cell, build_cell(cell, data, options), report) for cell, report in zip(cells, progress)]
        return train_together(runs, options, PackedModels(runs[0].parts.model))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        error, trace = f"{type(exc).__name__}: {exc}", traceback.format_exc()
        return [CellResult(status="failed", error=error, traceback=trace) for _ in cells]
