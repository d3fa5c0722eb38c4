"""torchvision's automatic augmentation policies (TrivialAugment, RandAugment), applied per sample."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lossbench.augment.base import AUGMENTATIONS, KEY_BITS, Augmentation, as_params, check_probability


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
        check_probability("p", p)
        self.p = p

    def policy(self) -> Any:
        raise NotImplementedError

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        keys = rng.integers(0, 2**KEY_BITS, size=(n, 2))
        return as_params([rng.random(n), keys[:, 0], keys[:, 1]])

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
                    torch.default_generator.manual_seed(int(k1) * 2**KEY_BITS + int(k2))
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
