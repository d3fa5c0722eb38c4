"""The components layer: everything one cell needs, built in one place.

`build_cell()` turns a cell (names and resolved parameters) and its dataset into
the objects the training loop uses: the cell's training split (after its data scenarios), model, loss,
regularizers, augmentation pipeline, optimizer over the model's *and the loss's* parameters (two parameter
groups: the loss's own weight decay for the latter), schedule, and the random streams.

Seeding order (the pairing guarantee: the same seed gives every cell the same initial weights, data order,
augmentation draws and dropout masks, whatever else the grid varies):
  1. scenarios draw from their own NumPy streams [seed, 101..103] (data/scenarios.py);
  2. the global torch RNG is seeded with `seed` right before the model is built, so initial weights depend on
     the seed and the model only; a loss's own parameters (`Loss.setup`: arcface's class weights, center loss's
     centres) are drawn right after them from the same stream;
  3. the data order comes from a torch.Generator seeded with `seed`;
  4. augmentation parameters from NumPy's default_rng([seed, 1]);
  5. the global torch RNG is reseeded with `seed + 1` before the first step: dropout masks (and any other
     in-training randomness) come from it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from lossbench.errors import ModelFitError
from lossbench.registries import registries

if TYPE_CHECKING:
    from torch import nn

    from lossbench.data.base import ImageData, ImageShape
    from lossbench.device import EngineOptions
    from lossbench.engine import CellParts
    from lossbench.grid import Cell
    from lossbench.losses import Loss
    from lossbench.models import DropoutPlacement, ModelFacts
    from lossbench.regularizers import RegularizerSet


def model_facts(shape: ImageShape, loss: Loss, dropout: DropoutPlacement) -> ModelFacts:
    """The runtime facts of a cell's model: the data's shape, the loss's output width, the dropout placement."""
    from lossbench.models import ModelFacts

    return ModelFacts(in_channels=shape.channels, image_size=(shape.height, shape.width),
                      out_features=loss.output_dim(shape.num_classes), dropout=dropout)


def check_dropout_placement(model_name: str, placement: DropoutPlacement) -> None:
    """Raise ModelFitError when the model cannot put dropout where the regularizers ask for it."""
    model_cls = registries()["models"].get(model_name)
    unsupported = [p for p in placement.requested() if p not in model_cls.dropout_places]
    if unsupported:
        places = ", ".join(sorted(model_cls.dropout_places)) or "nowhere"
        raise ModelFitError(
            message=f"model '{model_name}' cannot place dropout at {' and '.join(unsupported)} (it can: {places})",
            value=unsupported[0], allowed=sorted(model_cls.dropout_places))


#: A model checked by a CPU forward pass has at most this many parameters (resnet18's 11.2M; resnet34 and
#: wide_resnet take longer on the CPU than the meta device's one-time set-up: docs/performance.md, section 7) ...
CPU_CHECK_MAX_PARAMETERS = 12_000_000
#: ... and images of at most this many pixels; anything larger is checked on the meta device.
CPU_CHECK_MAX_PIXELS = 128 * 128


def check_model_shape(model_name: str, model_params: dict[str, Any], facts: ModelFacts,
                      device: str | None = None) -> None:
    """Raise ModelFitError when the model cannot take the images as configured or returns the wrong width.

    The model is built on the `meta` device first (no memory, no compute) to count its parameters. A model of up
    to CPU_CHECK_MAX_PARAMETERS on images of up to CPU_CHECK_MAX_PIXELS then runs one zero image through a real
    CPU forward pass (docs/performance.md, section 7, has the times); a larger one runs it on the
    meta device, which checks every shape without computing but costs seconds the first time in a process
    (torch loads its decompositions and torch._dynamo). `device` forces "cpu" or "meta". The global random state
    is left as it was. `parameter` of the error names the model parameter to blame, if any.
    """
    import torch

    from lossbench.models import IncompatibleInput

    builder = registries()["models"].build(model_name, model_params)
    try:
        with torch.random.fork_rng(devices=[]):
            if device is None:
                with torch.device("meta"):
                    size = sum(p.numel() for p in builder.build(facts).parameters())
                pixels = facts.image_size[0] * facts.image_size[1]
                cheap = size <= CPU_CHECK_MAX_PARAMETERS and pixels <= CPU_CHECK_MAX_PIXELS
                device = "cpu" if cheap else "meta"
            with torch.device(device), torch.no_grad():
                model = builder.build(facts).eval()  # one image: batch norm in training mode needs two
                out = model(torch.zeros(1, facts.in_channels, *facts.image_size))
    except IncompatibleInput as exc:
        raise ModelFitError(message=f"model '{model_name}': {exc}", value=model_params.get(exc.parameter or ""),
                            parameter=exc.parameter) from None
    except (RuntimeError, ValueError, AssertionError) as exc:  # torchvision's ViT asserts the image size
        raise ModelFitError(message=f"model '{model_name}' does not fit images of {facts.in_channels}×"
                                    f"{facts.image_size[0]}×{facts.image_size[1]}: {exc}") from None
    if tuple(out.shape) != (1, facts.out_features):
        raise ModelFitError(message=f"model '{model_name}' returns outputs of shape {tuple(out.shape[1:])} per "
                                    f"image; the loss needs ({facts.out_features},)")


