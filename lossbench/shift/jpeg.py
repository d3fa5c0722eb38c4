"""The `jpeg_compression` corruption: baseline JPEG as libjpeg (PIL) writes and reads it at `quality`: YCbCr, 4:2:0
chroma, 8×8 DCT, the standard quantization tables scaled by quality, triangular ("fancy") chroma upsampling;
batched on the device."""

from __future__ import annotations

import math
from functools import cache

import torch
import torch.nn.functional as F

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


def jpeg(x: torch.Tensor, quality: int, g: torch.Generator | None) -> torch.Tensor:
    """Images [N, C, H, W] in [0, 1] encoded and decoded as JPEG at `quality` (1–100); `g` is unused."""
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
