"""The base of every augmentation, their registry, and what several of them share: argument checks, the packing of
per-sample parameters, per-sample box masks, the width of a per-sample random key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch

from lossbench.registry import Contract, Registry


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


def check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def check_nonnegative(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def as_params(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Stack per-sample float64 columns into the float32 [n, k] parameter array."""
    return np.ascontiguousarray(np.stack(columns, axis=1), dtype=np.float32)


def box_masks(lo: torch.Tensor, hi: torch.Tensor, size: int) -> torch.Tensor:
    """[B, size] bool: position i lies in the per-sample half-open range [lo, hi)."""
    pos = torch.arange(size, device=lo.device, dtype=lo.dtype)
    return (pos >= lo[:, None]) & (pos < hi[:, None])


KEY_BITS = 24  # an integer below 2**24 is exact in a float32 parameter


@AUGMENTATIONS.register("none")
class NoAugmentation(Augmentation):
    """No augmentation: the images as they are."""

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y
