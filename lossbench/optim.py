"""Optimizers and learning-rate schedules from torch.optim, registered by name.

An optimizer factory holds the suite's settings and builds a torch optimizer over a model's parameters. A
schedule factory builds a torch.optim.lr_scheduler scheduler that the engine steps once per optimizer step;
schedule lengths written in epochs are converted to steps with the run's steps per epoch. Every schedule takes
an optional linear warmup (`warmup_epochs`, from `warmup_from`·lr up to lr), except onecycle, which warms up by
itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

from lossbench.registry import Contract, Registry


class OptimizerFactory:
    """Builds a torch optimizer over a model's parameters from the suite's settings."""

    def build(self, params: Iterable[nn.Parameter], fused: bool = False) -> torch.optim.Optimizer:
        raise NotImplementedError


OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizers", "optimizer", Contract(
    OptimizerFactory, ("build",),
    "a custom optimizer is a subclass of lossbench.optim.OptimizerFactory whose constructor takes the suite's "
    "parameters and which defines build(params, fused=False) returning a torch.optim.Optimizer",
))


def _check_lr(lr: float, weight_decay: float) -> None:
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")


def _foreach_kwargs(fused: bool) -> dict[str, bool]:
    # One fused kernel per step on CUDA; the multi-tensor (foreach) path otherwise.
    return {"fused": True} if fused else {"foreach": True}


def _check_unit(name: str, value: float, closed: bool = False) -> None:
    if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1{']' if closed else ')'}, got {value}")


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


@OPTIMIZERS.register("rmsprop")
class RMSprop(OptimizerFactory):
    """RMSprop (Hinton): steps scaled by a running RMS of the gradient; torch.optim.RMSprop."""

    def __init__(self, lr: float = 1e-3, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 centered: bool = False, weight_decay: float = 0.0):
        _check_lr(lr, weight_decay)
        _check_unit("alpha", alpha)
        _check_unit("momentum", momentum)
        self.lr, self.alpha, self.eps, self.momentum, self.centered, self.weight_decay = (
            lr, alpha, eps, momentum, centered, weight_decay)

    def build(self, params: Iterable[nn.Parameter], fused: bool = False) -> torch.optim.Optimizer:
        # RMSprop has no fused kernel; the foreach path is the fast one on every device.
        return torch.optim.RMSprop(params, lr=self.lr, alpha=self.alpha, eps=self.eps, momentum=self.momentum,
                                   centered=self.centered, weight_decay=self.weight_decay, foreach=True)


@OPTIMIZERS.register("adagrad")
class Adagrad(OptimizerFactory):
    """Adagrad (Duchi et al.): steps scaled by the root of the summed squared gradients; torch.optim.Adagrad."""

    def __init__(self, lr: float = 1e-2, lr_decay: float = 0.0, eps: float = 1e-10,
                 initial_accumulator_value: float = 0.0, weight_decay: float = 0.0):
        _check_lr(lr, weight_decay)
        if lr_decay < 0 or initial_accumulator_value < 0:
            raise ValueError("lr_decay and initial_accumulator_value must be >= 0")
        self.lr, self.lr_decay, self.eps, self.initial_accumulator_value, self.weight_decay = (
            lr, lr_decay, eps, initial_accumulator_value, weight_decay)

    def build(self, params: Iterable[nn.Parameter], fused: bool = False) -> torch.optim.Optimizer:
        # torch's fused Adagrad is CPU-only, so the foreach path serves every device.
        return torch.optim.Adagrad(params, lr=self.lr, lr_decay=self.lr_decay, eps=self.eps,
                                   initial_accumulator_value=self.initial_accumulator_value,
                                   weight_decay=self.weight_decay, foreach=True)


# ---------------------------------------------------------------------------------------------------------------
# Schedules.

LRScheduler = torch.optim.lr_scheduler.LRScheduler


class ScheduleFactory:
    """Builds a per-step learning-rate scheduler for a run of `total_steps` optimizer steps.

    Subclasses implement `main`, the schedule after warmup; `build` prepends the linear warmup with
    torch's SequentialLR when `warmup_epochs` > 0.
    """

    def __init__(self, warmup_epochs: float = 0.0, warmup_from: float = 0.01):
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        if not 0.0 < warmup_from <= 1.0:
            raise ValueError(f"warmup_from must be in (0, 1], got {warmup_from}")
        self.warmup_epochs = warmup_epochs
        self.warmup_from = warmup_from

    def warmup_steps(self, total_steps: int, steps_per_epoch: int) -> int:
        """Optimizer steps of linear warmup; at least one step is always left for the main schedule."""
        return min(round(self.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))

    def main(self, optimizer: torch.optim.Optimizer, base_lr: float, steps: int, offset: int,
             steps_per_epoch: int) -> LRScheduler:
        """The schedule for the `steps` optimizer steps that follow `offset` steps of warmup."""
        raise NotImplementedError

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int) -> LRScheduler:
        base_lr = float(optimizer.param_groups[0]["lr"])
        warmup = self.warmup_steps(total_steps, steps_per_epoch)
        if warmup == 0:
            return self.main(optimizer, base_lr, max(total_steps, 1), 0, steps_per_epoch)
        ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=self.warmup_from, end_factor=1.0,
                                                 total_iters=warmup)
        rest = self.main(optimizer, base_lr, total_steps - warmup, warmup, steps_per_epoch)
        return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, rest], milestones=[warmup])


SCHEDULES: Registry[ScheduleFactory] = Registry("schedules", "schedule", Contract(
    ScheduleFactory, ("main",),
    "a custom schedule is a subclass of lossbench.optim.ScheduleFactory which defines "
    "main(optimizer, base_lr, steps, offset, steps_per_epoch) returning a torch LRScheduler",
))


@SCHEDULES.register("constant")
class Constant(ScheduleFactory):
    """The optimizer's learning rate throughout (after the optional warmup)."""

    def main(self, optimizer: torch.optim.Optimizer, base_lr: float, steps: int, offset: int,
             steps_per_epoch: int) -> LRScheduler:
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _milestones(epochs: list[float], steps_per_epoch: int, offset: int) -> list[int]:
    """Epoch boundaries of the whole run as step counts of the main schedule (which starts after warmup)."""
    return sorted({max(round(e * steps_per_epoch) - offset, 0) for e in epochs})


