"""The `spatter` corruption: imagecorruptions' water drops (severities 1–3) and mud (4–5), batched. A liquid layer
per image is Gaussian noise of mean `loc` and deviation `scale`, blurred by `sigma` and zeroed below `threshold`;
one layer per image, shared by its channels.

The water branch follows the package's OpenCV chain step by step: Canny edges of the layer (as uint8), the
distance to the nearest edge (truncated at 20 pixels), a 3×3 box blur, histogram equalization, an emboss filter,
another box blur; the layer times that map, scaled to a maximum of `intensity`, tints the image pale turquoise.
What differs from OpenCV, so that whole batches run on the device without a per-image loop: Canny's hysteresis
(weak edges kept when 8-connected to strong ones) grows the strong edges by 3×3 dilations until nothing changes,
checked every 8 steps, instead of OpenCV's pixel stack (the same edges); the distance transform runs OpenCV's
two raster passes of its 5×5 chamfer mask a row at a time for the whole batch, in float rather than OpenCV's
fixed point (within 1e-4 pixel); the layer is clamped to [0, 1] before its uint8 cast where the package's cast
would wrap around (a blurred layer above 1 is vanishingly rare); an image whose layer is all zero is left
unchanged where the package divides 0 by 0 and returns NaN cast to uint8. Given the package's own noise draw, the
result is the package's within one grey level (tests/test_shift_corruptions.py); our draws come from torch's
generator, so with them it agrees by its statistics.

Grey images: the same mask, applied to luminance: water adds the luminance (0.2989 R + 0.5870 G + 0.1140 B, the
package's rgb2gray) of the colour it adds to an RGB image, mud blends towards its brown's luminance, as the
package's grey branch does (its `corrupt` entry point makes grey images RGB first and never reaches it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lossbench.shift.filters import blur_matrix, reflect101

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
    shifted products, cheaper than a convolution or `filter2d`'s matrix for one small kernel."""
    h, w = x.shape[1:]
    padded = x[:, reflect101(h, 1, x.device)][:, :, reflect101(w, 1, x.device)]
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


def spatter(x: torch.Tensor, param: tuple[float, float, float, float, float, int],
            g: torch.Generator | None) -> torch.Tensor:
    """Images [N, C, H, W] in [0, 1] spattered; `param` is (loc, scale, sigma, threshold, intensity, mud) of one
    severity; the liquid's noise drawn from `g`."""
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
    rows = blur_matrix(float(sigma), h).to(x.device, x.dtype)
    cols = blur_matrix(float(sigma), w).to(x.device, x.dtype)
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
    rows = blur_matrix(float(intensity), h).to(x.device, x.dtype)
    cols = blur_matrix(float(intensity), w).to(x.device, x.dtype)
    m = rows @ (layer > threshold).to(x.dtype) @ cols.T
    m = torch.where(m < 0.8, 0.0, m)[:, None]
    return (x * (1 - m) + _tint(x, _SPATTER_MUD) * m).clamp_(0, 1)
