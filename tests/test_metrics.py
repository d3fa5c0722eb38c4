"""Metrics against independent computations: NumPy loops, torch built-ins and scikit-learn."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import brier_score_loss
from sklearn.metrics import confusion_matrix as sk_confusion

from lossbench.metrics import (
    brier_score,
    confusion_matrix,
    expected_calibration_error,
    per_class_accuracy,
    predicted_class,
    reliability_bins,
    topk_correct,
)


def ece_reference(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    total = 0.0
    edges = np.linspace(0, 1, bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return total


def test_ece_matches_a_loop_over_bins() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 7, generator=g) * 3
    labels = torch.randint(0, 7, (500,), generator=g)
    probs = logits.softmax(1).double()
    ours = expected_calibration_error(probs, labels, bins=15).item()
    assert abs(ours - ece_reference(probs.numpy(), labels.numpy(), 15)) < 1e-12


def test_ece_by_hand() -> None:
    # Two samples: confidence 0.9 correct (bin 14), 0.6 wrong (bin 9): ECE = ½·|1−0.9| + ½·|0−0.6| = 0.35.
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6]], dtype=torch.float64)
    labels = torch.tensor([0, 0])
    assert abs(expected_calibration_error(probs, labels, bins=15).item() - 0.35) < 1e-12
    bins = reliability_bins(probs, labels, bins=15)
    assert bins["count"][13] == 1 and bins["count"][8] == 1 and sum(bins["count"]) == 2


def test_perfectly_calibrated_confident_predictions_have_zero_ece() -> None:
    probs = F.one_hot(torch.tensor([0, 1, 2]), 3).double()
    assert expected_calibration_error(probs, torch.tensor([0, 1, 2])).item() == 0.0


def test_ece_matches_torchmetrics_away_from_probability_one() -> None:
    """Random softmax probabilities (none at exactly 1.0 or on a bin edge): torchmetrics' binning and ours agree."""
    from torchmetrics.classification import MulticlassCalibrationError

    g = torch.Generator().manual_seed(3)
    for scale in (1.0, 2.0, 4.0):
        probs = (scale * torch.randn(500, 7, generator=g)).softmax(dim=1)
        labels = torch.randint(0, 7, (500,), generator=g)
        assert probs.max() < 1.0
        theirs = MulticlassCalibrationError(num_classes=7, n_bins=15, norm="l1")(probs, labels)
        torch.testing.assert_close(expected_calibration_error(probs, labels, bins=15), theirs, rtol=0, atol=1e-6)


def test_ece_at_exactly_probability_one_follows_guo_et_al() -> None:
    """softmax([30, −30]) is exactly 1.0 in float32. By hand, our right-closed bins put it with the confidence
    0.9526 of softmax([3, 0]) in the top bin (14/15, 1]: |mean confidence − accuracy| = |0.9763 − 1/2| = 0.4763.
    torchmetrics keeps 1.0 in a bin of its own: ½·|1 − 0| + ½·|0.9526 − 1| = 0.5237. The documented difference."""
    from torchmetrics.classification import MulticlassCalibrationError

    probs = torch.tensor([[30.0, -30.0], [3.0, 0.0]]).softmax(dim=1)
    labels = torch.tensor([1, 0])
    assert probs[0, 0].item() == 1.0
    p = 1 / (1 + np.exp(-3.0))
    ours = expected_calibration_error(probs, labels, bins=15).item()
    assert abs(ours - abs((1.0 + p) / 2 - 0.5)) < 1e-6 and abs(ours - 0.4763) < 1e-4
    theirs = MulticlassCalibrationError(num_classes=2, n_bins=15, norm="l1")(probs, labels).item()
    assert abs(theirs - (0.5 * 1.0 + 0.5 * (1 - p))) < 1e-6 and abs(theirs - 0.5237) < 1e-4


def test_brier_score_by_hand_and_against_sklearn() -> None:
    # By hand: (0.7−1)² + 0.2² + 0.1² = 0.14 and 0.1² + (0.3−1)² + 0.6² = 0.86; mean 0.5.
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=torch.float64)
    assert abs(brier_score(probs, torch.tensor([0, 1])).item() - 0.5) < 1e-12
    g = torch.Generator().manual_seed(4)
    probs = (2 * torch.randn(300, 5, generator=g)).softmax(dim=1)
    labels = torch.randint(0, 5, (300,), generator=g)
    expected = brier_score_loss(labels.numpy(), probs.numpy(), labels=list(range(5)))
    assert abs(brier_score(probs, labels).item() - expected) < 1e-6
    # The mse loss on probabilities is the Brier score divided by the number of classes.
    from lossbench.losses import LOSSES

    assert abs(LOSSES.build("mse", {})(probs.log(), labels).item() - expected / 5) < 1e-6


def test_topk_against_manual_ranking() -> None:
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    labels = torch.tensor([2, 2, 2])
    assert topk_correct(scores, labels, 1).item() == 1
    assert topk_correct(scores, labels, 2).item() == 2
    assert topk_correct(scores, labels, 5).item() == 3  # k capped at 3 classes


def test_one_tie_rule_lowest_class_index_first() -> None:
    """On exact ties every metric picks the lowest class index among the highest scores, like numpy's argmax.

    (torch's CPU topk returns other indices than argmax on rows of equal scores, so top-1 by topk and the
    confusion matrix by argmax would disagree.)"""
    scores = torch.tensor([
        [0.0] * 10,                                   # all ten tie: class 0
        [1.0, 3.0, 3.0, 0.0, 3.0, 0, 0, 0, 0, 0],     # 1, 2 and 4 tie: class 1
        [0.0, 0, 0, 0, 0, 0, 0, 0, 5.0, 5.0],         # 8 and 9 tie: class 8
    ])
    expected = np.argmax(scores.numpy(), axis=1)  # numpy documents "the first occurrence"
    assert predicted_class(scores).tolist() == expected.tolist() == [0, 1, 8]
    for labels in (torch.tensor([0, 1, 8]), torch.tensor([2, 2, 9]), torch.tensor([9, 4, 0])):
        agree = int((torch.from_numpy(expected) == labels).sum())
        assert topk_correct(scores, labels, 1).item() == agree
        assert confusion_matrix(predicted_class(scores), labels, 10).diagonal().sum().item() == agree
    # top-k continues the same order: among the ties of row 0, classes 0..4 are the top 5.
    assert topk_correct(scores[:1], torch.tensor([4]), 5).item() == 1
    assert topk_correct(scores[:1], torch.tensor([5]), 5).item() == 0
    # ECE and the reliability bins score the same predicted class: row 1's tie counts as class 1.
    probs = scores.softmax(1).double()
    labels = torch.tensor([0, 1, 8])
    assert expected_calibration_error(probs, labels).item() == ece_reference(probs.numpy(), labels.numpy(), 15)
    assert sum(reliability_bins(probs, labels)["accuracy"][b] * c
               for b, c in enumerate(reliability_bins(probs, labels)["count"])) == 3


def test_confusion_and_per_class_against_sklearn() -> None:
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 4, (200,), generator=g)
    predicted = torch.where(torch.rand(200, generator=g) < 0.6, labels, torch.randint(0, 4, (200,), generator=g))
    ours = confusion_matrix(predicted, labels, 5).numpy()
    ref = sk_confusion(labels.numpy(), predicted.numpy(), labels=range(5))
    assert (ours == ref).all()
    acc = per_class_accuracy(torch.from_numpy(ours))
    for c in range(4):
        assert abs(acc[c].item() - (predicted[labels == c] == c).double().mean().item()) < 1e-12
    assert torch.isnan(acc[4])  # class 4 has no test samples
