"""Data scenarios: label noise, class imbalance and small training sets, applied to the training split of a cell.

A scenario changes which training images a cell sees and which labels they carry; the test split (and the
validation hold-out, an estimate of clean test accuracy) is never altered, so every test metric is measured
on clean labels. Scenarios are registered in SCENARIOS and named in a suite as the grid axis `scenario` (a
list composes several) or as the dataset options `dataset.imbalance` and `dataset.label_noise`, which apply to
every cell.

Randomness comes from the cell's seed only, through its own NumPy PCG64 stream per scenario kind: the cells of
one seed see the same images and the same noisy labels, whatever else the grid varies. Draws are nested
across strengths: for one seed the labels flipped at rate 0.2 are among those flipped at 0.4, and the images
kept at imbalance ratio 100 are among those kept at ratio 10, so comparisons across strengths are paired.

Selections (imbalance, train_subset) run before relabelling (label_noise), in the order written otherwise.
Normalization statistics stay those of the full training split, so scenarios do not change the input scale.
The dataset option `dataset.train_subset` is different from the `train_subset` scenario: it is part of the
dataset (the same images for every seed and cell, and part of the dataset identity), while the scenario draws
a subset per seed and can vary along the grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from lossbench.data.base import ImageData
from lossbench.data.splits import stratified_sample
from lossbench.errors import DataError
from lossbench.registry import Contract, Registry

# Stream numbers of the per-seed random generators, distinct from the dataset's split streams.
_SUBSET_STREAM, _IMBALANCE_STREAM, _NOISE_STREAM = 101, 102, 103


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream])))


@dataclass
class TrainSplit:
    """The training split a cell sees: positions into the dataset's training split, and their labels.

    `labels` are the labels the model trains on (noisy where label_noise flipped them); `clean` the true ones.
    """

    index: np.ndarray
    labels: np.ndarray
    clean: np.ndarray
    num_classes: int
    notes: list[str] = field(default_factory=list)

    def select(self, keep: np.ndarray) -> TrainSplit:
        """The split restricted to positions `keep` (indices into the current split)."""
        keep = np.sort(keep)
        return TrainSplit(self.index[keep], self.labels[keep], self.clean[keep], self.num_classes, self.notes)

    def summary(self) -> dict[str, Any]:
        """What the result file records: size, images per true class, and the realised noise."""
        flipped = self.labels != self.clean
        return {
            "train_size": int(len(self.index)),
            "class_counts": np.bincount(self.clean, minlength=self.num_classes).tolist(),
            "noise_rate": float(flipped.mean()) if len(flipped) else 0.0,
            "noisy_labels": int(flipped.sum()),
        }


class Scenario:
    """Base class: `apply(split, classes, dataset, seed)` returns the changed training split.

    `stage` orders a composition: selections (0) run before relabelling (1).
    """

    stage: ClassVar[int] = 0

    def apply(self, split: TrainSplit, classes: Sequence[str], dataset: str, seed: int) -> TrainSplit:
        raise NotImplementedError


SCENARIOS: Registry[Scenario] = Registry("scenarios", "scenario", Contract(
    Scenario, ("apply",),
    "a custom scenario is a subclass of lossbench.data.scenarios.Scenario which defines "
    "apply(split, classes, dataset, seed) returning the changed TrainSplit",
))


@SCENARIOS.register("none")
class Clean(Scenario):
    """The training split as it is."""

    def apply(self, split: TrainSplit, classes: Sequence[str], dataset: str, seed: int) -> TrainSplit:
        return split


def _priority(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random order of n elements; taking its first k gives nested selections for growing k."""
    return np.argsort(rng.random(n), kind="stable")


# ---------------------------------------------------------------------------------------------------------------
# Selections.


@SCENARIOS.register("train_subset")
class TrainSubset(Scenario):
    """Train on n images, or a fraction of the training split, drawn per seed (stratified by class by default)."""

    def __init__(self, n: int | None = None, fraction: float | None = None, stratified: bool = True):
        if (n is None) == (fraction is None):
            raise ValueError("give exactly one of n (an image count) and fraction (in (0, 1])")
        if n is not None and n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if fraction is not None and not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.n, self.fraction, self.stratified = n, fraction, stratified

    def count(self, available: int) -> int:
        if self.n is not None:
            if self.n > available:
                raise DataError(f"train_subset n = {self.n}, but the training split has only {available} images")
            return self.n
        return max(1, int(self.fraction * available + 0.5))  # type: ignore[operator]

    def apply(self, split: TrainSplit, classes: Sequence[str], dataset: str, seed: int) -> TrainSplit:
        count = self.count(len(split.index))
        if self.stratified:
            # Stratify on the true classes: a subset is drawn before any noise in a composition anyway.
            keep = stratified_sample(torch.from_numpy(split.clean), count, seed=seed, stream=_SUBSET_STREAM).numpy()
        else:
            keep = _priority(_rng(seed, _SUBSET_STREAM), len(split.index))[:count]
        return split.select(keep)


