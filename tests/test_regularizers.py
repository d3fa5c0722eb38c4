"""Regularizers: penalties against a hand computation, after-step changes, dropout, and their use in training."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from lossbench.config.dataset import DatasetConfig
from lossbench.config.source import SuiteSource
from lossbench.suite import parse_suite
from lossbench.data import load_dataset
from lossbench.device import EngineOptions
from lossbench.execution import train_cell
from lossbench.errors import ConfigError
from lossbench.grid import expand
from lossbench.models import MODELS
from lossbench.models import DropoutPlacement, ModelFacts
from lossbench.regularizers import REGULARIZERS, RegularizerSet

from conftest import with_recipe


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0)  # biases and norm scales nonzero, so excluding them matters
    return model


def by_hand(model: nn.Module, fn, include_bias: bool) -> float:
    """Σ fn(w) over weight matrices and kernels (and biases / norm parameters when include_bias), in float64."""
    total = 0.0
    for name, p in model.named_parameters():
        is_weight_tensor = name.endswith("weight") and p.ndim > 1
        if is_weight_tensor or include_bias:
            total += fn(p.detach().double()).sum().item()
    return total


@pytest.mark.parametrize("include_bias", [False, True])
def test_l2_l1_elastic_penalties_equal_hand_computation(include_bias: bool) -> None:
    model = small_model()
    squares = by_hand(model, lambda w: w**2, include_bias)
    absolute = by_hand(model, torch.abs, include_bias)
    l2 = REGULARIZERS.build("l2", {"weight": 0.01, "include_bias": include_bias}).penalty(model)
    l1 = REGULARIZERS.build("l1", {"weight": 0.001, "include_bias": include_bias}).penalty(model)
    elastic = REGULARIZERS.build("elastic", {"l1": 0.001, "l2": 0.01, "include_bias": include_bias}).penalty(model)
    assert l2.item() == pytest.approx(0.01 * squares, rel=1e-5)
    assert l1.item() == pytest.approx(0.001 * absolute, rel=1e-5)
    assert elastic.item() == pytest.approx(0.01 * squares + 0.001 * absolute, rel=1e-5)


def test_penalty_is_differentiable_with_the_right_gradient() -> None:
    model = small_model()
    REGULARIZERS.build("l2", {"weight": 0.5}).penalty(model).backward()
    linear = model[3]
    torch.testing.assert_close(linear.weight.grad, 2 * 0.5 * linear.weight.detach())
    assert linear.bias.grad is None  # biases are excluded by default


def test_weight_decay_shrinks_weights_after_each_step() -> None:
    model = small_model()
    before = copy.deepcopy(model)
    REGULARIZERS.build("weight_decay", {"weight": 0.1}).after_step(model, lr=0.5)
    for (name, p), q in zip(model.named_parameters(), before.parameters()):
        factor = 1 - 0.5 * 0.1 if p.ndim > 1 else 1.0
        torch.testing.assert_close(p.detach(), q.detach() * factor)


def test_weight_decay_with_sgd_matches_adamw_style_decay() -> None:
    # Decoupled decay does not go through the gradient: with a zero loss gradient only the decay acts.
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    reg = RegularizerSet([REGULARIZERS.build("weight_decay", {"weight": 0.05, "include_bias": True})])
    start = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        opt.zero_grad()
        (0.0 * sum(p.sum() for p in model.parameters())).backward()
        opt.step()
        reg.after_step(model, lr=0.2)
    for p, p0 in zip(model.parameters(), start):
        torch.testing.assert_close(p.detach(), p0 * (1 - 0.2 * 0.05) ** 3)


def test_max_norm_caps_each_units_incoming_weights() -> None:
    model = small_model()
    before = copy.deepcopy(model)
    c = 2.0
    REGULARIZERS.build("max_norm", {"c": c}).after_step(model, lr=0.1)
    for (name, p), q in zip(model.named_parameters(), before.parameters()):
        if p.ndim < 2:
            assert torch.equal(p, q)  # biases and norm parameters untouched
            continue
        rows_before = q.detach().flatten(1)
        norms = rows_before.norm(dim=1)
        expected = torch.where((norms > c)[:, None], rows_before * (c / norms)[:, None], rows_before)
        torch.testing.assert_close(p.detach().flatten(1), expected, atol=1e-5, rtol=1e-5)
        assert (p.detach().flatten(1).norm(dim=1) <= c + 1e-4).all()
    assert any((q.detach().flatten(1).norm(dim=1) > c).any() for q in before.parameters() if q.ndim > 1)


def test_dropout_is_active_in_training_and_off_at_evaluation() -> None:
    plan = RegularizerSet([REGULARIZERS.build("dropout", {"p": 0.5, "where": "both"})]).dropout()
    assert plan == DropoutPlacement(classifier=0.5, conv=0.5)
    torch.manual_seed(0)
    model = MODELS.build("tutorial_cnn", {}).build(ModelFacts(1, (8, 8), 10, plan))
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 4  # after each of the three conv blocks and before the classifier
    x = torch.rand(6, 1, 8, 8)
    without = copy.deepcopy(model)
    for parent in without.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Dropout):
                setattr(parent, name, nn.Identity())
    model.eval()
    torch.testing.assert_close(model(x), without(x))
    model.train()
    assert not torch.allclose(model(x), model(x))


def test_a_list_composes_penalties_and_dropout() -> None:
    model = small_model()
    regs = RegularizerSet([REGULARIZERS.build("l2", {"weight": 0.01}), REGULARIZERS.build("l1", {"weight": 0.001}),
                           REGULARIZERS.build("dropout", {"p": 0.2}), REGULARIZERS.build("dropout", {"p": 0.4}),
                           REGULARIZERS.build("none", {})])
    expected = 0.01 * by_hand(model, lambda w: w**2, False) + 0.001 * by_hand(model, torch.abs, False)
    assert regs.penalty(model).item() == pytest.approx(expected, rel=1e-5)
    assert regs.dropout() == DropoutPlacement(classifier=0.4, conv=0.0)
    assert RegularizerSet([REGULARIZERS.build("none", {})]).penalty(model) is None


def test_range_checks_become_config_errors() -> None:
    for name, params in [("l2", {"weight": -1.0}), ("elastic", {"l1": -1.0}), ("weight_decay", {"weight": -0.1}),
                         ("max_norm", {"c": 0.0}), ("dropout", {"p": 1.0}), ("dropout", {"where": "everywhere"})]:
        with pytest.raises(ConfigError):
            REGULARIZERS.build(name, params)


def test_training_records_the_penalty_share_and_applies_after_step(tmp_path: Path) -> None:
    c = 0.05
    suite = parse_suite(SuiteSource({
        "name": "reg-test",
        "dataset": {"name": "digits"},
        "model": {"name": "small_cnn"},
        "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05}},
        "grid": {"loss": ["cross_entropy"],
                 "regularizer": [[{"name": "l2", "weight": 0.01}, {"name": "max_norm", "c": c}]]},
    }, "reg-test.yaml", {}))
    (cell,) = expand(suite, "digits:test")
    data = load_dataset(DatasetConfig(name="digits"), cache_dir=tmp_path)
    options = EngineOptions(device=torch.device("cpu"), precision="fp32")
    result = train_cell(with_recipe(cell, epochs=2, batch_size=64), data, options)
    assert result.status == "done", result.error
    for record in result.history:
        assert record.penalty is not None and record.penalty > 0
        assert record.penalty_share == pytest.approx(record.penalty / (record.train_loss + record.penalty))
    # From the second epoch on every penalty is taken after max_norm ran: Σw² <= units · c².
    model = MODELS.build("small_cnn", {}).build(ModelFacts(1, (8, 8), 10))
    units = sum(p.shape[0] for p in model.parameters() if p.ndim > 1)
    assert result.history[1].penalty <= 0.01 * units * c**2 * (1 + 1e-4)
    assert result.history[0].penalty > 0.01 * units * c**2  # the initial weights exceed the cap
