"""Augmentations that change what pixels show: occlusion (cutout), colour (colour jitter) and noise."""

from __future__ import annotations

import math

import numpy as np
import torch

from lossbench.augment.base import (
    AUGMENTATIONS,
    KEY_BITS,
    Augmentation,
    as_params,
    box_masks,
    check_nonnegative,
    check_probability,
)


@AUGMENTATIONS.register("cutout")
class Cutout(Augmentation):
    """Set a size×size square at a uniform random centre to `fill` (in [0, 1] pixel units); clipped at borders."""

    num_params = 2

    def __init__(self, size: int = 8, fill: float = 0.0):
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        check_probability("fill", fill)
        self.size = size
        self.fill = fill

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.size == 0:
            return x, y
        _, _, h, w = x.shape
        cy = (params[:, 0] * h).floor()
        cx = (params[:, 1] * w).floor()
        y0, x0 = cy - self.size // 2, cx - self.size // 2
        rows, cols = box_masks(y0, y0 + self.size, h), box_masks(x0, x0 + self.size, w)
        mask = rows[:, None, :, None] & cols[:, None, None, :]
        return x.masked_fill(mask, self.fill), y


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] luma with torchvision's weights (ITU-R 601); a one-channel image is its own luma."""
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 0.2989 * r + 0.587 * g + 0.114 * b


@AUGMENTATIONS.register("color_jitter")
class ColorJitter(Augmentation):
    """Brightness, contrast and saturation factors uniform in [1-s, 1+s] per sample, applied in that order."""

    num_params = 3

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4):
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            check_nonnegative(name, value)
        self.strengths = (brightness, contrast, saturation)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return as_params([rng.uniform(max(0.0, 1.0 - s), 1.0 + s, size=n) for s in self.strengths])

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        brightness, contrast, saturation = self.strengths
        f = params.view(-1, 3, 1, 1, 1)
        # The same blends as torchvision's adjust_brightness / adjust_contrast / adjust_saturation, per sample.
        if brightness > 0:
            x = (x * f[:, 0]).clamp_(0.0, 1.0)
        if contrast > 0:
            mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
            x = (f[:, 1] * x + (1.0 - f[:, 1]) * mean).clamp_(0.0, 1.0)
        if saturation > 0 and x.shape[1] == 3:
            x = (f[:, 2] * x + (1.0 - f[:, 2]) * _grayscale(x)).clamp_(0.0, 1.0)
        return x, y


_U32 = 0xFFFFFFFF


def _hash32(v: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixing function on int64 tensors holding values in [0, 2**32).

    The multiplier is below 2**31, so every product stays below 2**63: no overflow, and the same bits on
    every device.
    """
    v = (((v >> 16) ^ v) * 0x45D9F3B) & _U32
    v = (((v >> 16) ^ v) * 0x45D9F3B) & _U32
    return (v >> 16) ^ v


@AUGMENTATIONS.register("gaussian_noise")
class GaussianNoise(Augmentation):
    """Add N(0, sigma²) noise to every pixel (sigma in [0, 1] pixel units), then clip to [0, 1].

    Per-pixel noise for a whole epoch would be as large as the dataset, so the host draws two 24-bit keys per
    sample and the device turns (keys, pixel index) into normals with an integer hash and Box–Muller: the same
    noise on CPU and GPU, up to the rounding of log and cos.
    """

    num_params = 2

    def __init__(self, sigma: float = 0.03):
        check_nonnegative("sigma", sigma)
        self.sigma = sigma

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, 2**KEY_BITS, size=(n, 2)).astype(np.float32)

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.sigma == 0:
            return x, y
        b, pixels = x.shape[0], x[0].numel()
        k1 = params[:, 0].long().view(b, 1)
        k2 = params[:, 1].long().view(b, 1)
        # One pair of uniforms per pair of pixels: Box–Muller gives two independent normals (cos and sin).
        pair = torch.arange((pixels + 1) // 2, device=x.device, dtype=torch.int64).view(1, -1)
        h1 = _hash32(_hash32((pair + k1 * 0x1000193) & _U32) ^ k2)
        h2 = _hash32(h1 ^ 0x5BD1E995)
        # 24-bit uniforms in (0, 1): exact in float32, and never 0 (log) or 1.
        radius = torch.sqrt(-2.0 * torch.log(((h1 >> 8).float() + 0.5) * (1.0 / 2**24)))
        angle = ((h2 >> 8).float() + 0.5) * (2.0 * math.pi / 2**24)
        z = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)[:, :pixels]
        return (x + self.sigma * z.reshape(x.shape)).clamp_(0.0, 1.0), y
