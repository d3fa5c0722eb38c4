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

Importing this package registers every built-in augmentation, in the order `lossbench list` shows them:

  base.py         the Augmentation base class, the registry, `none`
  geometry.py     flips, crops and affine warps
  appearance.py   cutout, colour jitter, Gaussian noise
  mixing.py       mixup and cutmix (soft targets)
  policies.py     torchvision's TrivialAugment and RandAugment, per sample
  pipeline.py     a cell's augmentations applied to each batch
"""

from lossbench.augment.base import AUGMENTATIONS, Augmentation, NoAugmentation
from lossbench.augment.pipeline import AugmentationPipeline

# Registering the built-in augmentations; the order of these imports is the order `lossbench list` shows them in.
from lossbench.augment import geometry  # noqa: E402,F401,I001
from lossbench.augment import appearance  # noqa: E402,F401,I001
from lossbench.augment import mixing  # noqa: E402,F401,I001
from lossbench.augment import policies  # noqa: E402,F401,I001

__all__ = ["AUGMENTATIONS", "Augmentation", "AugmentationPipeline", "NoAugmentation"]
