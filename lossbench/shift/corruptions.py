"""Common corruptions of Hendrycks & Dietterich (ICLR 2019), applied to whole batches on the device.

Images are float [N, C, H, W] in [0, 1] pixel units, C = 1 (grey) or 3 (RGB); the result has the same shape and
range. Severity parameters are those of the `imagecorruptions` package (Michaelis et al. 2019: ImageNet-C's
parameters, made to work at any image size); CIFAR-10-C used milder noise and blur for 32×32 images, so numbers
here are comparable with imagecorruptions on any dataset, not with the published CIFAR-10-C files.

Random corruptions (the three noises and `spatter`) draw from the torch.Generator they are given, one draw per
pixel, so the same generator state gives the same corrupted images; deterministic ones ignore it.
tests/test_shift_corruptions.py compares every deterministic corruption with imagecorruptions pixel for pixel, the
random ones by their statistics, and `spatter` also pixel for pixel given the package's own noise draw.

Grey and tiny images: every corruption runs on 1-channel and on 8×8 images. Some mean little there:
`saturate` changes nothing on grey images (a grey pixel has no saturation), `defocus_blur`'s disk (radius 3–10
pixels, on a 17×17 or larger kernel) turns an 8×8 image into nearly its mean at every severity, and
`gaussian_blur` does the same from severity 3 (sigma 3–6 pixels), and `spatter`'s drops (noise blurred by sigma
1–4 pixels) are as large as an 8×8 image, so its five severities change such images about equally. On grey images
`spatter` adds the luminance of the colour it would add to the RGB image (water) or blends towards the luminance
of its mud brown, with the same mask. The noises, `contrast`, `brightness`, `pixelate` and `jpeg_compression` keep
their meaning on 8×8 grey digits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch

from lossbench.shift.filters import blur_matrix, filter2d
from lossbench.shift.jpeg import jpeg
from lossbench.shift.spatter import spatter

#: The severities every corruption defines.
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Corruption:
    """One corruption: its parameter at each severity 1–5 and the batched function that applies it.

    `apply(x, parameter, generator)` takes float images [N, C, H, W] in [0, 1]; `random` says whether it draws
    from the generator; `grey` whether it changes grey images at all."""

    name: str
    doc: str
    parameters: tuple[Any, ...]
    apply: Callable[[torch.Tensor, Any, torch.Generator | None], torch.Tensor]
    random: bool = False
    grey: bool = True

    def __call__(self, x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if severity not in SEVERITIES:
            raise ValueError(f"severity {severity!r}: must be one of {', '.join(map(str, SEVERITIES))}")
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"images must be [N, C, H, W] with C = 1 or 3; got {tuple(x.shape)}")
        if self.random and generator is None:
            raise ValueError(f"corruption '{self.name}' is random: give it a seeded torch.Generator")
        return self.apply(x.float(), self.parameters[severity - 1], generator)


# ---------------------------------------------------------------------------------------------------------------
# Noise.


def _gaussian_noise(x: torch.Tensor, sigma: float, g: torch.Generator | None) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    return (x + noise * sigma).clamp_(0, 1)


def _shot_noise(x: torch.Tensor, photons: float, g: torch.Generator | None) -> torch.Tensor:
    # Poisson counts of `photons` per unit intensity: fewer photons, more noise. (An inverse-CDF sampler over the
    # 256 rates of 8-bit images via one searchsorted measured slower than torch.poisson on the CPU.)
    return (torch.poisson(x * photons, generator=g) / photons).clamp_(0, 1)


def _impulse_noise(x: torch.Tensor, amount: float, g: torch.Generator | None) -> torch.Tensor:
    # Salt and pepper per value (every channel on its own), as skimage.util.random_noise(mode='s&p'): a fraction
    # `amount` of values is replaced, half by 1 (salt) and half by 0 (pepper).
    u = torch.rand((2, *x.shape), generator=g, device=x.device, dtype=x.dtype)
    flipped, salt = u[0] < amount, u[1] < 0.5
    return torch.where(flipped, salt.to(x.dtype), x)


# ---------------------------------------------------------------------------------------------------------------
# Blur. Borders follow the reference: OpenCV's reflect-101 for defocus, scipy's `nearest` for the Gaussian
# (lossbench/shift/filters.py).


def _cv2_gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    k = np.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


@cache
def _disk(radius: int, alias_blur: float) -> torch.Tensor:
    """imagecorruptions' defocus kernel: a disk of `radius` pixels on a grid of at least 17×17, antialiased with a
    3×3 (5×5 above radius 8) Gaussian of sigma `alias_blur`, reflect-101 at the grid's edge, summing to 1."""
    span = 8 if radius <= 8 else radius
    ksize = 3 if radius <= 8 else 5
    grid = np.arange(-span, span + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    g = _cv2_gaussian_kernel(ksize, alias_blur)
    blurred = filter2d(torch.from_numpy(disk)[None, None], torch.from_numpy(np.outer(g, g)))
    return blurred[0, 0].float()


def _defocus_blur(x: torch.Tensor, param: tuple[int, float], g: torch.Generator | None) -> torch.Tensor:
    return filter2d(x, _disk(*param)).clamp_(0, 1)


def _gaussian_blur(x: torch.Tensor, sigma: float, g: torch.Generator | None) -> torch.Tensor:
    # scipy.ndimage.gaussian_filter (what skimage.filters.gaussian calls): radius int(4 sigma + 0.5), separable,
    # `nearest` borders (the edge pixel repeated).
    # Separable: one [H, H] and one [W, W] matrix with the borders folded in.
    rows = blur_matrix(sigma, x.shape[2]).to(x.device, x.dtype)
    cols = blur_matrix(sigma, x.shape[3]).to(x.device, x.dtype)
    return (rows @ x @ cols.T).clamp_(0, 1)


# ---------------------------------------------------------------------------------------------------------------
# Colour and contrast. HSV edits are done without converting to HSV: for a fixed hue, every channel is
# V · (1 − S · w) with w in [0, 1] a function of the hue alone, so changing V or S is a per-pixel rescaling.


def _contrast(x: torch.Tensor, factor: float, g: torch.Generator | None) -> torch.Tensor:
    means = x.mean(dim=(2, 3), keepdim=True)  # per image and channel
    return ((x - means) * factor + means).clamp_(0, 1)


def _brightness(x: torch.Tensor, shift: float, g: torch.Generator | None) -> torch.Tensor:
    # V += shift in HSV (skimage's rgb2hsv/hsv2rgb); for grey images simply x + shift.
    if x.shape[1] == 1:
        return (x + shift).clamp_(0, 1)
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + shift).clamp(0, 1)
    # A black pixel has saturation 0: it becomes grey at the new value.
    return torch.where(v > 0, x * (v_new / v.clamp(min=1e-12)), v_new).clamp_(0, 1)


