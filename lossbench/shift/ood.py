"""Out-of-distribution detection: the inputs (another dataset of the registry, or generated images) and the
metrics (AUROC and FPR at 95 % TPR) of two scores, the maximum softmax probability (Hendrycks & Gimpel 2017) and
the energy score logsumexp(logits) (Liu et al. 2020). The in-distribution test split is the positive class: a
higher score says "in distribution".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

#: The true-positive rate at which FPR is read, as a fraction num / den (exact, no float rounding of 0.95 · n).
TPR_NUM, TPR_DEN = 95, 100


def msp_score(logits: torch.Tensor) -> torch.Tensor:
    """Maximum softmax probability of each row of logits [N, C]."""
    return logits.float().softmax(dim=1).amax(dim=1)


def energy_score(logits: torch.Tensor) -> torch.Tensor:
    """Negative free energy logsumexp over classes (temperature 1): higher for in-distribution inputs."""
    return torch.logsumexp(logits.double(), dim=1)


def auroc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Area under the ROC curve of scores, positives expected higher: P(pos > neg) + P(pos = neg) / 2, the
    Mann–Whitney statistic with tied scores counted half (what sklearn's roc_auc_score computes)."""
    n_pos, n_neg = positive.numel(), negative.numel()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs at least one positive and one negative score")
    scores = torch.cat((positive.flatten(), negative.flatten())).double()
    order = scores.argsort()
    sorted_scores = scores[order]
    # Average ranks (1-based) of tied values.
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(scores)
    ranks[order] = average[inverse]
    rank_sum = ranks[:n_pos].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fpr_at_tpr(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """The fraction of negatives scored at or above the highest threshold that keeps ≥ 95 % of the positives
    (sklearn's roc_curve read at the first point with TPR ≥ 0.95)."""
    n_pos = positive.numel()
    if n_pos == 0 or negative.numel() == 0:
        raise ValueError("FPR at 95 % TPR needs at least one positive and one negative score")
    k = -(-TPR_NUM * n_pos // TPR_DEN)  # ceil(0.95 · n) in integers
    threshold = positive.double().sort(descending=True).values[k - 1]
    return float((negative.double() >= threshold).double().mean())


# ---------------------------------------------------------------------------------------------------------------
# OOD inputs: float images [N, C, H, W] in [0, 1] of the training images' shape.


@dataclass(frozen=True)
class Generated:
    """An OOD source made of generated images."""

    name: str
    doc: str
    make: Callable[[int, int, int, int, torch.Generator, torch.device], torch.Tensor]


def _uniform(n: int, c: int, h: int, w: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand((n, c, h, w), generator=g, device=device)


def _blank(n: int, c: int, h: int, w: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand((n, c, 1, 1), generator=g, device=device).expand(n, c, h, w).contiguous()


#: Generated OOD inputs by name.
GENERATED: dict[str, Generated] = {g.name: g for g in (
    Generated("uniform_noise", "every pixel value uniform in [0, 1]", _uniform),
    Generated("blank", "one random uniform colour per image", _blank),
)}


def generated_images(name: str, n: int, shape: tuple[int, int, int], seed: int,
                     device: torch.device) -> torch.Tensor:
    """`n` images of the generated source `name`, [n, C, H, W] in [0, 1], from a generator seeded with `seed`."""
    g = torch.Generator(device=device).manual_seed(seed)
    return GENERATED[name].make(n, *shape, g, device)


def conform(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 images [N, C', H', W'] as float [N, C, H, W] in [0, 1]: colour → grey by ITU-R BT.601 luma, grey →
    colour by repeating the channel, then resized (antialiased bilinear) to H×W."""
    c, h, w = shape
    x = images.float() / 255
    if x.shape[1] == 3 and c == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] == 1 and c == 3:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != c:
        raise ValueError(f"cannot turn {x.shape[1]}-channel images into {c}-channel ones")
    if x.shape[-2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1)


def dataset_images(name: str, root: str | None, n: int, shape: tuple[int, int, int], seed: int, cache_dir: Path,
                   download: bool, device: torch.device) -> torch.Tensor:
    """Up to `n` test images of the registry's dataset `name` (a seeded random choice), conformed to `shape`."""
    from lossbench.config.dataset import DatasetConfig
    from lossbench.data.load import load_dataset

    data = load_dataset(DatasetConfig(name=name, root=root, download=download), cache_dir=cache_dir)
    x = data.test_x
    if x.shape[0] > n:
        keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n].sort().values
        x = x[keep]
    return conform(x.to(device), shape)
