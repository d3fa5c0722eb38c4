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

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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
# Blur. Borders follow the reference: OpenCV's reflect-101 for defocus, scipy's `nearest` for the Gaussian.


def _reflect101(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-n axis padded by `pad` on both sides with reflect-101 (…cb|abc|ba…), any pad ≥ 0 (the
    reflection repeats where pad ≥ n, as OpenCV's does)."""
    idx = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * n - 2
    idx = idx.remainder(period)
    return torch.where(idx >= n, period - idx, idx)


#: Images with at most this many pixels are filtered by one matrix product (the filter and its borders as an
#: [H·W, H·W] matrix: 64 MB at 64×64); larger ones by a depthwise convolution.
MATRIX_PIXELS = 4096


def _filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate every channel with a square odd-sized kernel, reflect-101 borders (cv2.filter2D's default)."""
    h, w = x.shape[2:]
    if h * w <= MATRIX_PIXELS and x.shape[0] * x.shape[1] > 1:
        # A BLAS matrix product is many times faster than a depthwise convolution with a large kernel on small
        # images, and the border rule is folded into the matrix.
        m = _filter_matrix(kernel, h, w).to(x.device, x.dtype)
        return (x.reshape(-1, h * w) @ m.T).view(x.shape)
    k = kernel.shape[-1]
    pad = k // 2
    rows = _reflect101(x.shape[2], pad, x.device)
    cols = _reflect101(x.shape[3], pad, x.device)
    padded = x[:, :, rows][:, :, :, cols]
    c = x.shape[1]
    weight = kernel.to(x.device, x.dtype).expand(c, 1, k, k)
    return F.conv2d(padded, weight, groups=c)


@cache
def _filter_matrix(kernel: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[H·W, H·W]: output pixel p = Σ_q M[p, q] · input pixel q for a correlation with `kernel`, reflect-101."""
    k = kernel.shape[-1]
    pad = k // 2
    rows, cols = _reflect101(h, pad, torch.device("cpu")), _reflect101(w, pad, torch.device("cpu"))
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    m = torch.zeros(h * w, h * w, dtype=torch.float64)
    for dy in range(k):
        for dx in range(k):
            source = rows[i + dy] * w + cols[j + dx]
            m.index_put_((i.flatten() * w + j.flatten(), source.flatten()),
                         torch.full((h * w,), float(kernel[dy, dx]), dtype=torch.float64), accumulate=True)
    return m.float()


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
    blurred = _filter2d(torch.from_numpy(disk)[None, None], torch.from_numpy(np.outer(g, g)))
    return blurred[0, 0].float()


def _defocus_blur(x: torch.Tensor, param: tuple[int, float], g: torch.Generator | None) -> torch.Tensor:
    return _filter2d(x, _disk(*param)).clamp_(0, 1)


def _gaussian_blur(x: torch.Tensor, sigma: float, g: torch.Generator | None) -> torch.Tensor:
    # scipy.ndimage.gaussian_filter (what skimage.filters.gaussian calls): radius int(4 sigma + 0.5), separable,
    # `nearest` borders (the edge pixel repeated).
    # Separable: one [H, H] and one [W, W] matrix with the borders folded in.
    rows = _blur_matrix(sigma, x.shape[2]).to(x.device, x.dtype)
    cols = _blur_matrix(sigma, x.shape[3]).to(x.device, x.dtype)
    return (rows @ x @ cols.T).clamp_(0, 1)


@cache
def _blur_matrix(sigma: float, n: int) -> torch.Tensor:
    """[n, n]: a 1-D Gaussian of `sigma` along an axis of n pixels, `nearest` borders."""
    radius = int(4.0 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    m = torch.zeros(n, n, dtype=torch.float64)
    out = torch.arange(n)
    for offset, weight in zip(range(-radius, radius + 1), k.tolist()):
        m.index_put_((out, (out + offset).clamp(0, n - 1)), torch.full((n,), weight, dtype=torch.float64),
                     accumulate=True)
    return m.float()


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
# JPEG: baseline JPEG as libjpeg (PIL) writes and reads it at `quality`: YCbCr, 4:2:0 chroma, 8×8 DCT, the
# standard quantization tables scaled by quality, triangular ("fancy") chroma upsampling.

_LUMA_TABLE = torch.tensor([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=torch.float64).view(8, 8)
_CHROMA_TABLE = torch.tensor([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=torch.float64).view(8, 8)


@cache
def _quant_tables(quality: int) -> tuple[torch.Tensor, torch.Tensor]:
    """libjpeg's jpeg_set_quality: the standard tables scaled, rounded, clamped to 1..255."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return tuple(((t * scale + 50) // 100).clamp(1, 255).float() for t in (_LUMA_TABLE, _CHROMA_TABLE))  # type: ignore[return-value]


@cache
def _dct_matrix() -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix (the JPEG transform)."""
    k = torch.arange(8, dtype=torch.float64)
    m = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2)
    return m.float()


def _jpeg_plane(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Encode and decode one plane [N, H, W] of 0..255 samples (H, W multiples of 8)."""
    # The 8×8 block DCT of a whole plane as two products with block-diagonal matrices (fast batched GEMMs
    # instead of many 8×8 ones); the quantization table tiled over the blocks.
    n, h, w = plane.shape
    d = _dct_matrix()
    dh = torch.block_diag(*[d] * (h // 8)).to(plane.device)
    dw = torch.block_diag(*[d] * (w // 8)).to(plane.device)
    q = table.repeat(h // 8, w // 8).to(plane.device)
    coeffs = dh @ (plane - 128) @ dw.T
    restored = dh.T @ (torch.round(coeffs / q) * q) @ dw
    return (restored + 128).round().clamp(0, 255)


def _pad_to(plane: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate the last row and column up to a multiple of `multiple` (libjpeg's edge expansion)."""
    h, w = plane.shape[-2:]
    rows = torch.arange(-(-h // multiple) * multiple, device=plane.device).clamp(max=h - 1)
    cols = torch.arange(-(-w // multiple) * multiple, device=plane.device).clamp(max=w - 1)
    return plane[:, rows][:, :, cols]


def _fancy_upsample(plane: torch.Tensor) -> torch.Tensor:
    """libjpeg's h2v2 fancy upsampling: each output sample is 3/4 of its nearest input and 1/4 of the next one
    along each axis, edges replicated."""
    def along(p: torch.Tensor, dim: int) -> torch.Tensor:
        n = p.shape[dim]
        idx = torch.arange(n, device=p.device)
        prev = p.index_select(dim, (idx - 1).clamp(min=0))
        nxt = p.index_select(dim, (idx + 1).clamp(max=n - 1))
        even, odd = 0.75 * p + 0.25 * prev, 0.75 * p + 0.25 * nxt
        return torch.stack((even, odd), dim=dim + 1).flatten(dim, dim + 1)
    return along(along(plane, 1), 2)


def _jpeg(x: torch.Tensor, quality: int, g: torch.Generator | None) -> torch.Tensor:
    n, c, h, w = x.shape
    luma_q, chroma_q = _quant_tables(quality)
    rgb = (x * 255).round()
    if c == 1:
        # A grey image is an RGB one with neutral chroma: only its luma plane is coded.
        y = _jpeg_plane(_pad_to(rgb[:, 0], 8), luma_q)[:, :h, :w]
        return (y / 255).unsqueeze(1)
    r, gr, b = rgb.unbind(1)
    y = 0.299 * r + 0.587 * gr + 0.114 * b
    cb = -0.168736 * r - 0.331264 * gr + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * gr - 0.081312 * b + 128
    y = _jpeg_plane(_pad_to(y.round(), 16), luma_q)
    chroma = []
    for plane in (cb, cr):
        padded = _pad_to(plane.round(), 16)
        small = F.avg_pool2d(padded.unsqueeze(1), 2).squeeze(1)
        chroma.append(_fancy_upsample(_jpeg_plane(small.round(), chroma_q)))
    cb, cr = (p - 128 for p in chroma)
    out = torch.stack((y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb), dim=1)
    return (out.round().clamp(0, 255) / 255)[:, :, :h, :w]


# ---------------------------------------------------------------------------------------------------------------
# Spatter: imagecorruptions' water drops (severities 1–3) and mud (4–5), batched. A liquid layer per image is
# Gaussian noise of mean `loc` and deviation `scale`, blurred by `sigma` and zeroed below `threshold`; one layer
# per image, shared by its channels.
#
# The water branch follows the package's OpenCV chain step by step: Canny edges of the layer (as uint8), the
# distance to the nearest edge (truncated at 20 pixels), a 3×3 box blur, histogram equalization, an emboss filter,
# another box blur; the layer times that map, scaled to a maximum of `intensity`, tints the image pale turquoise.
# What differs from OpenCV, so that whole batches run on the device without a per-image loop: Canny's hysteresis
# (weak edges kept when 8-connected to strong ones) grows the strong edges by 3×3 dilations until nothing changes,
# checked every 8 steps, instead of OpenCV's pixel stack (the same edges); the distance transform runs OpenCV's
# two raster passes of its 5×5 chamfer mask a row at a time for the whole batch, in float rather than OpenCV's
# fixed point (within 1e-4 pixel); the layer is clamped to [0, 1] before its uint8 cast where the package's cast
# would wrap around (a blurred layer above 1 is vanishingly rare); an image whose layer is all zero is left
# unchanged where the package divides 0 by 0 and returns NaN cast to uint8. Given the package's own noise draw, the result is the
# package's within one grey level (tests/test_shift_corruptions.py); our draws come from torch's generator, so
# with them it agrees by its statistics.
#
# Grey images: the same mask, applied to luminance: water adds the luminance (0.2989 R + 0.5870 G + 0.1140 B, the
# package's rgb2gray) of the colour it adds to an RGB image, mud blends towards its brown's luminance, as the
# package's grey branch does (its `corrupt` entry point makes grey images RGB first and never reaches it).

_SPATTER_WATER = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise, RGB
_SPATTER_MUD = (63 / 255, 42 / 255, 20 / 255)  # mud brown, RGB
_GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)
#: Emboss kernel the package filters the equalized distance map with (cv2.filter2D, a correlation).
_EMBOSS = ((-2.0, -1.0, 0.0), (-1.0, 1.0, 1.0), (0.0, 1.0, 2.0))
_ONES3 = ((1.0, 1.0, 1.0),) * 3
#: (dy, dx, length) of the 5×5 chamfer mask of cv2.distanceTransform(DIST_L2, 5).
_CHAMFER = [(dy, dx, {1: 1.0, 2: 1.4, 5: 2.1969}[dy * dy + dx * dx])
            for dy in range(-2, 3) for dx in range(-2, 3) if dy * dy + dx * dx in (1, 2, 5)]
#: cv2.Canny's tan(22.5°) in its 15-bit fixed point.
_TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)


def _shifted(x: torch.Tensor, dy: int, dx: int, pad: int) -> torch.Tensor:
    """x [N, H, W] padded by `pad` on every side: the view whose pixel (i, j) is the padded pixel (i + dy, j + dx)
    of the original frame."""
    h, w = x.shape[1] - 2 * pad, x.shape[2] - 2 * pad
    return x[:, pad + dy:pad + dy + h, pad + dx:pad + dx + w]


def _canny(image: torch.Tensor, low: int = 50, high: int = 150) -> torch.Tensor:
    """cv2.Canny(image, low, high) (3×3 Sobel, L1 magnitude) of uint8-valued images [N, H, W]: a bool edge map."""
    padded = F.pad(image[:, None], (1, 1, 1, 1), mode="replicate")  # Canny's Sobel replicates the border
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=image.device)
    kernels = torch.stack((sobel, sobel.T))[:, None].to(image.dtype)
    gx, gy = F.conv2d(padded, kernels).round().to(torch.int64).unbind(1)
    mag = gx.abs() + gy.abs()
    around = F.pad(mag, (1, 1, 1, 1))  # the magnitude outside the image is 0
    def nb(dy: int, dx: int) -> torch.Tensor:
        return _shifted(around, dy, dx, 1)
    # Non-maximum suppression along the gradient's direction, quantized to 0°, 45°, 90°, 135° as Canny does.
    x_abs, y_abs = gx.abs(), gy.abs() << 15
    tg22x = x_abs * _TG22
    horizontal = y_abs < tg22x
    vertical = y_abs > tg22x + (x_abs << 16)
    same_sign = (gx < 0) == (gy < 0)
    keep = torch.where(
        horizontal, (mag > nb(0, -1)) & (mag >= nb(0, 1)),
        torch.where(vertical, (mag > nb(-1, 0)) & (mag >= nb(1, 0)),
                    torch.where(same_sign, (mag > nb(-1, -1)) & (mag > nb(1, 1)),
                                (mag > nb(-1, 1)) & (mag > nb(1, -1)))))
    candidate = keep & (mag > low)
    edges = candidate & (mag > high)
    # Hysteresis: a candidate joins when 8-connected to an edge. Grown to convergence, checked every 8 steps (one
    # host sync each) so long chains are followed without a pixel stack.
    while True:
        before = edges
        for _ in range(8):
            edges = candidate & _dilate3(edges)
        if torch.equal(edges, before):
            return edges


def _dilate3(mask: torch.Tensor) -> torch.Tensor:
    """A bool [N, H, W] mask grown by its 8 neighbours (a 3×3 dilation; outside the image counts as False): four
    shifted ORs, many times faster than a max-pool over floats on the CPU."""
    rows = mask.clone()
    rows[:, :, 1:] |= mask[:, :, :-1]
    rows[:, :, :-1] |= mask[:, :, 1:]
    grown = rows.clone()
    grown[:, 1:] |= rows[:, :-1]
    grown[:, :-1] |= rows[:, 1:]
    return grown


def _chamfer_distance(edges: torch.Tensor, cap: float = 20.0) -> torch.Tensor:
    """min(cap, distance to the nearest edge pixel) under cv2.distanceTransform's 5×5 chamfer metric (steps 1, 1.4
    and 2.1969 pixels), [N, H, W]; outside the image counts as no edge.

    OpenCV's two raster passes, a row at a time for the whole batch: each row takes the minimum over the two rows
    before it, then runs along itself (d[j] = min(t[j], d[j − 1] + 1), which is j + cummin(t[k] − k))."""
    n, h, w = edges.shape
    a, b, c = 1.0, 1.4, 2.1969
    d = F.pad(torch.where(edges, 0.0, cap), (2, 2, 2, 2), value=cap)
    ramp = torch.arange(w, device=edges.device, dtype=d.dtype)
    for rows, step in ((range(2, h + 2), -1), (range(h + 1, 1, -1), 1)):
        for i in rows:
            near, far = d[:, i + step], d[:, i + 2 * step]
            t = d[:, i, 2:w + 2]
            for row, offset, length in ((far, 1, c), (far, 3, c), (near, 0, c), (near, 1, b), (near, 2, a),
                                        (near, 3, b), (near, 4, c)):
                t = torch.minimum(t, row[:, offset:offset + w] + length)
            if step < 0:  # left to right
                t = torch.cummin(t - ramp * a, dim=1).values + ramp * a
            else:  # right to left
                t = torch.cummin((t + ramp * a).flip(1), dim=1).values.flip(1) - ramp * a
            d[:, i, 2:w + 2] = t
    return d[:, 2:h + 2, 2:w + 2]


def _correlate3(x: torch.Tensor, kernel: tuple[tuple[float, ...], ...]) -> torch.Tensor:
    """x [N, H, W] correlated with a 3×3 kernel, reflect-101 borders (cv2.blur's and cv2.filter2D's default): nine
    shifted products, cheaper than a convolution or `_filter2d`'s matrix for one small kernel."""
    h, w = x.shape[1:]
    padded = x[:, _reflect101(h, 1, x.device)][:, :, _reflect101(w, 1, x.device)]
    out = torch.zeros_like(x)
    for dy in range(3):
        for dx in range(3):
            if kernel[dy][dx]:
                out += kernel[dy][dx] * padded[:, dy:dy + h, dx:dx + w]
    return out


def _equalize_hist(image: torch.Tensor) -> torch.Tensor:
    """cv2.equalizeHist of uint8-valued images [N, H, W], each on its own histogram."""
    n = image.shape[0]
    values = image.reshape(n, -1).long()
    hist = torch.zeros(n, 256, device=image.device).scatter_add_(1, values, torch.ones_like(values, dtype=torch.float))
    cdf = hist.cumsum(1)
    total = cdf[:, -1:]
    first = torch.where(hist > 0, cdf, total).amin(1, keepdim=True)  # the count of the lowest level present
    lut = ((cdf - first) * 255 / (total - first).clamp(min=1)).round().clamp(0, 255)
    out = lut.gather(1, values).view_as(image)
    # An image of one level stays that level (OpenCV's special case).
    return torch.where((total == first).view(n, 1, 1), image, out)


def _water_mask(layer: torch.Tensor, intensity: float) -> torch.Tensor:
    """The package's water mask [N, H, W] in [0, intensity] from the thresholded liquid layer."""
    layer8 = (layer.clamp(0, 1) * 255).floor()
    # The box blurs sum first and divide once, as OpenCV's box filter does (a sum of ninths would put exact
    # integers a rounding error below themselves before the floor).
    dist = (_correlate3(_chamfer_distance(_canny(layer8)), _ONES3) / 9).floor()
    dist = _correlate3(_equalize_hist(dist), _EMBOSS).round().clamp(0, 255)
    dist = (_correlate3(dist, _ONES3) / 9).round()
    m = layer8 * dist
    peak = m.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, m / peak.clamp(min=1e-12), 0.0) * intensity


def _tint(x: torch.Tensor, colour: tuple[float, float, float]) -> torch.Tensor:
    """The colour as a [1, C, 1, 1] tensor for x's channels: its luminance for grey images."""
    if x.shape[1] == 1:
        colour = (sum(c * w for c, w in zip(colour, _GREY_WEIGHTS)),)
    return torch.tensor(colour, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)


def _spatter(x: torch.Tensor, param: tuple[float, float, float, float, float, int],
             g: torch.Generator | None) -> torch.Tensor:
    loc, scale = param[:2]
    n, _, h, w = x.shape
    noise = torch.randn((n, h, w), generator=g, device=x.device, dtype=x.dtype) * scale + loc
    return _spatter_noise(x, noise, param)


def _spatter_noise(x: torch.Tensor, noise: torch.Tensor,
                   param: tuple[float, float, float, float, float, int]) -> torch.Tensor:
    """Spatter of images x [N, C, H, W] from the liquid's noise [N, H, W] (already of mean `loc` and deviation
    `scale`): the deterministic rest of the corruption, apart so that tests can give it the package's draw."""
    _, _, sigma, threshold, intensity, mud = param
    h, w = x.shape[2:]
    rows = _blur_matrix(float(sigma), h).to(x.device, x.dtype)
    cols = _blur_matrix(float(sigma), w).to(x.device, x.dtype)
    layer = rows @ noise.to(x.dtype) @ cols.T
    layer = torch.where(layer < threshold, 0.0, layer)
    if not mud:
        m = _water_mask(layer, intensity)[:, None]
        # The package clips the added colour before taking a grey image's luminance of it.
        water = torch.tensor(_SPATTER_WATER, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        added = (m * water).clamp(0, 1)
        if x.shape[1] == 1:
            grey = torch.tensor(_GREY_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            added = (added * grey).sum(1, keepdim=True)
        return (x + added).clamp_(0, 1)
    # Mud: the blobs above the threshold, softened by a Gaussian of sigma `intensity`, kept where ≥ 0.8, cover
    # the image in brown.
    rows = _blur_matrix(float(intensity), h).to(x.device, x.dtype)
    cols = _blur_matrix(float(intensity), w).to(x.device, x.dtype)
    m = rows @ (layer > threshold).to(x.dtype) @ cols.T
    m = torch.where(m < 0.8, 0.0, m)[:, None]
    return (x * (1 - m) + _tint(x, _SPATTER_MUD) * m).clamp_(0, 1)


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
    Corruption("jpeg_compression", "JPEG at quality 25, 18, 15, 10, 7", (25, 18, 15, 10, 7), _jpeg),
    Corruption("pixelate", "box-downsampled to 60–25 % of the size, nearest-upsampled back",
               (0.6, 0.5, 0.4, 0.3, 0.25), _pixelate),
    Corruption("spatter", "water drops tinted pale turquoise (severities 1–3), mud splashes (4–5)",
               ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)), _spatter, random=True),
]
#: Every corruption by name, in the order `lossbench list` and the report show them.
CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in _TABLE}


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """`x` (float [N, C, H, W] in [0, 1]) corrupted by the corruption `name` at `severity` 1–5."""
    return CORRUPTIONS[name](x, severity, generator)