def imbalance_counts(available: Sequence[int], ratio: float, profile: str, minority_fraction: float = 0.5
                     ) -> list[int]:
    """Images per class of a long-tailed split: class 0 is the head, the last class the tail.

    With n_max the smallest class size available (so every class can be served), `exponential` gives class i
    floor(n_max · ratio^(−i/(C−1))) images (Cui et al. 2019; Cao et al. 2019), and `step` gives floor(n_max /
    ratio) to the last floor(C·minority_fraction) classes (the minority) and n_max to the others. Every class
    keeps at least one image.
    """
    c = len(available)
    n_max = min(available)
    if c < 2:
        return list(available)
    if profile == "exponential":
        counts = [int(n_max * ratio ** (-i / (c - 1))) for i in range(c)]
    elif profile == "step":
        minority = int(c * minority_fraction)
        counts = [n_max] * (c - minority) + [int(n_max / ratio)] * minority
    else:
        raise ValueError(f"profile must be exponential or step, got {profile!r}")
    return [max(1, k) for k in counts]


@SCENARIOS.register("imbalance")
class Imbalance(Scenario):
    """Long-tailed training set: class sizes fall from the head (class 0) to the tail by `ratio` = n_max/n_min."""

    def __init__(self, ratio: float = 100.0, profile: Literal["exponential", "step"] = "exponential",
                 minority_fraction: float = 0.5):
        if not ratio >= 1:
            raise ValueError(f"ratio must be >= 1 (largest class / smallest class), got {ratio}")
        if profile not in ("exponential", "step"):
            raise ValueError(f"profile must be exponential or step, got {profile!r}")
        if not 0.0 < minority_fraction < 1.0:
            raise ValueError(f"minority_fraction must be in (0, 1), got {minority_fraction}")
        self.ratio, self.profile, self.minority_fraction = ratio, profile, minority_fraction

    def apply(self, split: TrainSplit, classes: Sequence[str], dataset: str, seed: int) -> TrainSplit:
        available = np.bincount(split.clean, minlength=split.num_classes)
        if (available == 0).any():
            missing = [classes[i] for i in np.flatnonzero(available == 0)]
            raise DataError(f"imbalance needs every class in the training split; missing {missing}")
        counts = imbalance_counts(available.tolist(), self.ratio, self.profile, self.minority_fraction)
        rng = _rng(seed, _IMBALANCE_STREAM)
        keep = []
        for cls, k in enumerate(counts):
            members = np.flatnonzero(split.clean == cls)
            keep.append(members[_priority(rng, len(members))[:k]])
        return split.select(np.concatenate(keep))


# ---------------------------------------------------------------------------------------------------------------
# Relabelling.

_DIGIT_FLIPS = {"2": "7", "3": "8", "5": "6", "6": "5", "7": "1"}

