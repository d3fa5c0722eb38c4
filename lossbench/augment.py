"""Augmentations applied to whole batches on the device, with randomness drawn per sample.

Random parameters are drawn once per epoch on the host with NumPy (one [N, k] array per augmentation, moved to
the device in one copy), so the training loop never syncs, and the same seed gives the same augmentation on
CPU and GPU. Inside the loop an augmentation only indexes its rows of that array.

Anything that needs a transcendental function of a random number (the cosine of an angle, a Beta draw, a square
root) is computed on the host in `draw`; on the device the parameters only enter multiplications, additions and
comparisons, which IEEE arithmetic rounds the same way everywhere. Augmentations that interpolate (rotate,
scale, translate) or average (contrast, saturation) can still differ between CPU and GPU in the last bits of a
pixel value; their random parameters never do. `trivial_augment` and `rand_augment` are the exception to the
batched design: torchvision.transforms.v2 applies one operation to a whole tensor, so they run per sample on
uint8 images in a Python loop (see their docs).

Images arrive as float [B, C, H, W] in [0, 1] pixel units, before normalization. Every augmentation is the
identity at zero strength (p = 0, size 0, sigma 0, alpha 0, ...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from lossbench.registry import Contract, Registry

PaddingMode = Literal["zeros", "border", "reflection"]


class Augmentation:
    """Base class: `draw` makes per-sample random parameters, `apply` transforms a batch with them.

    `num_params` is the number of random numbers per sample. `soft_targets` is True for augmentations that
    mix labels (mixup, cutmix); they receive and return float [B, C] targets.
    """

    num_params: ClassVar[int] = 0
    soft_targets: ClassVar[bool] = False

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """[n, num_params] float32 random parameters, one row per sample of the epoch."""
        return rng.random((n, self.num_params), dtype=np.float32)

    def apply(
        self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


AUGMENTATIONS: Registry[Augmentation] = Registry("augmentations", "augmentation", Contract(
    Augmentation, ("apply",),
    "a custom augmentation is a subclass of lossbench.augment.Augmentation which defines apply(x, y, params) "
    "returning (x, y), with num_params random numbers per sample drawn by draw(n, rng)",
))


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _check_nonnegative(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _as_params(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Stack per-sample float64 columns into the float32 [n, k] parameter array."""
    return np.ascontiguousarray(np.stack(columns, axis=1), dtype=np.float32)


def _box_masks(lo: torch.Tensor, hi: torch.Tensor, size: int) -> torch.Tensor:
    """[B, size] bool: position i lies in the per-sample half-open range [lo, hi)."""
    pos = torch.arange(size, device=lo.device, dtype=lo.dtype)
    return (pos >= lo[:, None]) & (pos < hi[:, None])


@AUGMENTATIONS.register("none")
class NoAugmentation(Augmentation):
    """No augmentation: the images as they are."""

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y


# ---------------------------------------------------------------------------------------------------------------
# Flips and crops: exact pixel moves.


class _RandomFlip(Augmentation):
    """Mirror along `axis` (3: left-right, 2: top-bottom), each sample independently with probability p."""

    num_params = 1
    axis: ClassVar[int]

    def __init__(self, p: float = 0.5):
        _check_probability("p", p)
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


# ---------------------------------------------------------------------------------------------------------------
# Affine warps through one sampling grid per batch (bilinear interpolation).


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
        _check_nonnegative("max_pixels", max_pixels)
        self.max_pixels = max_pixels
        self.padding_mode = padding_mode

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        shift = rng.uniform(-self.max_pixels, self.max_pixels, size=(n, 2))
        return _as_params([shift[:, 0], shift[:, 1]])

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
        return _as_params([np.cos(angle), np.sin(angle)])

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
        return _as_params([1.0 / rng.uniform(self.zoom[0], self.zoom[1], size=n)])

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.zoom == (1.0, 1.0):
            return x, y
        inv = params[:, 0].view(-1, 1, 1)
        a = torch.eye(2, device=x.device) * inv
        return _affine(x, a, torch.zeros(x.shape[0], 2, device=x.device), self.padding_mode), y


# ---------------------------------------------------------------------------------------------------------------
# Occlusion, colour and noise.


