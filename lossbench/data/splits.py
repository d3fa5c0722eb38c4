"""Deterministic, class-stratified subsets and hold-outs of a labelled split.

Selections depend only on the labels, a seed and a stream number (so the train subset, test subset and
validation hold-out of one seed are independent draws), never on a training seed: every cell of a grid sees
the same images. PCG64 is used because numpy keeps its stream stable across versions.
"""

from __future__ import annotations

import numpy as np
import torch

from lossbench.errors import DataError


def check_subset(spec: object, what: str) -> None:
    """Raise DataError unless `spec` is an image count (int >= 1) or a fraction (float in (0, 1]); `what` is the
    dataset option that asks for it (the error's `option`), or '' when none does."""
    option = what or None
    if isinstance(spec, bool) or not isinstance(spec, (int, float)):
        raise DataError(f"{what} must be an image count (int) or a fraction in (0, 1] (float), not {spec!r}",
                        option=option)
    if isinstance(spec, int) and spec < 1:
        raise DataError(f"{what} = {spec}: an image count must be at least 1", option=option)
    if isinstance(spec, float) and not 0.0 < spec <= 1.0:
        raise DataError(f"{what} = {spec}: a fraction must be in (0, 1]; use an int for a number of images",
                        option=option)


def subset_count(spec: int | float, available: int, what: str) -> int:
    """The number of images `spec` asks for: an int is a count, a float in (0, 1] a fraction of `available`."""
    check_subset(spec, what)
    if isinstance(spec, int):
        if spec > available:
            raise DataError(f"{what} = {spec}, but the split has only {available} images", option=what or None)
        return spec
    return max(1, int(spec * available + 0.5))


def stratified_sample(labels: torch.Tensor, count: int, *, seed: int, stream: int) -> torch.Tensor:
    """Sorted int64 indices of `count` elements of `labels`, each class keeping its share of the split.

    Class quotas are count * n_class / n rounded by largest remainder (ties to the lower class index), so the
    class balance of the split survives; within a class, members are drawn at random with (seed, stream).
    """
    y = labels.cpu().numpy()
    total = len(y)
    if not 0 <= count <= total:
        raise DataError(f"cannot take {count} of {total} images")
    classes, per_class = np.unique(y, return_counts=True)
    # Integer arithmetic keeps the quotas exact for any split size.
    quotas = count * per_class // total
    remainders = count * per_class % total
    for k in np.argsort(-remainders, kind="stable")[: count - int(quotas.sum())]:
        quotas[k] += 1
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream])))
    chosen = []
    for cls, quota in zip(classes, quotas, strict=True):
        members = np.flatnonzero(y == cls)
        order = np.argsort(rng.random(len(members)), kind="stable")
        chosen.append(members[order[:quota]])
    return torch.from_numpy(np.sort(np.concatenate(chosen))).to(torch.int64)


def stratified_holdout(
    labels: torch.Tensor, count: int, *, seed: int, stream: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held-out) sorted int64 indices: `count` elements held out per `stratified_sample`, the rest kept."""
    held = stratified_sample(labels, count, seed=seed, stream=stream)
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held] = False
    return torch.nonzero(mask).flatten(), held
