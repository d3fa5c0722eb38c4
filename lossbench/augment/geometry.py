"""Augmentations that move pixels: flips and crops (exact pixel moves), and affine warps (translate, rotate,
scale) through one sampling grid per batch (bilinear interpolation)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from lossbench.augment.base import AUGMENTATIONS, Augmentation, as_params, check_nonnegative, check_probability

PaddingMode = Literal["zeros", "border", "reflection"]


class _RandomFlip(Augmentation):
    """Mirror along `axis` (3: left-right, 2: top-bottom), each sample independently with probability p."""

    num_params = 1
    axis: ClassVar[int]

    def __init__(self, p: float = 0.5):
        check_probability("p", p)
        self.p = p

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flip = (params[:, 0] < self.p).view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(self.axis), x), y


@AUGMENTATIONS.register("hflip")
class HorizontalFlip(_RandomFlip):
    """Mirror left-right, each sample independently with probability p."""

    axis = 3


@AUGMENTATIONS.register("vflip")
class VerticalFlip(_RandomFlip):
    """Mirror top-bottom, each sample independently with probability p."""

    axis = 2


@AUGMENTATIONS.register("crop")
class PadCrop(Augmentation):
    """Pad by `padding` pixels, then crop back to the original size at a random offset per sample."""

    num_params = 2

    def __init__(self, padding: int = 4, pad_mode: Literal["zeros", "reflect", "replicate"] = "zeros"):
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding = padding
        self.pad_mode = pad_mode

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.padding
        if p == 0:
            return x, y
        b, c, h, w = x.shape
        mode = "constant" if self.pad_mode == "zeros" else self.pad_mode
        padded = F.pad(x, (p, p, p, p), mode=mode)
        # Offsets in 0..2p, one pair per sample: the crop window's top-left corner inside the padded image.
        dy = (params[:, 0] * (2 * p + 1)).long().clamp_(max=2 * p)
        dx = (params[:, 1] * (2 * p + 1)).long().clamp_(max=2 * p)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(b, c, h, w + 2 * p)
        out = padded.gather(2, rows)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(b, c, h, w)
        return out.gather(3, cols), y


def _affine(
    x: torch.Tensor, a: torch.Tensor, t: torch.Tensor, padding_mode: PaddingMode
) -> torch.Tensor:
    """Warp each image: output pixel p (pixels from the centre) takes the input at a[b] @ p + t[b].

    `a` is [B, 2, 2] and `t` [B, 2] in pixel units, (x, y) order. affine_grid works in coordinates normalized
    to [-1, 1] per axis, so the off-diagonal terms carry the aspect ratio and the shift is divided by half
    the image size.
    """
    b, _, h, w = x.shape
    theta = torch.empty(b, 2, 3, device=x.device, dtype=torch.float32)
    theta[:, 0, 0] = a[:, 0, 0]
    theta[:, 0, 1] = a[:, 0, 1] * (h / w)
    theta[:, 1, 0] = a[:, 1, 0] * (w / h)
    theta[:, 1, 1] = a[:, 1, 1]
    theta[:, 0, 2] = t[:, 0] * (2.0 / w)
    theta[:, 1, 2] = t[:, 1] * (2.0 / h)
    grid = F.affine_grid(theta, [b, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode=padding_mode, align_corners=False).to(x.dtype)


@AUGMENTATIONS.register("translate")
class Translate(Augmentation):
    """Shift by up to `max_pixels` in x and y (uniform, sub-pixel, bilinear); uncovered pixels per padding_mode."""

    num_params = 2

    def __init__(self, max_pixels: float = 4.0, padding_mode: PaddingMode = "zeros"):
        check_nonnegative("max_pixels", max_pixels)
        self.max_pixels = max_pixels
        self.padding_mode = padding_mode

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        shift = rng.uniform(-self.max_pixels, self.max_pixels, size=(n, 2))
        return as_params([shift[:, 0], shift[:, 1]])

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.max_pixels == 0:
            return x, y
        eye = torch.eye(2, device=x.device).expand(x.shape[0], 2, 2)
        # The content moves by +shift, so each output pixel reads the input at p - shift.
        return _affine(x, eye, -params[:, :2], self.padding_mode), y


@AUGMENTATIONS.register("rotate")
class Rotate(Augmentation):
    """Rotate about the centre by an angle uniform in [-degrees, degrees] (bilinear, affine grid)."""

    num_params = 2

    def __init__(self, degrees: float = 15.0, padding_mode: PaddingMode = "zeros"):
        if not 0.0 <= degrees <= 180.0:
            raise ValueError(f"degrees must be in [0, 180], got {degrees}")
        self.degrees = degrees
        self.padding_mode = padding_mode

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        # cos and sin on the host: the device then only multiplies, so CPU and GPU see the same matrix.
        angle = np.deg2rad(rng.uniform(-self.degrees, self.degrees, size=n))
        return as_params([np.cos(angle), np.sin(angle)])

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.degrees == 0:
            return x, y
        cos, sin = params[:, 0], params[:, 1]
        a = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
        return _affine(x, a, torch.zeros_like(params[:, :2]), self.padding_mode), y


@AUGMENTATIONS.register("scale")
class Scale(Augmentation):
    """Zoom about the centre by a factor uniform in `zoom` (>1 enlarges the content; bilinear, affine grid)."""

    num_params = 1

    def __init__(self, zoom: tuple[float, float] = (0.9, 1.1), padding_mode: PaddingMode = "zeros"):
        low, high = zoom
        if not 0 < low <= high:
            raise ValueError(f"zoom must be (low, high) with 0 < low <= high, got {list(zoom)}")
        self.zoom = (float(low), float(high))
        self.padding_mode = padding_mode

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return as_params([1.0 / rng.uniform(self.zoom[0], self.zoom[1], size=n)])

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.zoom == (1.0, 1.0):
            return x, y
        inv = params[:, 0].view(-1, 1, 1)
        a = torch.eye(2, device=x.device) * inv
        return _affine(x, a, torch.zeros(x.shape[0], 2, device=x.device), self.padding_mode), y