@AUGMENTATIONS.register("cutout")
class Cutout(Augmentation):
    """Set a size×size square at a uniform random centre to `fill` (in [0, 1] pixel units); clipped at borders."""

    num_params = 2

    def __init__(self, size: int = 8, fill: float = 0.0):
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        _check_probability("fill", fill)
        self.size = size
        self.fill = fill

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.size == 0:
            return x, y
        _, _, h, w = x.shape
        cy = (params[:, 0] * h).floor()
        cx = (params[:, 1] * w).floor()
        y0, x0 = cy - self.size // 2, cx - self.size // 2
        rows, cols = _box_masks(y0, y0 + self.size, h), _box_masks(x0, x0 + self.size, w)
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
            _check_nonnegative(name, value)
        self.strengths = (brightness, contrast, saturation)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return _as_params([rng.uniform(max(0.0, 1.0 - s), 1.0 + s, size=n) for s in self.strengths])

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
_KEY_BITS = 24  # an integer below 2**24 is exact in a float32 parameter


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
        _check_nonnegative("sigma", sigma)
        self.sigma = sigma

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, 2**_KEY_BITS, size=(n, 2)).astype(np.float32)

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


# ---------------------------------------------------------------------------------------------------------------
# Label mixing. The partner of sample i is sample B-1-i of the same batch (the batch order is already a random
# permutation), so no index array is needed and each pair mixes with its own two weights.


