"""Regularizers: penalties added to the loss, changes to the model, and steps after each update.

A regularizer can do any of three things, each a method the engine calls:
  penalty(model)          a scalar added to the training loss (L1, L2);
  dropout()               where the model should place dropout (p before the classifier, p after conv blocks);
  after_step(model, lr)   an in-place change after each optimizer step (weight decay, max-norm).
A list of regularizers in one grid entry composes them: penalties add, dropout takes the largest p per place,
after-step changes run in the order written.

Penalties are in nats per sample, like the loss they are added to; `lr` is the learning rate of the step just
taken (after the schedule). after_step works with foreach tensor ops and never reads a value back to the host.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from lossbench.models.base import DropoutPlacement
from lossbench.registry import Contract, Registry


def penalized_parameters(model: nn.Module, include_bias: bool) -> Iterator[nn.Parameter]:
    """Weights a norm penalty applies to: matrices and kernels; biases and norm-layer scales only on request."""
    for p in model.parameters():
        if p.requires_grad and (include_bias or p.ndim > 1):
            yield p


class Regularizer:
    """Base class; the defaults do nothing."""

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def dropout(self) -> DropoutPlacement | None:
        return None

    def after_step(self, model: nn.Module, lr: float) -> None:
        return None


REGULARIZERS: Registry[Regularizer] = Registry("regularizers", "regularizer", Contract(
    Regularizer, (),
    "a custom regularizer is a subclass of lossbench.regularizers.Regularizer which overrides penalty(model), "
    "dropout() and/or after_step(model, lr)",
))


def _check_strength(name: str, value: float) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


@REGULARIZERS.register("none")
class NoRegularizer(Regularizer):
    """No regularization."""


@REGULARIZERS.register("l2")
class L2Penalty(Regularizer):
    """λ·Σw² added to the loss (weights only unless include_bias)."""

    def __init__(self, weight: float = 1e-4, include_bias: bool = False):
        _check_strength("weight", weight)
        self.weight = weight
        self.include_bias = include_bias

    def penalty(self, model: nn.Module) -> torch.Tensor:
        return self.weight * sum(p.pow(2).sum() for p in penalized_parameters(model, self.include_bias))


@REGULARIZERS.register("l1")
class L1Penalty(Regularizer):
    """λ·Σ|w| added to the loss (weights only unless include_bias)."""

    def __init__(self, weight: float = 1e-5, include_bias: bool = False):
        _check_strength("weight", weight)
        self.weight = weight
        self.include_bias = include_bias

    def penalty(self, model: nn.Module) -> torch.Tensor:
        return self.weight * sum(p.abs().sum() for p in penalized_parameters(model, self.include_bias))


@REGULARIZERS.register("elastic")
class ElasticNet(Regularizer):
    """Elastic net: l1·Σ|w| + l2·Σw² added to the loss (weights only unless include_bias)."""

    def __init__(self, l1: float = 1e-5, l2: float = 1e-4, include_bias: bool = False):
        _check_strength("l1", l1)
        _check_strength("l2", l2)
        self.l1, self.l2 = l1, l2
        self.include_bias = include_bias

    def penalty(self, model: nn.Module) -> torch.Tensor:
        params = list(penalized_parameters(model, self.include_bias))
        return self.l1 * sum(p.abs().sum() for p in params) + self.l2 * sum(p.pow(2).sum() for p in params)


@REGULARIZERS.register("weight_decay")
class WeightDecay(Regularizer):
    """Decoupled weight decay: w ← w·(1 − lr·λ) after each step (weights only unless include_bias).

    This is the decay of AdamW and SGDW (Loshchilov & Hutter), for any optimizer: it shrinks the weights
    directly instead of adding λ·w to the gradient, so adaptive optimizers do not rescale it. With plain SGD
    (no momentum) it matches an L2 penalty of λ/2·Σw² to first order in lr.
    """

    def __init__(self, weight: float = 5e-4, include_bias: bool = False):
        _check_strength("weight", weight)
        self.weight = weight
        self.include_bias = include_bias

    def after_step(self, model: nn.Module, lr: float) -> None:
        if self.weight == 0:
            return
        with torch.no_grad():
            torch._foreach_mul_(list(penalized_parameters(model, self.include_bias)), 1.0 - lr * self.weight)


@REGULARIZERS.register("max_norm")
class MaxNorm(Regularizer):
    """Max-norm constraint: after each step, rescale each unit's incoming weight vector to an L2 norm of at most c.

    A unit is an output row of a linear layer or an output channel of a convolution (Srebro & Shraibman; used
    with dropout by Srivastava et al.). Biases are not constrained.
    """

    def __init__(self, c: float = 3.0):
        if not c > 0:
            raise ValueError(f"c must be > 0, got {c}")
        self.c = c

    def after_step(self, model: nn.Module, lr: float) -> None:
        with torch.no_grad():
            for p in penalized_parameters(model, include_bias=False):
                p.renorm_(2, 0, self.c)


@REGULARIZERS.register("dropout")
class Dropout(Regularizer):
    """Dropout with probability p before the classifier, after each conv block, or both."""

    def __init__(self, p: float = 0.5, where: str = "classifier"):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p must be in [0, 1), got {p}")
        if where not in ("classifier", "conv", "both"):
            raise ValueError(f"where must be one of classifier, conv, both; got {where!r}")
        self.p = p
        self.where = where

    def dropout(self) -> DropoutPlacement:
        return DropoutPlacement(
            classifier=self.p if self.where in ("classifier", "both") else 0.0,
            conv=self.p if self.where in ("conv", "both") else 0.0,
        )


class RegularizerSet:
    """The regularizers of one cell, applied together."""

    def __init__(self, regularizers: Sequence[Regularizer]):
        self.items = [r for r in regularizers if not isinstance(r, NoRegularizer)]

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        terms = [t for t in (r.penalty(model) for r in self.items) if t is not None]
        return sum(terms[1:], terms[0]) if terms else None

    def dropout(self) -> DropoutPlacement:
        plans = [p for p in (r.dropout() for r in self.items) if p is not None]
        return DropoutPlacement(
            classifier=max((p.classifier for p in plans), default=0.0), conv=max((p.conv for p in plans), default=0.0)
        )

    def after_step(self, model: nn.Module, lr: float) -> None:
        for r in self.items:
            r.after_step(model, lr)
