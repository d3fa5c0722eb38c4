"""Losses that own trainable parameters of their own: the class layer (and, for center loss, the class centres).

The model ends in a feature layer of `embedding_dim` outputs; the loss holds what turns features into class
scores, and `to_logits` applies it, so predictions, top-k accuracy, NLL and ECE are computed on those scores
(argmax, as for any logit head). The loss's parameters are created by `setup(num_classes)` once the dataset's
class count is known, under the cell's seed, and the optimizer trains them in a parameter group of their own.

- `arcface` (Deng et al. 2019, eq. 3): class weights W_j and features x are L2-normalized, cos θ_j = Ŵ_j·x̂; the
  target class's logit is s·cos(θ_y + m), the others s·cos θ_j, then softmax cross-entropy. Where θ_y + m would
  pass π (cos(θ+m) is no longer decreasing in θ), the target logit is s·(cos θ_y − m·sin m) instead, as in the
  authors' implementation (insightface), so the margin never rewards a larger angle. θ_y is computed as
  2·atan2(‖x̂ − Ŵ_y‖, ‖x̂ + Ŵ_y‖), exact down to θ_y = 0 with a finite gradient everywhere (acos of the cosine
  loses all precision below θ ≈ 3e-4 in float32 and its slope is infinite at 0). At θ_y = 0, where the loss has
  a cone-shaped kink, the target angle contributes the zero subgradient; "0" is a chord ‖x̂ − Ŵ_y‖ within the
  rounding of the normalization (4·eps·√D: 5e-6 rad in float32 at D = 128), below which its direction is noise.
- `cosface` (Wang et al. 2018, eq. 4; "large margin cosine loss"): the target logit is s·(cos θ_y − m).
- `center` (Wen et al. 2016, eq. 5): softmax cross-entropy on a linear class layer plus λ·L_C, with
  L_C = ½·mean_i ‖x_i − c_{y_i}‖² over the batch (the paper's ½·Σ_i divided by the batch size B, so λ does not
  depend on it). The centres c_j are parameters trained by the optimizer, which is not the paper's update: Wen
  et al. move c_j by α·Σ_{i: y_i = j}(c_j − x_i) / (1 + n_j), n_j the number of class-j samples in the batch,
  while a plain SGD step on λ·L_C moves it by lr·λ·Σ_{i: y_i = j}(c_j − x_i) / B. The divisor is the batch
  size instead of 1 + n_j, so a class's centre moves in proportion to its share of the batch, and the
  optimizer's momentum or Adam scaling acts on the centres as on every parameter it trains.

The loss's own parameters (class weights W, the class layer and centres) form their own optimizer parameter
group: same optimizer, learning rate, schedule and momentum or Adam settings as the model, but their own weight decay,
the loss's `weight_decay` parameter (default 0: arcface and cosface ignore the length of their class weights, so
decay only shrinks it and thereby raises the effective step on their directions; decay pulls center loss's
centres towards the origin, which the method does not ask for). The optimizer's `weight_decay` applies to the
model's weights only.

Evaluation scores: s·cos θ_j without margin (arcface, cosface) and the class layer's logits (center); the loss
itself, for test_loss, is computed with the margin as in training. These losses take hard labels only.

Measured on the digits (small_cnn, 500 images, 3 epochs, 32 features): with Adam (lr 3e-3) arcface and cosface
reach 84-92 % test accuracy at s = 64 or 16; with SGD (lr 0.05, momentum 0.9) both stayed at chance (10-17 %)
while center loss reached 85 %. The papers train far longer; on short runs prefer Adam or a smaller scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.losses import LOSSES
from lossbench.losses.base import Loss

class ClassLayerLoss(Loss):
    """Base of losses that hold the class layer: the model outputs `embedding_dim` features.

    `weight_decay` is the weight decay of the loss's own parameters (class weights, centres) in their own
    optimizer parameter group, applied by the optimizer's rule (L2 for sgd and adam, decoupled for adamw); the
    optimizer's `weight_decay` applies to the model's weights only.
    """

    soft_targets = False

    def __init__(self, embedding_dim: int, weight_decay: float = 0.0):
        super().__init__()
        if isinstance(embedding_dim, bool) or embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay (of the loss's own parameters) must be >= 0, got {weight_decay}")
        self.embedding_dim = embedding_dim
        self.weight_decay = float(weight_decay)
        self.num_classes = 0

    def output_dim(self, num_classes: int) -> int:
        return self.embedding_dim

    def _require_setup(self) -> None:
        if self.num_classes == 0:
            raise RuntimeError(f"{type(self).__name__}.setup(num_classes) must run before the loss is used")


class _CosineMarginLoss(ClassLayerLoss):
    """Normalized class weights W [C, D]; scores s·cos θ_j; a margin on the target class in training."""

    def __init__(self, embedding_dim: int, scale: float, margin: float, weight_decay: float = 0.0):
        super().__init__(embedding_dim, weight_decay)
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.scale, self.margin = float(scale), float(margin)
        self.weight: nn.Parameter | None = None

    def setup(self, num_classes: int) -> None:
        self.num_classes = num_classes
        # Xavier-uniform rows: only their directions matter, and those are uniform on the sphere up to scale.
        self.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(num_classes, self.embedding_dim)))

    def cosines(self, features: torch.Tensor) -> torch.Tensor:
        """cos θ_j between each feature and each class weight, [B, C]."""
        self._require_setup()
        return F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).T  # type: ignore[arg-type]

    def to_logits(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.scale * self.cosines(outputs.float())

    def target_cosine(self, cos: torch.Tensor, feature: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The margin-adjusted cosine of the target class, [B, 1], from its cosine [B, 1] and the L2-normalized
        feature and target class weight [B, D] (for margins that need the angle itself)."""
        raise NotImplementedError

    def hard(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self._require_setup()
        features, weights = F.normalize(outputs, dim=1), F.normalize(self.weight, dim=1)  # type: ignore[arg-type]
        cos = features @ weights.T
        target = self.target_cosine(cos.gather(1, labels[:, None]), features, weights[labels])
        logits = cos.scatter(1, labels[:, None], target)
        return F.cross_entropy(self.scale * logits, labels)

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"{type(self).__name__} puts a margin on one target class and takes hard labels only")


