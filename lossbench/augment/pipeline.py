"""The augmentations of one cell applied in order to each batch, with their parameters drawn once per epoch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lossbench.augment.base import Augmentation, NoAugmentation


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
