"""Evaluation metrics on class scores: top-k accuracy, expected calibration error, reliability bins, per-class
accuracy, confusion matrix. Inputs are tensors on any device; outputs are tensors (the caller syncs once).

One tie rule for all of them: among classes of equal score the lowest index ranks first. `predicted_class` is
torch's argmax (documented to return the first maximal index); `topk_correct` ranks with a stable sort, so its
top-1 is that same class. (torch's `topk` does not promise an order among ties: on rows of equal scores the CPU
kernel returns other indices than argmax.)"""

from __future__ import annotations

import torch


def predicted_class(scores: torch.Tensor) -> torch.Tensor:
    """The predicted class of each row: the highest score, the lowest index among equal highest scores."""
    return scores.argmax(dim=1)


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Number of samples whose label is among the k highest scores (k is capped at the number of classes);
    among equal scores the lower class index ranks higher, so top-1 agrees with `predicted_class`."""
    k = min(k, scores.shape[1])
    if k == 1:
        return (predicted_class(scores) == labels).sum()
    top = scores.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return (top == labels[:, None]).any(dim=1).sum()


def _confidence(probs: torch.Tensor, predicted: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    predicted = predicted_class(probs) if predicted is None else predicted
    return probs.gather(1, predicted[:, None]).squeeze(1), predicted


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor | None = None,
                               bins: int = 15) -> torch.Tensor:
    """ECE with equal-width confidence bins on (0, 1]: Σ_b (n_b / N) · |accuracy_b − mean confidence_b|.

    The confidence is the probability of the predicted class (`predicted`, by default `predicted_class(probs)`).
    """
    confidence, predicted = _confidence(probs, predicted)
    correct = (predicted == labels).to(probs.dtype)
    # Bin b holds confidences in (b/bins, (b+1)/bins]; confidence exactly 0 cannot occur for a max over classes.
    index = (confidence * bins).ceil().long().clamp_(1, bins) - 1
    count = torch.zeros(bins, dtype=probs.dtype, device=probs.device).index_add_(0, index, torch.ones_like(confidence))
    conf_sum = torch.zeros_like(count).index_add_(0, index, confidence)
    acc_sum = torch.zeros_like(count).index_add_(0, index, correct)
    return (conf_sum - acc_sum).abs().sum() / probs.shape[0]


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor | None = None,
                     bins: int = 15) -> dict[str, list[float]]:
    """Per-bin count, mean confidence and accuracy (the data of a reliability diagram), binned as ECE is."""
    confidence, predicted = _confidence(probs, predicted)
    correct = (predicted == labels).to(probs.dtype)
    index = (confidence * bins).ceil().long().clamp_(1, bins) - 1
    count = torch.zeros(bins, dtype=probs.dtype, device=probs.device).index_add_(0, index, torch.ones_like(confidence))
    conf = torch.zeros_like(count).index_add_(0, index, confidence) / count.clamp(min=1)
    acc = torch.zeros_like(count).index_add_(0, index, correct) / count.clamp(min=1)
    return {"count": count.tolist(), "confidence": conf.tolist(), "accuracy": acc.tolist()}


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[C, C] counts; row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Recall of each class from a confusion matrix; NaN for a class with no test samples."""
    totals = confusion.sum(dim=1).to(torch.float64)
    return confusion.diagonal().to(torch.float64) / totals.where(totals > 0, torch.full_like(totals, float("nan")))