@LOSSES.register("arcface")
class ArcFace(_CosineMarginLoss):
    """Additive angular margin (Deng et al. 2019): target logit s·cos(θ_y + m) on normalized weights and features."""

    def __init__(self, embedding_dim: int = 128, scale: float = 64.0, margin: float = 0.5, weight_decay: float = 0.0):
        super().__init__(embedding_dim, scale, margin, weight_decay)
        if self.margin >= math.pi / 2:
            raise ValueError(f"margin is an angle in radians below pi/2, got {margin}")

    def target_cosine(self, cos: torch.Tensor, feature: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        m = self.margin
        # The angle between unit vectors from the chord lengths (Kahan's formula): exact at every angle, where
        # acos(cos θ) loses all digits near 0 and its infinite slope at cos θ = 1 forced a clamp that was off by up
        # to s·sin(m)·1.4e-3 and blocked the gradient within 1.4e-3 rad of the class weight.
        chord = (feature - weight).norm(dim=1, keepdim=True)
        # θ = 0 is a kink (a cone) where the loss has no gradient, only subgradients. A chord below the rounding
        # of the normalization (a few ulps per component) is that point: its direction is rounding noise, so it
        # counts as exactly 0 and the target angle contributes the zero subgradient. Above it nothing is clamped.
        floor = 4 * torch.finfo(chord.dtype).eps * math.sqrt(feature.shape[1])
        chord = torch.where(chord > floor, chord, torch.zeros_like(chord))
        theta = 2 * torch.atan2(chord, (feature + weight).norm(dim=1, keepdim=True))
        # Beyond θ + m = π, continue linearly (insightface's fallback) so a larger angle is never rewarded.
        return torch.where(theta + m <= math.pi, torch.cos(theta + m), cos - m * math.sin(m))


@LOSSES.register("cosface")
class CosFace(_CosineMarginLoss):
    """Large margin cosine loss (Wang et al. 2018): target logit s·(cos θ_y − m) on normalized weights and features."""

    def __init__(self, embedding_dim: int = 128, scale: float = 64.0, margin: float = 0.35,
                 weight_decay: float = 0.0):
        super().__init__(embedding_dim, scale, margin, weight_decay)

    def target_cosine(self, cos: torch.Tensor, feature: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return cos - self.margin


@LOSSES.register("center")
class CenterLoss(ClassLayerLoss):
    """Cross-entropy + λ·center loss (Wen et al. 2016): features pulled towards learnable class centres."""

    def __init__(self, embedding_dim: int = 128, center_weight: float = 0.003, weight_decay: float = 0.0):
        super().__init__(embedding_dim, weight_decay)
        if not center_weight >= 0:
            raise ValueError(f"center_weight (λ) must be >= 0, got {center_weight}")
        self.center_weight = float(center_weight)
        self.classifier: nn.Linear | None = None
        self.centers: nn.Parameter | None = None

    def setup(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.embedding_dim, num_classes)
        self.centers = nn.Parameter(torch.randn(num_classes, self.embedding_dim))

    def to_logits(self, outputs: torch.Tensor) -> torch.Tensor:
        self._require_setup()
        return self.classifier(outputs.float())  # type: ignore[misc]

    def center_term(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """L_C = ½·mean_i ‖x_i − c_{y_i}‖²."""
        self._require_setup()
        return 0.5 * (features - self.centers[labels]).pow(2).sum(dim=1).mean()  # type: ignore[index]

    def hard(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(self.to_logits(outputs), labels)
        return ce + self.center_weight * self.center_term(outputs, labels)

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        raise ValueError("center loss pulls each feature towards its one class centre and takes hard labels only")
