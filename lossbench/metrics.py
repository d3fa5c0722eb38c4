"""Evaluation metrics on class scores: top-k accuracy, expected calibration error, Brier score, reliability bins,
per-class accuracy, confusion matrix. Inputs are tensors on any device; outputs are tensors (the caller syncs once).

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


def _bin_index(confidence: torch.Tensor, bins: int) -> torch.Tensor:
    # Bin b holds confidences in (b/bins, (b+1)/bins]; confidence exactly 0 cannot occur for a max over classes.
    return (confidence * bins).ceil().long().clamp_(1, bins) - 1


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor | None = None,
                               bins: int = 15) -> torch.Tensor:
    """ECE with equal-width confidence bins on (0, 1]: Σ_b (n_b / N) · |accuracy_b − mean confidence_b|, a
    fraction in [0, 1].

    The confidence is the probability of the predicted class (`predicted`, by default `predicted_class(probs)`).
    Bins are right-closed, (b/bins, (b+1)/bins], as Guo et al. (2017) define them and as their reference code
    bins, so a confidence of exactly 1.0 falls in the top bin with those just below it. torchmetrics'
    MulticlassCalibrationError bins [b/bins, (b+1)/bins) and puts exactly 1.0 in a bin of its own; the two agree
    wherever no confidence sits on a bin edge, and differ when some softmax rounds to 1.0 — in float32 from a
    logit gap of about 17 on. We keep Guo's convention because it makes ECE continuous in the probabilities: a
    confidence of 1.0 and one of 1 − 1e-8 (the same prediction, rounded or not) land in the same bin.
    """
    confidence, predicted = _confidence(probs, predicted)
    correct = (predicted == labels).to(probs.dtype)
    index = _bin_index(confidence, bins)
    count = torch.zeros(bins, dtype=probs.dtype, device=probs.device).index_add_(0, index, torch.ones_like(confidence))
    conf_sum = torch.zeros_like(count).index_add_(0, index, confidence)
    acc_sum = torch.zeros_like(count).index_add_(0, index, correct)
    return (conf_sum - acc_sum).abs().sum() / probs.shape[0]


def brier_score(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Brier score (Brier 1950, the multi-class form): Σ_c (p_c − 1[c = y])² per sample, averaged over samples;
    in [0, 2], lower is better. It is C times the mean over classes that the `mse` loss on probabilities trains.
    """
    # Σ_c p_c² − 2·p_y + 1 needs no one-hot [N, C] tensor.
    p_y = probs.gather(1, labels[:, None]).squeeze(1)
    return (probs.pow(2).sum(dim=1) - 2 * p_y + 1).mean()


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor | None = None,
                     bins: int = 15) -> dict[str, list[float]]:
    """Per-bin count, mean confidence and accuracy (the data of a reliability diagram), binned as ECE is."""
    confidence, predicted = _confidence(probs, predicted)
    correct = (predicted == labels).to(probs.dtype)
    index = _bin_index(confidence, bins)
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