@SCHEDULES.register("step")
class Step(ScheduleFactory):
    """lr·gamma^k after every `step_epochs` epochs (counted from the start of training); torch MultiStepLR."""

    def __init__(self, step_epochs: float = 30.0, gamma: float = 0.1, warmup_epochs: float = 0.0,
                 warmup_from: float = 0.01):
        super().__init__(warmup_epochs, warmup_from)
        if not step_epochs > 0:
            raise ValueError(f"step_epochs must be > 0, got {step_epochs}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.step_epochs, self.gamma = step_epochs, gamma

    def main(self, optimizer: torch.optim.Optimizer, base_lr: float, steps: int, offset: int,
             steps_per_epoch: int) -> LRScheduler:
        total_epochs = (steps + offset) / steps_per_epoch
        boundaries = [self.step_epochs * k for k in range(1, math.ceil(total_epochs / self.step_epochs) + 1)]
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, _milestones(boundaries, steps_per_epoch, offset), gamma=self.gamma)


@SCHEDULES.register("multistep")
class MultiStep(ScheduleFactory):
    """lr·gamma^k after the k-th epoch in `milestones` (counted from the start of training); torch MultiStepLR."""

    def __init__(self, milestones: tuple[float, ...] = (30.0, 60.0, 80.0), gamma: float = 0.1,
                 warmup_epochs: float = 0.0, warmup_from: float = 0.01):
        super().__init__(warmup_epochs, warmup_from)
        if not milestones or any(not m > 0 for m in milestones):
            raise ValueError(f"milestones must be a non-empty list of epochs > 0, got {list(milestones)}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.milestones, self.gamma = sorted(milestones), gamma

    def main(self, optimizer: torch.optim.Optimizer, base_lr: float, steps: int, offset: int,
             steps_per_epoch: int) -> LRScheduler:
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, _milestones(self.milestones, steps_per_epoch, offset), gamma=self.gamma)


@SCHEDULES.register("cosine")
class Cosine(ScheduleFactory):
    """Cosine decay per step from the optimizer's lr to min_factor·lr at the last step; torch CosineAnnealingLR."""

    def __init__(self, min_factor: float = 0.0, warmup_epochs: float = 0.0, warmup_from: float = 0.01):
        super().__init__(warmup_epochs, warmup_from)
        _check_unit("min_factor", min_factor, closed=True)
        self.min_factor = min_factor

    def main(self, optimizer: torch.optim.Optimizer, base_lr: float, steps: int, offset: int,
             steps_per_epoch: int) -> LRScheduler:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=self.min_factor * base_lr)


@SCHEDULES.register("onecycle")
class OneCycle(ScheduleFactory):
    """One-cycle (Smith): lr rises from lr/div_factor to lr over pct_start of the run, then anneals; torch OneCycleLR.

    The rise is its own warmup, so warmup_epochs must stay 0. The peak is the optimizer's lr; the floor is
    lr/(div_factor·final_div_factor). Momentum is left as the optimizer sets it unless cycle_momentum.
    """

    def __init__(self, pct_start: float = 0.3, anneal: Literal["cos", "linear"] = "cos", div_factor: float = 25.0,
                 final_div_factor: float = 1e4, cycle_momentum: bool = False, warmup_epochs: float = 0.0,
                 warmup_from: float = 0.01):
        super().__init__(warmup_epochs, warmup_from)
        if warmup_epochs != 0:
            raise ValueError("onecycle warms up by itself (pct_start); leave warmup_epochs at 0")
        if not 0.0 < pct_start < 1.0:
            raise ValueError(f"pct_start must be in (0, 1), got {pct_start}")
        if not (div_factor >= 1 and final_div_factor >= 1):
            raise ValueError("div_factor and final_div_factor must be >= 1")
        self.pct_start, self.anneal = pct_start, anneal
        self.div_factor, self.final_div_factor, self.cycle_momentum = div_factor, final_div_factor, cycle_momentum

    def main(self, optimizer: torch.optim.Optimizer, base_lr: float, steps: int, offset: int,
             steps_per_epoch: int) -> LRScheduler:
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=base_lr, total_steps=steps, pct_start=self.pct_start,
            anneal_strategy=self.anneal, div_factor=self.div_factor, final_div_factor=self.final_div_factor,
            cycle_momentum=self.cycle_momentum,
        )
