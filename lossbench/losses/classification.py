"""Losses on class logits: predictions are the argmax of the outputs.

Every loss here is a mean over the batch of a per-sample value in nats (or the loss's own units). Soft targets
q (rows of a [B, C] distribution, from mixup, cutmix or smoothing) enter either as the regression target (square
and absolute errors) or as the expectation of the hard-label loss under q (the one-vs-all and margin losses);
on one-hot rows both agree with the hard-label form.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from lossbench.losses import LOSSES
from lossbench.losses.base import Loss

# The exponential loss grows like exp(t); above this exponent it continues along its tangent line instead, so a
# badly scaled output gives a large finite loss and gradient (exp(30) ≈ 1.1e13) rather than inf and NaN.
EXP_LINEAR_ABOVE = 30.0


def log1m_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log(1 − softmax(z)) per class, [B, C], exact and finite (with finite gradients) even when p → 1.

    log1p(−p) is accurate while p ≤ ½; only the largest logit of a row can have p > ½, and for it
    1 − p_c = Σ_{j≠c} p_j, i.e. log(1 − p_c) = logsumexp_{j≠c} z_j − logsumexp_j z_j.
    """
    log_z = logits.logsumexp(dim=1, keepdim=True)
    # Clamp before log1p so the column replaced below has no infinite slope (its gradient is masked, not NaN).
    small = torch.log1p(-(logits - log_z).exp().clamp(max=0.5))
    top = logits.argmax(dim=1, keepdim=True)
    others = logits.scatter(1, top, float("-inf")).logsumexp(dim=1, keepdim=True) - log_z
    return small.scatter(1, top, others)


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


@LOSSES.register("label_smoothing")
class LabelSmoothing(Loss):
    """Cross-entropy to (1−ε)·y + ε/C: the target mixed with the uniform distribution (Szegedy et al. 2016)."""

    def __init__(self, epsilon: float = 0.1):
        super().__init__()
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = epsilon

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        smoothed = (1.0 - self.epsilon) * probs + self.epsilon / outputs.shape[1]
        return -(smoothed * F.log_softmax(outputs, dim=1)).sum(1).mean()


@LOSSES.register("focal")
class Focal(Loss):
    """Focal loss −α·(1−p)^γ·log p (Lin et al. 2017); softmax over classes, or sigmoid one-vs-all (RetinaNet form).

    softmax: −α·Σ_c y_c·(1−p_c)^γ·log p_c with p = softmax(z); α is a constant factor (None = 1).
    sigmoid: Σ_c α_c·(1−p_t)^γ·BCE(z_c, y_c) with p = sigmoid(z) per class, p_t = p·y + (1−p)·(1−y), α_c = α for
    y_c = 1 and 1−α for y_c = 0 (None: no weighting); summed over classes (torchvision's sigmoid_focal_loss).
    γ = 0 gives cross-entropy (softmax) or one-vs-all binary cross-entropy (sigmoid).
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, form: Literal["softmax", "sigmoid"] = "softmax"):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if form not in ("softmax", "sigmoid"):
            raise ValueError(f"form must be softmax or sigmoid, got {form!r}")
        if alpha is not None and form == "sigmoid" and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha weights positives against negatives in the sigmoid form: in [0, 1], got {alpha}")
        if alpha is not None and form == "softmax" and alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.gamma, self.alpha, self.form = gamma, alpha, form

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        if self.form == "softmax":
            # (1 − p)^γ as exp(γ·log(1 − p)): finite gradients for any γ, even where p rounds to 1.
            modulator = (self.gamma * log1m_softmax(outputs)).exp()
            per_sample = -(probs * modulator * F.log_softmax(outputs, dim=1)).sum(1)
            return (1.0 if self.alpha is None else self.alpha) * per_sample.mean()
        bce = F.binary_cross_entropy_with_logits(outputs, probs, reduction="none")
        # 1 − p_t = y·sigmoid(−z) + (1 − y)·sigmoid(z), in log space for the same reason as above.
        log_miss = torch.logaddexp(probs.log() + F.logsigmoid(-outputs), torch.log1p(-probs) + F.logsigmoid(outputs))
        per_class = (self.gamma * log_miss).exp() * bce
        if self.alpha is not None:
            per_class = (self.alpha * probs + (1.0 - self.alpha) * (1.0 - probs)) * per_class
        return per_class.sum(1).mean()


@LOSSES.register("poly1")
class Poly1(Loss):
    """Poly-1 loss: cross-entropy + ε·(1 − p_t), p_t = Σ y·softmax(z) (Leng et al. 2022)."""

    def __init__(self, epsilon: float = 1.0):
        super().__init__()
        if epsilon < -1.0:
            raise ValueError(f"epsilon must be >= -1 (the loss must stay non-negative), got {epsilon}")
        self.epsilon = epsilon

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(outputs, dim=1)
        p_t = (probs * log_p.exp()).sum(1)
        return (-(probs * log_p).sum(1) + self.epsilon * (1.0 - p_t)).mean()


@LOSSES.register("bce")
class OneVsAllBCE(Loss):
    """One-vs-all sigmoid binary cross-entropy to one-hot targets, summed over classes (nats per sample)."""

    probabilistic = False

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs, probs, reduction="sum") / outputs.shape[0]


def _square_error(outputs: torch.Tensor, probs: torch.Tensor, over: str, k: float, m: float) -> torch.Tensor:
    """Per-sample (1/C)·Σ_c w_c·(f_c − M·q_c)², w_c = 1 + (k − 1)·q_c; f = softmax(z) or z. Shape [B]."""
    predicted = outputs.softmax(dim=1) if over == "probabilities" else outputs
    if k == 1.0 and m == 1.0:
        return (predicted - probs).square().mean(1)
    weight = 1.0 + (k - 1.0) * probs
    return (weight * (predicted - m * probs).square()).mean(1)


class _SquareLoss(Loss):
    """Shared parameters of mse and rmse: what the error is measured on, and Hui & Belkin's rescaling."""

    def __init__(self, over: Literal["probabilities", "outputs"] = "probabilities", k: float = 1.0, M: float = 1.0):
        super().__init__()
        if over not in ("probabilities", "outputs"):
            raise ValueError(f"over must be probabilities or outputs, got {over!r}")
        if k <= 0 or M <= 0:
            raise ValueError(f"k and M must be > 0, got k={k}, M={M}")
        if over == "probabilities" and (k != 1.0 or M != 1.0):
            raise ValueError("k and M rescale the square loss on raw outputs; use over: outputs with them")
        self.over, self.k, self.M = over, k, M
        self.probabilistic = over == "probabilities"


