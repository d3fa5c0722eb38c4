"""Losses designed to tolerate noisy labels; logit heads, predictions by argmax.

Both are bounded in the prediction (unlike cross-entropy, which grows without limit on a confidently wrong
sample), which is what limits the pull of a mislabelled example. Soft targets enter as the expectation of the
hard-label loss under the target distribution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lossbench.losses import LOSSES
from lossbench.losses.base import Loss


@LOSSES.register("gce")
class GeneralizedCrossEntropy(Loss):
    """Generalized cross-entropy (1 − p_y^q)/q (Zhang & Sabuncu 2018): cross-entropy as q → 0, MAE/2 at q = 1."""

    def __init__(self, q: float = 0.7):
        super().__init__()
        if not 0.0 < q <= 1.0:
            raise ValueError(f"q must be in (0, 1], got {q}")
        self.q = q

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        # p^q as exp(q·log p): finite for any logits, where softmax would underflow to 0.
        p_pow_q = (self.q * F.log_softmax(outputs, dim=1)).exp()
        return (probs * (1.0 - p_pow_q)).sum(1).mean() / self.q


@LOSSES.register("sce")
class SymmetricCrossEntropy(Loss):
    """Symmetric cross-entropy α·CE + β·RCE, RCE = −Σ_c p_c·log y_c with log 0 := A (Wang et al. 2019).

    On a one-hot label RCE = −A·(1 − p_y). Soft targets q: RCE = −Σ_c p_c·max(log q_c, A). `log_zero` is A; the
    paper uses −4 with α = 0.1, β = 1 on CIFAR-10.
    """

    def __init__(self, alpha: float = 0.1, beta: float = 1.0, log_zero: float = -4.0):
        super().__init__()
        if alpha < 0 or beta < 0 or alpha + beta == 0:
            raise ValueError(f"alpha and beta must be >= 0 and not both 0, got alpha={alpha}, beta={beta}")
        if log_zero >= 0:
            raise ValueError(f"log_zero stands for log 0 and must be < 0, got {log_zero}")
        self.alpha, self.beta, self.log_zero = alpha, beta, log_zero

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(outputs, dim=1)
        ce = -(probs * log_p).sum(1)
        # max(log q, A) = log(max(q, e^A)): clamping q first avoids log 0 entirely.
        log_q = probs.clamp(min=math.exp(self.log_zero)).log()
        rce = -(log_p.exp() * log_q).sum(1)
        return (self.alpha * ce + self.beta * rce).mean()
