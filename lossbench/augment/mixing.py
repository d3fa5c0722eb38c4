"""Label mixing: mixup and cutmix. The partner of sample i is sample B-1-i of the same batch (the batch order is
already a random permutation), so no index array is needed and each pair mixes with its own two weights."""

from __future__ import annotations

import numpy as np
import torch

from lossbench.augment.base import AUGMENTATIONS, Augmentation, as_params, box_masks, check_nonnegative


def _beta(alpha: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws of Beta(alpha, alpha); alpha = 0 means no mixing (weight 1 on the sample itself)."""
    return np.ones(n) if alpha == 0 else rng.beta(alpha, alpha, size=n)


@AUGMENTATIONS.register("mixup")
class Mixup(Augmentation):
    """mixup (Zhang et al.): x = λ·x + (1-λ)·partner and the same for targets, λ ~ Beta(alpha, alpha) per sample."""

    num_params = 1
    soft_targets = True

    def __init__(self, alpha: float = 0.2):
        check_nonnegative("alpha", alpha)
        self.alpha = alpha

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return as_params([_beta(self.alpha, n, rng)])

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
        check_nonnegative("alpha", alpha)
        self.alpha = alpha

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        side = np.sqrt(1.0 - _beta(self.alpha, n, rng))  # box side as a fraction of the image side
        centre = rng.random((n, 2))
        return as_params([side, centre[:, 0], centre[:, 1]])

    def apply(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.alpha == 0:
            return x, y
        _, _, h, w = x.shape
        cut_h, cut_w = (params[:, 0] * h).floor(), (params[:, 0] * w).floor()
        cy, cx = (params[:, 1] * h).floor(), (params[:, 2] * w).floor()
        # The reference implementation's box: centre ± half the side (integer halves), clipped to the image.
        y0, y1 = (cy - (cut_h / 2).floor()).clamp(0, h), (cy + (cut_h / 2).floor()).clamp(0, h)
        x0, x1 = (cx - (cut_w / 2).floor()).clamp(0, w), (cx + (cut_w / 2).floor()).clamp(0, w)
        box = box_masks(y0, y1, h)[:, None, :, None] & box_masks(x0, x1, w)[:, None, None, :]
        kept = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        return torch.where(box, x.flip(0), x), torch.lerp(y.flip(0), y, kept.view(-1, 1).to(y.dtype))