@LOSSES.register("mse")
class MeanSquaredError(_SquareLoss):
    """Squared error to one-hot targets, mean over classes; on softmax probabilities or raw outputs.

    On probabilities (the default) this is the Brier score divided by the number of classes C: the Brier score
    sums the squared errors over classes (the `brier` metric), the loss averages them.

    On raw outputs (`over: outputs`) this is the square loss of Hui & Belkin (2021): (1/C)·[k·(f_y − M)² +
    Σ_{c≠y} f_c²], with k weighting the true class and M its target value (both 1 by default; they suggest
    k = 1, M = 15 for 100+ classes). Soft targets q: (1/C)·Σ_c (1 + (k−1)·q_c)·(f_c − M·q_c)².
    """

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return _square_error(outputs, probs, self.over, self.k, self.M).mean()


@LOSSES.register("rmse")
class RootMeanSquaredError(_SquareLoss):
    """Root of the per-sample mse (same options as mse), averaged over the batch."""

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        # The clamp keeps the gradient finite at a perfect fit, where d√x/dx is infinite.
        return _square_error(outputs, probs, self.over, self.k, self.M).clamp(min=1e-12).sqrt().mean()


@LOSSES.register("mae")
class MeanAbsoluteError(Loss):
    """L1 distance Σ_c |softmax(z)_c − y_c| to one-hot targets, = 2·(1 − p_y) (Ghosh et al. 2017)."""

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return (outputs.softmax(dim=1) - probs).abs().sum(1).mean()


def _linear_tail_exp(t: torch.Tensor) -> torch.Tensor:
    """exp(t) up to t = EXP_LINEAR_ABOVE, then its tangent line: continuous value and slope, never overflows."""
    cap = EXP_LINEAR_ABOVE
    return torch.where(t <= cap, t.clamp(max=cap).exp(), math.exp(cap) * (1.0 + t - cap))


@LOSSES.register("exponential")
class Exponential(Loss):
    """Multiclass exponential loss (1/C)·Σ_c exp(−y_c·f_c), y_c = +1 for the true class, −1 for the others.

    Soft targets q: the expectation (1/C)·Σ_c [q_c·exp(−f_c) + (1 − q_c)·exp(f_c)]. Overflow guard: exp(t) is
    continued along its tangent line above t = 30, so the loss and its gradient stay finite for any outputs.
    """

    probabilistic = False

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        per_class = probs * _linear_tail_exp(-outputs) + (1.0 - probs) * _linear_tail_exp(outputs)
        return per_class.mean(1).mean()


class _MulticlassHinge(Loss):
    """Shared form of hinge and squared_hinge: per-label losses, averaged under the target distribution."""

    probabilistic = False
    power: int

    def __init__(self, variant: Literal["weston_watkins", "crammer_singer"] = "weston_watkins", margin: float = 1.0):
        super().__init__()
        if variant not in ("weston_watkins", "crammer_singer"):
            raise ValueError(f"variant must be weston_watkins or crammer_singer, got {variant!r}")
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        self.variant, self.margin = variant, margin

    def per_label(self, outputs: torch.Tensor) -> torch.Tensor:
        """[B, C]: entry (b, y) is the loss of sample b if its label were y."""
        num_classes = outputs.shape[1]
        if num_classes < 2:
            raise ValueError("a multiclass hinge needs at least two classes")
        if self.variant == "weston_watkins":
            # violation[b, y, c] = margin − f_y + f_c, for every wrong class c ≠ y.
            violation = (self.margin - outputs[:, :, None] + outputs[:, None, :]).clamp(min=0).pow(self.power)
            wrong = ~torch.eye(num_classes, dtype=torch.bool, device=outputs.device)
            return (violation * wrong).sum(2) / num_classes
        top2 = outputs.topk(2, dim=1)
        best_first, best_second = top2.values[:, :1], top2.values[:, 1:]
        is_top = torch.arange(num_classes, device=outputs.device)[None, :] == top2.indices[:, :1]
        best_other = torch.where(is_top, best_second, best_first)
        return (self.margin + best_other - outputs).clamp(min=0).pow(self.power)

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return (probs * self.per_label(outputs)).sum(1).mean()


@LOSSES.register("hinge")
class Hinge(_MulticlassHinge):
    """Multiclass hinge: Weston–Watkins (1/C)·Σ_{c≠y} max(0, m − f_y + f_c), or Crammer–Singer max(0, m + max_{c≠y} f_c − f_y)."""

    power = 1


@LOSSES.register("squared_hinge")
class SquaredHinge(_MulticlassHinge):
    """Multiclass squared hinge: each hinge term of `hinge` (Weston–Watkins or Crammer–Singer) squared."""

    power = 2
