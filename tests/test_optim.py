"""Optimizers and schedules: settings reach torch, updates match a hand computation, lr sequences match formulas."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lossbench.config.dataset import DatasetConfig
from lossbench.config.source import SuiteSource
from lossbench.suite import parse_suite
from lossbench.data import load_dataset
from lossbench.device import EngineOptions
from lossbench.execution import train_cell
from lossbench.errors import ConfigError
from lossbench.grid import expand
from lossbench.optim import OPTIMIZERS, SCHEDULES

from conftest import with_recipe

TORCH_CLASS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
               "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}


def test_every_optimizer_is_covered() -> None:
    assert set(OPTIMIZERS.names()) == set(TORCH_CLASS)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_optimizer_builds_its_torch_class_and_descends(name: str) -> None:
    w = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = OPTIMIZERS.build(name, {"lr": 0.05}).build([w])
    assert type(opt) is TORCH_CLASS[name] and opt.param_groups[0]["lr"] == 0.05
    for _ in range(20):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
    assert (w.detach() ** 2).sum() < 13.0


def test_sgd_momentum_update_by_hand() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = OPTIMIZERS.build("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}).build([w])
    expected, buf = 1.0, 0.0
    for _ in range(3):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
        grad = 2 * expected
        buf = 0.9 * buf + grad if buf else grad
        expected -= 0.1 * (grad + 0.9 * buf)  # Nesterov: step along g + μ·buf
    assert w.item() == pytest.approx(expected, rel=1e-6)


def test_rmsprop_and_adagrad_first_steps_by_hand() -> None:
    g = 2.0  # gradient of w² at w = 1
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = OPTIMIZERS.build("rmsprop", {"lr": 0.01, "alpha": 0.9}).build([w])
    (w**2).sum().backward()
    opt.step()
    assert w.item() == pytest.approx(1 - 0.01 * g / (math.sqrt(0.1 * g * g) + 1e-8), rel=1e-6)
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = OPTIMIZERS.build("adagrad", {"lr": 0.1}).build([w])
    (w**2).sum().backward()
    opt.step()
    assert w.item() == pytest.approx(1 - 0.1 * g / (math.sqrt(g * g) + 1e-10), rel=1e-6)


def test_optimizer_range_checks() -> None:
    for name, params in [("sgd", {"lr": 0.0}), ("sgd", {"momentum": 1.0}), ("sgd", {"momentum": 0.0, "nesterov": True}),
                         ("rmsprop", {"alpha": 1.0}), ("adagrad", {"weight_decay": -1.0})]:
        with pytest.raises(ConfigError):
            OPTIMIZERS.build(name, params)


# ---------------------------------------------------------------------------------------------------------------
# Schedules: the lr of every step against closed forms written here.

LR, TOTAL, PER_EPOCH = 0.8, 40, 5


def lrs(name: str, params: dict, total: int = TOTAL, per_epoch: int = PER_EPOCH) -> list[float]:
    """The lr used by each optimizer step, stepping the scheduler after each step as the engine does."""
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=LR, momentum=0.9)
    schedule = SCHEDULES.build(name, params).build(opt, total_steps=total, steps_per_epoch=per_epoch)
    out = []
    for _ in range(total):
        out.append(schedule.get_last_lr()[0])
        opt.step()
        schedule.step()
    return out


def cosine(t: int, span: int, floor: float) -> float:
    return floor + (LR - floor) * 0.5 * (1 + math.cos(math.pi * t / span))


def warm(t: int, steps: int, start: float) -> float:
    return LR * (start + (1 - start) * t / steps)


def one_cycle(t: int, total: int, pct: float, div: float, final_div: float) -> float:
    peak_step = pct * total - 1
    low, floor = LR / div, LR / div / final_div
    if t <= peak_step:
        return low + (LR - low) * 0.5 * (1 - math.cos(math.pi * t / peak_step))
    frac = (t - peak_step) / (total - 1 - peak_step)
    return floor + (LR - floor) * 0.5 * (1 + math.cos(math.pi * frac))


CASES = {
    "constant": ({}, lambda t: LR),
    "constant+warmup": ({"warmup_epochs": 2}, lambda t: warm(t, 10, 0.01) if t < 10 else LR),
    "step": ({"step_epochs": 3, "gamma": 0.5}, lambda t: LR * 0.5 ** (t // 15)),
    "step+warmup": ({"step_epochs": 3, "gamma": 0.5, "warmup_epochs": 1, "warmup_from": 0.1},
                    lambda t: warm(t, 5, 0.1) if t < 5 else LR * 0.5 ** (t // 15)),
    "multistep": ({"milestones": [2, 5], "gamma": 0.1},
                  lambda t: LR * 0.1 ** ((t >= 10) + (t >= 25))),
    "multistep+warmup": ({"milestones": [2, 5], "gamma": 0.1, "warmup_epochs": 1},
                         lambda t: warm(t, 5, 0.01) if t < 5 else LR * 0.1 ** ((t >= 10) + (t >= 25))),
    "cosine": ({"min_factor": 0.1}, lambda t: cosine(t, TOTAL, 0.1 * LR)),
    "cosine+warmup": ({"warmup_epochs": 1.6}, lambda t: warm(t, 8, 0.01) if t < 8 else cosine(t - 8, TOTAL - 8, 0.0)),
    "onecycle": ({"pct_start": 0.25, "div_factor": 10, "final_div_factor": 100},
                 lambda t: one_cycle(t, TOTAL, 0.25, 10, 100)),
}


def test_every_schedule_is_covered() -> None:
    assert {case.split("+")[0] for case in CASES} == set(SCHEDULES.names())


@pytest.mark.parametrize("case", CASES)
def test_schedule_matches_closed_form(case: str) -> None:
    params, formula = CASES[case]
    got = lrs(case.split("+")[0], params)
    expected = [formula(t) for t in range(TOTAL)]
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_warmup_longer_than_the_run_leaves_one_main_step() -> None:
    got = lrs("cosine", {"warmup_epochs": 100})
    assert got[0] == pytest.approx(0.01 * LR) and got[-1] == pytest.approx(LR)


def test_onecycle_leaves_momentum_alone_unless_asked() -> None:
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=LR, momentum=0.9)
    SCHEDULES.build("onecycle", {}).build(opt, total_steps=10, steps_per_epoch=5)
    assert opt.param_groups[0]["momentum"] == 0.9


def test_schedule_range_checks() -> None:
    for name, params in [("onecycle", {"warmup_epochs": 1}), ("step", {"gamma": 0.0}), ("multistep", {"milestones": []}),
                         ("cosine", {"min_factor": 1.5}), ("constant", {"warmup_from": 0.0})]:
        with pytest.raises(ConfigError):
            SCHEDULES.build(name, params)


def test_history_records_the_learning_rate_per_epoch(tmp_path: Path) -> None:
    suite = parse_suite(SuiteSource({
        "name": "optim-test",
        "dataset": {"name": "digits"},
        "model": {"name": "small_cnn"},
        "train": {"epochs": 3, "batch_size": 128, "optimizer": {"name": "adamw", "lr": 0.004},
                  "schedule": {"name": "step", "step_epochs": 1, "gamma": 0.5}},
        "grid": {"loss": ["cross_entropy"]},
    }, "optim-test.yaml", {}))
    (cell,) = expand(suite, "digits:test")
    data = load_dataset(DatasetConfig(name="digits", train_subset=300), cache_dir=tmp_path)
    result = train_cell(with_recipe(cell, epochs=3, batch_size=128), data, EngineOptions(torch.device("cpu"), "fp32"))
    assert result.status == "done", result.error
    assert [r.lr for r in result.history] == pytest.approx([0.004, 0.002, 0.001])