def parameter_groups(model: nn.Module, loss: Loss) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: the model's weights (the optimizer's own settings), then the loss's own
    parameters, if any (class weights, centres), with the loss's `weight_decay` instead of the optimizer's, so
    that a decay meant for the network does not act on them unasked. Both groups share the learning rate,
    schedule, momentum and the optimizer's other state."""
    groups: list[dict[str, Any]] = [{"params": list(model.parameters())}]
    own = list(loss.parameters())
    if own:
        groups.append({"params": own, "weight_decay": loss.weight_decay})
    return groups


def build_loss(cell: Cell) -> Loss:
    """The cell's loss, built from its resolved parameters (not yet set up for a dataset)."""
    return registries()["losses"].build(cell.loss.name, cell.loss.params)


def build_regularizers(cell: Cell) -> RegularizerSet:
    """The cell's regularizers, built from their resolved parameters."""
    from lossbench.regularizers import RegularizerSet

    return RegularizerSet([registries()["regularizers"].build(r.name, r.params) for r in cell.regularizer])


def build_cell(cell: Cell, data: ImageData, options: EngineOptions) -> CellParts:
    """Everything one cell trains with, as its recipe says, on `options.device`, seeded as the module docstring
    says."""
    import torch

    from lossbench.augment import AugmentationPipeline
    from lossbench.data.base import ImageShape
    from lossbench.data.scenarios import ScenarioSet
    from lossbench.engine import CellParts

    reg, recipe = registries(), cell.recipe
    # 1. The cell's data scenario (label noise, imbalance, subset) replaces the training split.
    scenarios = ScenarioSet([reg["scenarios"].build(s.name, s.params) for s in cell.scenario])
    data, scenario = scenarios.apply(data, cell.seed)
    steps_per_epoch = math.ceil(int(data.train_x.shape[0]) / recipe.batch_size)
    loss = build_loss(cell)
    regularizers = build_regularizers(cell)
    shape = ImageShape(data.channels, *data.image_size, data.num_classes)
    facts = model_facts(shape, loss, regularizers.dropout())
    # 2. Initial weights: the seed and the model only.
    torch.manual_seed(cell.seed)
    model = reg["models"].build(recipe.model.name, recipe.model.params).build(facts).to(options.device)
    # A loss with parameters of its own creates them here, after the model, from the same seeded stream: they
    # depend on the seed only, like the model's weights, which stay what they were without it.
    loss.setup(data.num_classes)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if options.compile:
        model.compile()  # in place: the module, its parameters and state_dict keys stay the same
    loss = loss.to(options.device)
    augment = AugmentationPipeline([reg["augmentations"].build(a.name, a.params) for a in cell.augmentation],
                                   data.num_classes)
    optimizer = reg["optimizers"].build(cell.optimizer.name, cell.optimizer.params).build(
        parameter_groups(model, loss), fused=options.device.type == "cuda"
    )
    schedule = reg["schedules"].build(recipe.schedule.name, recipe.schedule.params).build(
        optimizer, total_steps=steps_per_epoch * recipe.epochs, steps_per_epoch=steps_per_epoch
    )
    scaler = torch.amp.GradScaler(options.device.type, enabled=options.precision == "fp16")
    # 3.–5. The random streams of training.
    order = torch.Generator().manual_seed(cell.seed)
    augment_rng = np.random.default_rng([cell.seed, 1])
    torch.manual_seed(cell.seed + 1)
    return CellParts(data=data, scenario=scenario, model=model, loss=loss, regularizers=regularizers,
                     augment=augment, optimizer=optimizer, schedule=schedule, order=order, augment_rng=augment_rng,
                     scaler=scaler)
