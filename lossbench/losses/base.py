"""The base class every loss derives from: shape checks and the hard/soft target split live here."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

Head = Literal["logits", "embedding"]


class Loss(nn.Module):
    """A training loss: `loss(outputs, targets) -> scalar tensor`.

    `outputs` is [B, C] logits (head "logits") or [B, D] embeddings (head "embedding"). `targets` is either
    hard labels, int64 [B], or a soft label distribution, float [B, C] whose rows sum to one (mixup, cutmix).
    Subclasses write only the math: `soft()` for probability targets and, where a faster or more exact form
    exists, `hard()` for labels (by default a label becomes its one-hot row).

    Class attributes a subclass may set:
      head: which final layer the engine builds and how it predicts (argmax of logits, or k-NN on embeddings).
      soft_targets: False when the loss is defined on labels only; validation then rejects augmentations that
        mix labels (mixup, cutmix) for this loss before anything trains.
      probabilistic: False when softmax(outputs) is not what the loss trains to be a probability (square loss
        on raw outputs, hinge, exponential); NLL and ECE are still reported on softmax(outputs) and the result
        file notes it.
    """

    head: ClassVar[Head] = "logits"
    soft_targets: ClassVar[bool] = True
    probabilistic: ClassVar[bool] = True
    #: Embedding heads only: the width D of the final layer, and the k-NN rule that turns embeddings into class
    #: predictions (k neighbours among the training-set embeddings, by cosine or euclidean distance). Embedding
    #: losses set these from their parameters; these are the documented defaults.
    embedding_dim: int = 128
    knn_k: int = 10
    knn_metric: Literal["cosine", "euclidean"] = "cosine"
    #: Weight decay of the loss's own parameters (those `setup` creates), in an optimizer parameter group of
    #: their own; the optimizer's weight_decay applies to the model's weights only. Losses with parameters take
    #: it as a parameter (default 0).
    weight_decay: float = 0.0

    def output_dim(self, num_classes: int) -> int:
        """Width of the model's final layer for this loss: C for logits, the embedding size otherwise."""
        return self.embedding_dim if self.head == "embedding" else num_classes

    def setup(self, num_classes: int) -> None:
        """Create the loss's own trainable parameters for `num_classes` classes (nothing here).

        Called once per cell before training, after the model is built, under the cell's seed, so the loss's
        initial parameters are the same for every cell of that seed; the optimizer trains them with the model's
        learning rate, schedule and momentum, in a parameter group whose weight decay is `weight_decay`.
        """

    def to_logits(self, outputs: torch.Tensor) -> torch.Tensor:
        """Class scores [B, C] from model outputs, for a logits head: predictions are their argmax, NLL and ECE
        use their softmax. The outputs themselves here; losses that hold the class layer (arcface, cosface,
        center) apply it."""
        return outputs

    def embed(self, outputs: torch.Tensor) -> torch.Tensor:
        """The embedding the loss compares, from raw model outputs (k-NN evaluation uses it); identity here."""
        return outputs

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if outputs.ndim != 2:
            raise ValueError(f"{type(self).__name__}: outputs must be [batch, features], got {tuple(outputs.shape)}")
        if targets.shape[0] != outputs.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: {outputs.shape[0]} outputs but {targets.shape[0]} targets"
            )
        if targets.is_floating_point():
            if not self.soft_targets:
                raise ValueError(f"{type(self).__name__} takes hard labels only, got soft targets")
            if self.head == "logits" and targets.shape != outputs.shape:
                raise ValueError(f"soft targets {tuple(targets.shape)} do not match outputs {tuple(outputs.shape)}")
            return self.soft(outputs.float(), targets.float())
        if targets.ndim != 1:
            raise ValueError(f"hard targets must be [batch] class indices, got {tuple(targets.shape)}")
        return self.hard(outputs.float(), targets)

    def hard(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.soft(outputs, F.one_hot(labels, outputs.shape[1]).to(outputs.dtype))

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
