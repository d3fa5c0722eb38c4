"""Losses on class logits: predictions are the argmax of the outputs."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from lossbench.losses import LOSSES
from lossbench.losses.base import Loss


@LOSSES.register("cross_entropy")
class CrossEntropy(Loss):
    """Softmax cross-entropy, -Σ y·log softmax(z); optional per-class weights."""

    def __init__(self, class_weights: list[float] | None = None):
        super().__init__()
        if class_weights is not None and any(w < 0 for w in class_weights):
            raise ValueError("class_weights must be non-negative")
        self.class_weights = class_weights
        self.register_buffer(
            "_weight", None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        )

    def _checked_weight(self, num_classes: int) -> torch.Tensor | None:
        if self._weight is not None and self._weight.numel() != num_classes:
            raise ValueError(f"class_weights has {self._weight.numel()} entries for {num_classes} classes")
        return self._weight

    def hard(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, labels, weight=self._checked_weight(outputs.shape[1]))

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        weight = self._checked_weight(outputs.shape[1])
        per_class = -probs * F.log_softmax(outputs, dim=1)
        if weight is None:
            return per_class.sum(1).mean()
        # Same normalisation as F.cross_entropy with weights: divide by the weight of each sample's target.
        return (per_class * weight).sum(1).sum() / (probs * weight).sum()


@LOSSES.register("mse")
class MeanSquaredError(Loss):
    """Squared error to one-hot targets, mean over classes; on softmax probabilities (Brier) or raw outputs."""

    def __init__(self, over: Literal["probabilities", "outputs"] = "probabilities"):
        super().__init__()
        self.over = over
        self.probabilistic = over == "probabilities"

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        predicted = outputs.softmax(dim=1) if self.over == "probabilities" else outputs
        return F.mse_loss(predicted, probs)
