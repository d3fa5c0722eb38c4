"""Augmentations applied to whole batches on the device, with randomness drawn per sample.

Random parameters are drawn once per epoch on the host with NumPy (one [N, k] array per augmentation, moved to
the device in one copy), so the training loop never syncs, and the same seed gives the same augmentation on
CPU and GPU. Inside the loop an augmentation only indexes its rows of that array.

Images arrive as float [B, C, H, W] in [0, 1] pixel units, before normalization.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from lossbench.registry import Registry


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


AUGMENTATIONS: Registry[Augmentation] = Registry("augmentations", "augmentation")


@AUGMENTATIONS.register("none")
class NoAugmentation(Augmentation):
    """No augmentation: the images as they are."""

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y


@AUGMENTATIONS.register("hflip")
class HorizontalFlip(Augmentation):
    """Mirror left-right, each sample independently with probability p."""

    num_params = 1

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flip = (params[:, 0] < self.p).view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(3), x), y


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
