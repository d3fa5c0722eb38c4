"""Residual networks in the form used on 32x32 images: `resnet18`, `resnet34`, `preact_resnet18`, `wide_resnet`.

- `ResNet` (He et al. 2016, with the widely used CIFAR layout of kuangliu/pytorch-cifar): a 3x3 stride-1 stem
  conv without max-pooling, four stages of basic blocks with `width`, 2·width, 4·width, 8·width channels (the
  last three halve the resolution), global average pooling and a linear classifier. ResNet-18 has [2, 2, 2, 2]
  blocks, ResNet-34 [3, 4, 6, 3]; 11.17M and 21.28M parameters for 10 classes at width 64.
- `PreActResNet` (He et al. 2016b, "Identity mappings"): the same stages with BN-ReLU before each conv, and a
  final BN-ReLU before pooling as in the paper.
- `WideResNet` (Zagoruyko & Komodakis 2016): depth 6n+4, three stages of n pre-activation blocks with 16k, 32k
  and 64k channels after a 16-channel stem; WRN-28-10 is depth 28, widen factor 10 (36.5M parameters), WRN-16-4
  depth 16, factor 4 (2.75M). `block_dropout` is the paper's dropout between a block's two convolutions, after
  the second BN-ReLU (where the paper's figure 1(d) and the authors' code put it).

Every network takes `in_channels` and ends in `num_outputs` units (classes, or feature width for losses that
hold their own class layer); `classifier_dropout` puts dropout right before that final layer. Convolutions
use He (fan-out) initialization, BatchNorm starts at scale 1 and shift 0, as in torchvision's ResNets. The
pooling is adaptive, so any image size of at least 1 pixel after the strides works (8x8 digits included).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lossbench.models.base import Model, ModelFacts
from lossbench.models.registry import MODELS


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut (a 1x1 conv + BN where the shape changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels)
        self.conv2, self.bn2 = _conv3x3(out_channels, out_channels), nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3 plus the shortcut (a 1x1 conv of the pre-activated input where the
    shape changes, else the input itself). The dropout sits after the second BN-ReLU, right before the second
    convolution, as in Zagoruyko & Komodakis (2016, fig. 1d) and their code (models/wide-resnet.lua): placed before
    the BN, it would change the batch statistics the BN normalizes with rather than perturb its output."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_channels), _conv3x3(in_channels, out_channels, stride)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.bn2, self.conv2 = nn.BatchNorm2d(out_channels), _conv3x3(out_channels, out_channels)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(torch.relu(self.bn2(out))))
        return out + skip


class _Head(nn.Sequential):
    """Global average pooling, flatten, optional dropout, and the final linear layer."""

    def __init__(self, in_features: int, num_outputs: int, dropout: float):
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(in_features, num_outputs))
        super().__init__(*layers)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def _stage(block: type[BasicBlock] | type[PreActBlock], in_channels: int, out_channels: int, blocks: int,
           stride: int, **extra: float) -> nn.Sequential:
    layers = []
    for i in range(blocks):
        layers.append(block(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1, **extra))
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """CIFAR ResNet with basic blocks: stem conv3x3 (stride 1, no max-pool), 4 stages, pooling, linear."""

    def __init__(self, blocks: Sequence[int], in_channels: int, num_outputs: int, width: int = 64,
                 classifier_dropout: float = 0.0):
        super().__init__()
        self.stem = nn.Sequential(_conv3x3(in_channels, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        channels = [width, 2 * width, 4 * width, 8 * width]
        self.stages = nn.Sequential(*(
            _stage(BasicBlock, channels[max(i - 1, 0)], channels[i], n, 1 if i == 0 else 2)
            for i, n in enumerate(blocks)
        ))
        self.head = _Head(channels[len(blocks) - 1], num_outputs, classifier_dropout)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


class PreActResNet(nn.Module):
    """Pre-activation ResNet: stem conv3x3, 4 stages of pre-activation blocks, BN-ReLU, pooling, linear."""

    def __init__(self, blocks: Sequence[int], in_channels: int, num_outputs: int, width: int = 64,
                 classifier_dropout: float = 0.0):
        super().__init__()
        self.stem = _conv3x3(in_channels, width)
        channels = [width, 2 * width, 4 * width, 8 * width]
        self.stages = nn.Sequential(*(
            _stage(PreActBlock, channels[max(i - 1, 0)], channels[i], n, 1 if i == 0 else 2)
            for i, n in enumerate(blocks)
        ))
        last = channels[len(blocks) - 1]
        self.final = nn.Sequential(nn.BatchNorm2d(last), nn.ReLU(inplace=True))
        self.head = _Head(last, num_outputs, classifier_dropout)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.final(self.stages(self.stem(x))))


class WideResNet(nn.Module):
    """WRN-depth-k: stem conv3x3 to 16 channels, 3 stages of (depth-4)/6 pre-activation blocks of 16k/32k/64k."""

    def __init__(self, depth: int, widen_factor: int, in_channels: int, num_outputs: int, block_dropout: float = 0.0,
                 classifier_dropout: float = 0.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be >= 1, got {widen_factor}")
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.stem = _conv3x3(in_channels, channels[0])
        self.stages = nn.Sequential(*(
            _stage(PreActBlock, channels[i], channels[i + 1], n, 1 if i == 0 else 2, dropout=block_dropout)
            for i in range(3)
        ))
        self.final = nn.Sequential(nn.BatchNorm2d(channels[3]), nn.ReLU(inplace=True))
        self.head = _Head(channels[3], num_outputs, classifier_dropout)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.final(self.stages(self.stem(x))))


# ---------------------------------------------------------------------------------------------------------------
# The registered models.


def _check_width(width: int) -> None:
    if isinstance(width, bool) or width < 1:
        raise ValueError(f"width must be a positive number of channels, got {width}")


class _CifarResNet(Model):
    """Shared builder of the ResNets: `width` channels in the first stage (64 in the papers; less for tiny tests)."""

    blocks: tuple[int, ...]
    preact = False
    dropout_places = frozenset({"classifier"})

    def __init__(self, width: int = 64):
        _check_width(width)
        self.width = width

    def build(self, facts: ModelFacts) -> nn.Module:
        network = PreActResNet if self.preact else ResNet
        return network(self.blocks, facts.in_channels, facts.out_features, self.width, facts.dropout.classifier)


@MODELS.register("resnet18")
class ResNet18(_CifarResNet):
    """ResNet-18, CIFAR form: 3x3 stride-1 stem, no max-pool, [2,2,2,2] basic blocks (11.2M params, 10 classes)."""

    blocks = (2, 2, 2, 2)


@MODELS.register("resnet34")
class ResNet34(_CifarResNet):
    """ResNet-34, CIFAR form: 3x3 stride-1 stem, no max-pool, [3,4,6,3] basic blocks (21.3M params, 10 classes)."""

    blocks = (3, 4, 6, 3)


@MODELS.register("preact_resnet18")
class PreActResNet18(_CifarResNet):
    """Pre-activation ResNet-18 (He et al. 2016b), CIFAR form: BN-ReLU before each conv (11.2M params, 10 classes)."""

    blocks = (2, 2, 2, 2)
    preact = True


@MODELS.register("wide_resnet")
class WideResNetModel(Model):
    """Wide ResNet WRN-depth-widen_factor (Zagoruyko & Komodakis 2016); default WRN-28-10 (36.5M params), or 16-4."""

    dropout_places = frozenset({"classifier"})

    def __init__(self, depth: int = 28, widen_factor: int = 10, block_dropout: float = 0.0):
        if isinstance(depth, bool) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        if isinstance(widen_factor, bool) or widen_factor < 1:
            raise ValueError(f"widen_factor must be >= 1, got {widen_factor}")
        if not 0.0 <= block_dropout < 1.0:
            raise ValueError(f"block_dropout must be in [0, 1), got {block_dropout}")
        self.depth, self.widen_factor, self.block_dropout = depth, widen_factor, block_dropout

    def build(self, facts: ModelFacts) -> nn.Module:
        return WideResNet(self.depth, self.widen_factor, facts.in_channels, facts.out_features, self.block_dropout,
                          facts.dropout.classifier)