#: Asymmetric (class-dependent) noise: each source class flips to its target class. CIFAR-10 and MNIST are the
#: flips of Patrini et al. (2017); Fashion-MNIST pairs look-alike garments (our choice). SVHN and EMNIST's digits
#: take MNIST's digit flips, STL-10 CIFAR-10's flips under its own class names (car for automobile) (our choice).
#: CIFAR-100 flips each class to the next one of its superclass (Patrini et al.), listed in
#: `CIFAR100_SUPERCLASSES`. Any other dataset, and any whose classes lack the table's names (KMNIST, EMNIST
#: letters, image folders), flips class i to class i+1 (mod C), the "pair flip" of Han et al. (2018); the
#: result notes which mapping a cell used.
ASYMMETRIC_FLIPS: dict[str, dict[str, str]] = {
    "cifar10": {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"},
    "stl10": {"truck": "car", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"},
    "mnist": _DIGIT_FLIPS,
    "svhn": _DIGIT_FLIPS,
    "emnist": _DIGIT_FLIPS,
    "fashion_mnist": {"T-shirt/top": "Shirt", "Shirt": "T-shirt/top", "Pullover": "Coat", "Coat": "Pullover",
                      "Sandal": "Sneaker"},
}

#: CIFAR-100's 20 superclasses with their 5 fine classes each (the dataset's own coarse labels).
CIFAR100_SUPERCLASSES: tuple[tuple[str, ...], ...] = (
    ("beaver", "dolphin", "otter", "seal", "whale"),
    ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    ("orchid", "poppy", "rose", "sunflower", "tulip"),
    ("bottle", "bowl", "can", "cup", "plate"),
    ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    ("clock", "keyboard", "lamp", "telephone", "television"),
    ("bed", "chair", "couch", "table", "wardrobe"),
    ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    ("bear", "leopard", "lion", "tiger", "wolf"),
    ("bridge", "castle", "house", "road", "skyscraper"),
    ("cloud", "forest", "mountain", "plain", "sea"),
    ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    ("fox", "porcupine", "possum", "raccoon", "skunk"),
    ("crab", "lobster", "snail", "spider", "worm"),
    ("baby", "boy", "girl", "man", "woman"),
    ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
)


def asymmetric_targets(classes: Sequence[str], dataset: str) -> tuple[np.ndarray, str]:
    """For each class index, the class it flips to (itself when it never flips), and which mapping that is."""
    index = {name: i for i, name in enumerate(classes)}
    target = np.arange(len(classes))
    if dataset == "cifar100":
        names = {n for group in CIFAR100_SUPERCLASSES for n in group}
        if names <= set(index):
            for group in CIFAR100_SUPERCLASSES:
                for k, name in enumerate(group):
                    target[index[name]] = index[group[(k + 1) % len(group)]]
            return target, "cifar100 superclass cycle"
    flips = ASYMMETRIC_FLIPS.get(dataset)
    if flips is not None and set(flips) | set(flips.values()) <= set(index):
        for source, dest in flips.items():
            target[index[source]] = index[dest]
        return target, f"{dataset} flips"
    return (target + 1) % len(classes), "pair flip i -> i+1"


@SCENARIOS.register("label_noise")
class LabelNoise(Scenario):
    """Flip a fraction `rate` of training labels: symmetric (to a uniform other class) or asymmetric (class pairs).

    In every class exactly round(rate·n_class) members are flipped, chosen at random per seed. `symmetric`
    sends each to a uniformly drawn different class; `asymmetric` sends it to its class's target (see
    ASYMMETRIC_FLIPS; classes without a target keep their labels, so the realised overall rate is lower).
    """

    stage = 1

    def __init__(self, rate: float = 0.2, kind: Literal["symmetric", "asymmetric"] = "symmetric"):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate}")
        if kind not in ("symmetric", "asymmetric"):
            raise ValueError(f"kind must be symmetric or asymmetric, got {kind!r}")
        self.rate, self.kind = rate, kind

    def apply(self, split: TrainSplit, classes: Sequence[str], dataset: str, seed: int) -> TrainSplit:
        c = split.num_classes
        if c < 2:
            raise DataError("label noise needs at least two classes")
        rng = _rng(seed, _NOISE_STREAM)
        # Both draws cover every sample whatever the rate, so a larger rate flips a superset with the same labels.
        order = rng.random(len(split.labels))
        shift = rng.integers(1, c, size=len(split.labels))  # symmetric: a uniform class other than the current
        labels = split.labels.copy()
        if self.kind == "asymmetric":
            target, mapping = asymmetric_targets(classes, dataset)
            split.notes.append(f"asymmetric label noise uses the {mapping} mapping")
        for cls in range(c):
            members = np.flatnonzero(split.labels == cls)
            if self.kind == "asymmetric" and target[cls] == cls:
                continue
            flip = members[np.argsort(order[members], kind="stable")[: int(round(self.rate * len(members)))]]
            labels[flip] = (labels[flip] + shift[flip]) % c if self.kind == "symmetric" else target[cls]
        return TrainSplit(split.index, labels, split.clean, c, split.notes)


# ---------------------------------------------------------------------------------------------------------------


class ScenarioSet:
    """The scenarios of one cell, applied together: selections first, then relabelling."""

    def __init__(self, scenarios: Sequence[Scenario]):
        kept = [s for s in scenarios if not isinstance(s, Clean)]
        self.items = sorted(kept, key=lambda s: s.stage)  # stable: the written order within a stage

    def split(self, labels: np.ndarray, classes: Sequence[str], dataset: str, seed: int) -> TrainSplit:
        """The training split after every scenario, from the dataset's training labels."""
        labels = np.asarray(labels, dtype=np.int64)
        split = TrainSplit(np.arange(len(labels)), labels.copy(), labels.copy(), len(classes))
        for scenario in self.items:
            split = scenario.apply(split, classes, dataset, seed)
        return split

    def apply(self, data: ImageData, seed: int) -> tuple[ImageData, dict[str, Any] | None]:
        """The dataset with its training split changed, and its summary; (data, None) when there is nothing to do.

        The image tensor is gathered once on its device (only when a selection dropped images); test and
        validation tensors are the same objects as before.
        """
        if not self.items:
            return data, None
        split = self.split(data.train_y.cpu().numpy(), data.classes, data.name, seed)
        device = data.train_y.device
        train_x = data.train_x
        if len(split.index) != data.train_x.shape[0]:
            train_x = data.train_x[torch.from_numpy(split.index).to(device)]
        train_y = torch.from_numpy(split.labels).to(device)
        summary = split.summary()
        summary["notes"] = split.notes
        return replace(data, train_x=train_x, train_y=train_y), summary
