"""The CNNs lossbench trains, adapting to the dataset's channels, image size and output width.

Each model is registered by name; its constructor's keyword parameters are what a suite may set under
`model:`, and the engine supplies the rest (`runtime_params`): input channels, image size, the width of the
final layer (classes for a logits loss, embedding size for an embedding loss) and the dropout plan.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn

from lossbench.registry import Contract, Registry
from lossbench.regularizers import DropoutPlan

Padding = Literal["auto", "valid", "same"]


class ModelBuilder:
    """Base of registered models: `build()` returns the nn.Module for one cell."""

    runtime_params: ClassVar[tuple[str, ...]] = ("in_channels", "image_size", "out_features", "dropout")
    constructible_without_runtime: ClassVar[bool] = False


MODELS: Registry[ModelBuilder] = Registry("models", "model", Contract(
    ModelBuilder, ("build",),
    "a custom model is a subclass of lossbench.models.ModelBuilder whose constructor takes the suite's parameters "
    "and in_channels, image_size, out_features, dropout, and which defines build() returning the torch.nn.Module",
))


def _conv_stack(
    in_channels: int,
    image_size: tuple[int, int],
    blocks: list[tuple[int, bool]],
    padding: Padding,
    conv_dropout: float,
) -> tuple[nn.Sequential, int]:
    """3×3 conv + ReLU blocks, each optionally followed by 2×2 max-pooling; returns the stack and its flat width.

    `valid` convolutions (no padding) are the articles' networks; `auto` keeps them where the feature map stays
    at least 1×1 and switches to `same` padding for images too small for that (8×8 digits). A pooling layer that
    would shrink a 1-pixel map is dropped rather than produce an empty tensor.
    """
    if padding == "auto":
        padding = "valid" if _final_size(image_size, blocks, "valid") >= 1 else "same"
    layers: list[nn.Module] = []
    h, w = image_size
    channels = in_channels
    for out_channels, pool in blocks:
        layers.append(nn.Conv2d(channels, out_channels, 3, padding=1 if padding == "same" else 0))
        if padding == "valid":
            h, w = h - 2, w - 2
        if h < 1 or w < 1:
            raise ValueError(f"images of {image_size[0]}×{image_size[1]} are too small for valid padding")
        if pool and min(h, w) >= 2:
            # ReLU commutes with max-pooling, so pooling first gives the same outputs and gradients with a
            # quarter of the ReLU work (+35% training images/s at fp32 on a CPU, docs/performance.md).
            layers += [nn.MaxPool2d(2), nn.ReLU(inplace=True)]
            h, w = h // 2, w // 2
        else:
            layers.append(nn.ReLU(inplace=True))
        if conv_dropout > 0:
            layers.append(nn.Dropout(conv_dropout))
        channels = out_channels
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), channels * h * w


def _final_size(image_size: tuple[int, int], blocks: list[tuple[int, bool]], padding: str) -> int:
    h = min(image_size)
    for _, pool in blocks:
        h = h - 2 if padding == "valid" else h
        if h < 1:
            return 0
        if pool and h >= 2:
            h //= 2
    return h


def _classifier(width: int, hidden: int, out_features: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, out_features))
    return nn.Sequential(*layers)


class _SeedCNN(ModelBuilder):
    """Shared builder of the articles' CNNs: conv blocks, then a hidden dense layer, then the output layer."""

    blocks: ClassVar[list[tuple[int, bool]]]
    hidden: ClassVar[int]

    def __init__(
        self,
        padding: Padding = "auto",
        *,
        in_channels: int = 3,
        image_size: tuple[int, int] = (32, 32),
        out_features: int = 10,
        dropout: DropoutPlan = DropoutPlan(),
    ):
        if padding not in ("auto", "valid", "same"):
            raise ValueError(f"padding must be auto, valid or same; got {padding!r}")
        self.padding = padding
        self.in_channels, self.image_size, self.out_features, self.dropout = (
            in_channels, tuple(image_size), out_features, dropout,
        )

    def build(self) -> nn.Module:
        features, width = _conv_stack(self.in_channels, self.image_size, self.blocks, self.padding, self.dropout.conv)
        return nn.Sequential(features, _classifier(width, self.hidden, self.out_features, self.dropout.classifier))


@MODELS.register("tutorial_cnn")
class TutorialCNN(_SeedCNN):
    """TensorFlow's CIFAR-10 tutorial CNN: conv32-pool-conv64-pool-conv64, dense64, output (122k params at 32×32)."""

    blocks = [(32, True), (64, True), (64, False)]
    hidden = 64


@MODELS.register("small_cnn")
class SmallCNN(_SeedCNN):
    """One conv block: conv32-pool, dense64, output."""

    blocks = [(32, True)]
    hidden = 64


@MODELS.register("deep_cnn")
class DeepCNN(_SeedCNN):
    """Three conv blocks with pooling: conv32-pool-conv64-pool-conv128-pool, dense512, output (any image size)."""

    blocks = [(32, True), (64, True), (128, True)]
    hidden = 512

    def __init__(self, padding: Padding = "same", **runtime: object):
        super().__init__(padding, **runtime)  # type: ignore[arg-type]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def output_layer(model: nn.Module) -> nn.Linear:
    """The final Linear layer of a built model (the one whose width the loss decides)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError("model has no Linear output layer")
    return last[-1]


def forward_shape_check(model: nn.Module, in_channels: int, image_size: tuple[int, int]) -> torch.Size:
    with torch.no_grad():
        return model(torch.zeros(2, in_channels, *image_size)).shape
