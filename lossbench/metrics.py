"""Evaluation metrics on class scores: top-k accuracy, NLL, expected calibration error, per-class accuracy,
confusion matrix. Inputs are tensors on any device; outputs are tensors (the caller syncs once)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Number of samples whose label is among the k highest scores (k is capped at the number of classes)."""
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return (top == labels[:, None]).any(dim=1).sum()


def nll(log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the labels, in nats."""
    return F.nll_loss(log_probs, labels)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> torch.Tensor:
    """ECE with equal-width confidence bins on (0, 1]: Σ_b (n_b / N) · |accuracy_b − mean confidence_b|."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).to(probs.dtype)
    # Bin b holds confidences in (b/bins, (b+1)/bins]; confidence exactly 0 cannot occur for a max over classes.
    index = (confidence * bins).ceil().long().clamp_(1, bins) - 1
    count = torch.zeros(bins, dtype=probs.dtype, device=probs.device).index_add_(0, index, torch.ones_like(confidence))
    conf_sum = torch.zeros_like(count).index_add_(0, index, confidence)
    acc_sum = torch.zeros_like(count).index_add_(0, index, correct)
    return (conf_sum - acc_sum).abs().sum() / probs.shape[0]


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict[str, list[float]]:
    """Per-bin count, mean confidence and accuracy (the data of a reliability diagram)."""
    confidence, predicted = probs.max(dim=1)
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
