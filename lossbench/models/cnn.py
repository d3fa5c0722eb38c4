"""The articles' CNNs: 3×3 conv blocks with max-pooling, a hidden dense layer, then the output layer.

They adapt to the dataset: input channels, image size (with `padding: auto` they keep the articles' valid
convolutions where the feature map stays at least 1×1), and the output width. Dropout can go before the
classifier and after each conv block.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import nn

from lossbench.models.base import IncompatibleInput, Model, ModelFacts
from lossbench.models.registry import MODELS

Padding = Literal["auto", "valid", "same"]


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
            raise IncompatibleInput(
                f"images of {image_size[0]}×{image_size[1]} are too small for valid padding "
                f"({len(blocks)} conv blocks); use padding: same or auto", parameter="padding")
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


class ArticleCNN(Model):
    """Shared builder of the articles' CNNs: conv blocks, then a hidden dense layer, then the output layer."""

    blocks: ClassVar[list[tuple[int, bool]]]
    hidden: ClassVar[int]
    dropout_places = frozenset({"classifier", "conv"})

    def __init__(self, padding: Padding = "auto"):
        if padding not in ("auto", "valid", "same"):
            raise ValueError(f"padding must be auto, valid or same; got {padding!r}")
        self.padding = padding

    def build(self, facts: ModelFacts) -> nn.Module:
        features, width = _conv_stack(facts.in_channels, facts.image_size, self.blocks, self.padding,
                                      facts.dropout.conv)
        return nn.Sequential(features, _classifier(width, self.hidden, facts.out_features, facts.dropout.classifier))


@MODELS.register("tutorial_cnn")
class TutorialCNN(ArticleCNN):
    """TensorFlow's CIFAR-10 tutorial CNN: conv32-pool-conv64-pool-conv64, dense64, output (122k params at 32×32)."""

    blocks = [(32, True), (64, True), (64, False)]
    hidden = 64


@MODELS.register("small_cnn")
class SmallCNN(ArticleCNN):
    """One conv block: conv32-pool, dense64, output."""

    blocks = [(32, True)]
    hidden = 64


@MODELS.register("deep_cnn")
class DeepCNN(ArticleCNN):
    """Three conv blocks with pooling: conv32-pool-conv64-pool-conv128-pool, dense512, output (any image size)."""

    blocks = [(32, True), (64, True), (128, True)]
    hidden = 512

    def __init__(self, padding: Padding = "same"):
        super().__init__(padding)
