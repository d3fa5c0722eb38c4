"""The filters the corruptions share, with the borders of the reference implementations: a 2-D correlation with
OpenCV's reflect-101 borders (defocus blur, spatter) and a 1-D Gaussian with scipy's `nearest` borders (Gaussian
blur, spatter), each as matrices where that is faster than a convolution on small images."""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F

def reflect101(n: int, pad: int, device: torch.device) -> torch.Tensor:
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


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate every channel with a square odd-sized kernel, reflect-101 borders (cv2.filter2D's default)."""
    h, w = x.shape[2:]
    if h * w <= MATRIX_PIXELS and x.shape[0] * x.shape[1] > 1:
        # A BLAS matrix product is many times faster than a depthwise convolution with a large kernel on small
        # images, and the border rule is folded into the matrix.
        m = _filter_matrix(kernel, h, w).to(x.device, x.dtype)
        return (x.reshape(-1, h * w) @ m.T).view(x.shape)
    k = kernel.shape[-1]
    pad = k // 2
    rows = reflect101(x.shape[2], pad, x.device)
    cols = reflect101(x.shape[3], pad, x.device)
    padded = x[:, :, rows][:, :, :, cols]
    c = x.shape[1]
    weight = kernel.to(x.device, x.dtype).expand(c, 1, k, k)
    return F.conv2d(padded, weight, groups=c)


@cache
def _filter_matrix(kernel: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[H·W, H·W]: output pixel p = Σ_q M[p, q] · input pixel q for a correlation with `kernel`, reflect-101."""
    k = kernel.shape[-1]
    pad = k // 2
    rows, cols = reflect101(h, pad, torch.device("cpu")), reflect101(w, pad, torch.device("cpu"))
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    m = torch.zeros(h * w, h * w, dtype=torch.float64)
    for dy in range(k):
        for dx in range(k):
            source = rows[i + dy] * w + cols[j + dx]
            m.index_put_((i.flatten() * w + j.flatten(), source.flatten()),
                         torch.full((h * w,), float(kernel[dy, dx]), dtype=torch.float64), accumulate=True)
    return m.float()


@cache
def blur_matrix(sigma: float, n: int) -> torch.Tensor:
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