def _saturate(x: torch.Tensor, param: tuple[float, float], g: torch.Generator | None) -> torch.Tensor:
    # S ← clip(S · a + b, 0, 1) in HSV. A grey pixel (S = 0) has hue 0 in skimage, i.e. red: with b > 0 it turns
    # reddish, as in imagecorruptions. Grey images are returned as they are (imagecorruptions keeps one channel
    # of the RGB result, which is unchanged).
    if x.shape[1] == 1:
        return x.clone()
    a, b = param
    v = x.amax(dim=1, keepdim=True)
    delta = v - x.amin(dim=1, keepdim=True)
    s = torch.where(v > 0, delta / v.clamp(min=1e-12), torch.zeros_like(v))
    s_new = (s * a + b).clamp(0, 1)
    # w: each channel's distance below the maximum as a fraction of the range; for grey pixels hue 0 → (0, 1, 1).
    grey_w = torch.tensor([0.0, 1.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    w = torch.where(delta > 0, (v - x) / delta.clamp(min=1e-12), grey_w)
    return (v * (1 - s_new * w)).clamp_(0, 1)


# ---------------------------------------------------------------------------------------------------------------
# Pixelate: PIL's two resizes, BOX down to `factor` of the size and NEAREST back up.


@cache
def _box_weights(n_in: int, n_out: int) -> torch.Tensor:
    """[n_out, n_in] weights of PIL's BOX resampling (Pillow's precompute_coeffs with the box filter)."""
    scale = n_in / n_out
    support = 0.5 * max(scale, 1.0)
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        for j in range(lo, hi):
            t = (j - center + 0.5) / max(scale, 1.0)
            weights[i, j] = 1.0 if -0.5 < t <= 0.5 else 0.0
        weights[i] /= weights[i].sum()
    return weights.float()


def _pixelate(x: torch.Tensor, factor: float, g: torch.Generator | None) -> torch.Tensor:
    h, w = x.shape[2:]
    small_h, small_w = max(int(h * factor), 1), max(int(w * factor), 1)
    down_h, down_w = _box_weights(h, small_h).to(x.device), _box_weights(w, small_w).to(x.device)
    small = torch.einsum("ih,nchw,jw->ncij", down_h, x, down_w)
    rows, cols = _nearest_index(small_h, h).to(x.device), _nearest_index(small_w, w).to(x.device)
    return small[:, :, rows][:, :, :, cols].clamp_(0, 1)


@cache
def _nearest_index(n_in: int, n_out: int) -> torch.Tensor:
    """PIL's NEAREST upsampling: output pixel i reads input floor((i + 0.5) · in / out), the coordinate summed step
    by step in double precision as Pillow's affine transform does (so it lands where PIL's does at exact ties)."""
    step, coordinate, index = n_in / n_out, 0.5 * (n_in / n_out), []
    for _ in range(n_out):
        index.append(min(int(coordinate), n_in - 1))
        coordinate += step
    return torch.tensor(index)


# ---------------------------------------------------------------------------------------------------------------
# The table. Parameters per severity 1..5, from imagecorruptions/corruptions.py.

_TABLE = [
    Corruption("gaussian_noise", "additive Gaussian noise of standard deviation 0.08–0.38",
               (0.08, 0.12, 0.18, 0.26, 0.38), _gaussian_noise, random=True),
    Corruption("shot_noise", "Poisson (photon) noise at 60–3 photons per unit intensity",
               (60, 25, 12, 5, 3), _shot_noise, random=True),
    Corruption("impulse_noise", "salt-and-pepper noise on 3–27 % of the values",
               (0.03, 0.06, 0.09, 0.17, 0.27), _impulse_noise, random=True),
    Corruption("defocus_blur", "disk-shaped blur of radius 3–10 pixels",
               ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)), _defocus_blur),
    Corruption("gaussian_blur", "Gaussian blur of sigma 1–6 pixels", (1, 2, 3, 4, 6), _gaussian_blur),
    Corruption("contrast", "contrast to 40–5 % around each image's channel means",
               (0.4, 0.3, 0.2, 0.1, 0.05), _contrast),
    Corruption("brightness", "HSV value raised by 0.1–0.5", (0.1, 0.2, 0.3, 0.4, 0.5), _brightness),
    Corruption("saturate", "HSV saturation scaled by 0.3, 0.1, 2, 5, 20 (plus 0–0.2); no effect on grey images",
               ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2)), _saturate, grey=False),
    Corruption("jpeg_compression", "JPEG at quality 25, 18, 15, 10, 7", (25, 18, 15, 10, 7), jpeg),
    Corruption("pixelate", "box-downsampled to 60–25 % of the size, nearest-upsampled back",
               (0.6, 0.5, 0.4, 0.3, 0.25), _pixelate),
    Corruption("spatter", "water drops tinted pale turquoise (severities 1–3), mud splashes (4–5)",
               ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)), spatter, random=True),
]
#: Every corruption by name, in the order `lossbench list` and the report show them.
CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in _TABLE}


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """`x` (float [N, C, H, W] in [0, 1]) corrupted by the corruption `name` at `severity` 1–5."""
    return CORRUPTIONS[name](x, severity, generator)