def _beta(alpha: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws of Beta(alpha, alpha); alpha = 0 means no mixing (weight 1 on the sample itself)."""
    return np.ones(n) if alpha == 0 else rng.beta(alpha, alpha, size=n)


@AUGMENTATIONS.register("mixup")
class Mixup(Augmentation):
    """mixup (Zhang et al.): x = λ·x + (1-λ)·partner and the same for targets, λ ~ Beta(alpha, alpha) per sample."""

    num_params = 1
    soft_targets = True

    def __init__(self, alpha: float = 0.2):
        _check_nonnegative("alpha", alpha)
        self.alpha = alpha

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return _as_params([_beta(self.alpha, n, rng)])

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.alpha == 0:
            return x, y
        lam = params[:, 0]
        return (
            torch.lerp(x.flip(0), x, lam.view(-1, 1, 1, 1).to(x.dtype)),
            torch.lerp(y.flip(0), y, lam.view(-1, 1).to(y.dtype)),
        )


@AUGMENTATIONS.register("cutmix")
class Cutmix(Augmentation):
    """CutMix (Yun et al.): paste a box of the partner image; targets weighted by the area each image keeps.

    λ ~ Beta(alpha, alpha) per sample sets the box to (1-λ) of the image (sides H·√(1-λ), W·√(1-λ)) around a
    uniform random centre; the box is clipped at the borders and the target weight is the area actually kept.
    """

    num_params = 3
    soft_targets = True

    def __init__(self, alpha: float = 1.0):
        _check_nonnegative("alpha", alpha)
        self.alpha = alpha

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        side = np.sqrt(1.0 - _beta(self.alpha, n, rng))  # box side as a fraction of the image side
        centre = rng.random((n, 2))
        return _as_params([side, centre[:, 0], centre[:, 1]])

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.alpha == 0:
            return x, y
        _, _, h, w = x.shape
        cut_h, cut_w = (params[:, 0] * h).floor(), (params[:, 0] * w).floor()
        cy, cx = (params[:, 1] * h).floor(), (params[:, 2] * w).floor()
        # The reference implementation's box: centre ± half the side (integer halves), clipped to the image.
        y0, y1 = (cy - (cut_h / 2).floor()).clamp(0, h), (cy + (cut_h / 2).floor()).clamp(0, h)
        x0, x1 = (cx - (cut_w / 2).floor()).clamp(0, w), (cx + (cut_w / 2).floor()).clamp(0, w)
        box = _box_masks(y0, y1, h)[:, None, :, None] & _box_masks(x0, x1, w)[:, None, None, :]
        kept = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        return torch.where(box, x.flip(0), x), torch.lerp(y.flip(0), y, kept.view(-1, 1).to(y.dtype))


# ---------------------------------------------------------------------------------------------------------------
# torchvision's automatic augmentation policies, per sample.


class _TorchvisionPolicy(Augmentation):
    """A torchvision.transforms.v2 policy applied to each sample of a batch on its own.

    A v2 transform draws one operation and magnitude per call and applies it to the whole tensor it is given,
    so per-sample randomness means one call per image: a Python loop over the batch, on uint8 images (the
    policies' native type; values are rounded to 1/255), with a host sync per batch. Put it first in a pipeline
    so it sees the stored uint8 pixels unchanged. Reproducibility: the host draws a 48-bit key per sample and
    torch's CPU generator is seeded with it for that call (then restored), so a seed gives the same operations
    and magnitudes on CPU and GPU; the pixels can differ where torchvision's kernels differ between devices.
    """

    num_params = 3

    def __init__(self, p: float):
        _check_probability("p", p)
        self.p = p

    def policy(self) -> Any:
        raise NotImplementedError

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        keys = rng.integers(0, 2**_KEY_BITS, size=(n, 2))
        return _as_params([rng.random(n), keys[:, 0], keys[:, 1]])

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.p == 0:
            return x, y
        policy = self.policy()
        rows = params.double().cpu().tolist()
        images = (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        out = images.clone()
        saved = torch.random.get_rng_state()
        try:
            for i, (u, k1, k2) in enumerate(rows):
                if u < self.p:
                    torch.default_generator.manual_seed(int(k1) * 2**_KEY_BITS + int(k2))
                    out[i] = policy(images[i])
        finally:
            torch.random.set_rng_state(saved)
        return out.to(x.dtype).mul_(1.0 / 255.0), y


@AUGMENTATIONS.register("trivial_augment")
class TrivialAugment(_TorchvisionPolicy):
    """TrivialAugment (torchvision v2 TrivialAugmentWide), with probability p per sample; per-sample loop, uint8."""

    def __init__(self, p: float = 1.0, num_magnitude_bins: int = 31):
        super().__init__(p)
        if num_magnitude_bins < 2:
            raise ValueError(f"num_magnitude_bins must be >= 2, got {num_magnitude_bins}")
        self.num_magnitude_bins = num_magnitude_bins

    def policy(self) -> Any:
        from torchvision.transforms import v2

        return v2.TrivialAugmentWide(num_magnitude_bins=self.num_magnitude_bins)


@AUGMENTATIONS.register("rand_augment")
class RandAugment(_TorchvisionPolicy):
    """RandAugment (torchvision v2): num_ops operations at `magnitude`, with probability p per sample; per-sample loop."""

    def __init__(self, p: float = 1.0, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31):
        super().__init__(p)
        if num_ops < 1:
            raise ValueError(f"num_ops must be >= 1, got {num_ops}")
        if not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(f"magnitude must be in [0, num_magnitude_bins), got {magnitude}")
        self.num_ops, self.magnitude, self.num_magnitude_bins = num_ops, magnitude, num_magnitude_bins

    def policy(self) -> Any:
        from torchvision.transforms import v2

        return v2.RandAugment(num_ops=self.num_ops, magnitude=self.magnitude,
                              num_magnitude_bins=self.num_magnitude_bins)


# ---------------------------------------------------------------------------------------------------------------


class AugmentationPipeline:
    """Several augmentations applied in order; turns hard labels soft before the first label-mixing one."""

    def __init__(self, steps: Sequence[Augmentation], num_classes: int):
        self.steps = [s for s in steps if not isinstance(s, NoAugmentation)]
        self.num_classes = num_classes

    @property
    def soft_targets(self) -> bool:
        return any(s.soft_targets for s in self.steps)

    def draw_epoch(self, n: int, rng: np.random.Generator, device: torch.device) -> list[torch.Tensor]:
        """Per-sample parameters for an epoch of n samples, already on `device`."""
        return [torch.from_numpy(np.ascontiguousarray(s.draw(n, rng), dtype=np.float32)).to(device) for s in self.steps]

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, epoch_params: list[torch.Tensor], start: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment the batch that starts at position `start` of the epoch."""
        batch = x.shape[0]
        for step, params in zip(self.steps, epoch_params):
            if step.soft_targets and not y.is_floating_point():
                y = F.one_hot(y, self.num_classes).to(x.dtype)
            x, y = step.apply(x, y, params[start : start + batch])
        return x, y
