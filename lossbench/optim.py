"""Optimizers and learning-rate schedules from torch.optim, registered by name."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from lossbench.registry import Registry


class OptimizerFactory:
    """Builds a torch optimizer over a model's parameters from the suite's settings."""

    def build(self, params: Iterable[nn.Parameter], fused: bool = False) -> torch.optim.Optimizer:
        raise NotImplementedError


OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizers", "optimizer")


def _check_lr(lr: float, weight_decay: float) -> None:
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")


def _foreach_kwargs(fused: bool) -> dict[str, bool]:
    # One fused kernel per step on CUDA; the multi-tensor (foreach) path otherwise.
    return {"fused": True} if fused else {"foreach": True}


@OPTIMIZERS.register("sgd")
class SGD(OptimizerFactory):
    """Stochastic gradient descent with (Nesterov) momentum; torch.optim.SGD."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, nesterov: bool = False, weight_decay: float = 0.0):
        _check_lr(lr, weight_decay)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        self.lr, self.momentum, self.nesterov, self.weight_decay = lr, momentum, nesterov, weight_decay

    def build(self, params: Iterable[nn.Parameter], fused: bool = False) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.weight_decay,
            **_foreach_kwargs(fused),
        )


@OPTIMIZERS.register("adam")
class Adam(OptimizerFactory):
    """Adam (Kingma & Ba); torch.optim.Adam, weight decay coupled as an L2 gradient term."""

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0):
        _check_lr(lr, weight_decay)
        self.lr, self.betas, self.eps, self.weight_decay = lr, (beta1, beta2), eps, weight_decay

    def build(self, params: Iterable[nn.Parameter], fused: bool = False) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay,
                                **_foreach_kwargs(fused))


@OPTIMIZERS.register("adamw")
class AdamW(OptimizerFactory):
    """AdamW (Loshchilov & Hutter): Adam with decoupled weight decay; torch.optim.AdamW."""

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.01):
        _check_lr(lr, weight_decay)
        self.lr, self.betas, self.eps, self.weight_decay = lr, (beta1, beta2), eps, weight_decay

    def build(self, params: Iterable[nn.Parameter], fused: bool = False) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay,
                                 **_foreach_kwargs(fused))


class ScheduleFactory:
    """Builds a per-step learning-rate scheduler for a run of `total_steps` optimizer steps."""

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int
              ) -> torch.optim.lr_scheduler.LRScheduler:
        raise NotImplementedError


SCHEDULES: Registry[ScheduleFactory] = Registry("schedules", "schedule")


@SCHEDULES.register("constant")
class Constant(ScheduleFactory):
    """The optimizer's learning rate throughout."""

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int
              ) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


@SCHEDULES.register("cosine")
class Cosine(ScheduleFactory):
    """Cosine decay per step from the optimizer's lr to min_factor·lr at the last step."""

    def __init__(self, min_factor: float = 0.0):
        if not 0.0 <= min_factor <= 1.0:
            raise ValueError(f"min_factor must be in [0, 1], got {min_factor}")
        self.min_factor = min_factor

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int
              ) -> torch.optim.lr_scheduler.LRScheduler:
        span = max(total_steps, 1)

        def factor(step: int) -> float:
            return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * min(step, span) / span))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
