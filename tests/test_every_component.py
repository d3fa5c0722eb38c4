"""Every registered regularizer and scenario on real tensors (scikit-learn's digits), timm-style: a component
is tested the moment it is registered. (Models: tests/test_models.py; losses, augmentations and optimizers have
their own parametrized files.)"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lossbench.components import check_dropout_placement
from lossbench.data import ImageData
from lossbench.data.scenarios import SCENARIOS, ScenarioSet
from lossbench.models import MODELS, ModelFacts
from lossbench.regularizers import REGULARIZERS, RegularizerSet

#: Parameters for components whose defaults alone describe no change.
PARAMS = {"train_subset": {"n": 300}}
LR = 0.1


@pytest.mark.parametrize("name", REGULARIZERS.names())
def test_every_regularizer_in_a_real_training_step(name: str, digits: ImageData) -> None:
    regs = RegularizerSet([REGULARIZERS.build(name, PARAMS.get(name, {}))])
    placement = regs.dropout()
    check_dropout_placement("small_cnn", placement)
    torch.manual_seed(0)
    model = MODELS.build("small_cnn", {}).build(ModelFacts(1, (8, 8), 10, placement))
    for place, p in (("classifier", placement.classifier), ("conv", placement.conv)):
        if p > 0:
            assert any(isinstance(m, nn.Dropout) and m.p == p for m in model.modules()), place
    before = copy.deepcopy(model)
    x, y = digits.train_x[:64].float() / 255, digits.train_y[:64]
    loss = F.cross_entropy(model(x), y)
    penalty = regs.penalty(model)
    if penalty is not None:
        assert penalty.ndim == 0 and torch.isfinite(penalty) and penalty.item() > 0 and penalty.requires_grad
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    optimizer.zero_grad()
    (loss if penalty is None else loss + penalty).backward()
    optimizer.step()
    stepped = copy.deepcopy(model)
    regs.after_step(model, LR)
    for (pname, p), q, p0 in zip(model.named_parameters(), stepped.parameters(), before.parameters()):
        assert torch.isfinite(p).all() and not torch.equal(p, p0), pname  # the step moved every parameter
        if name == "weight_decay" and p.ndim > 1:  # decoupled decay: w ← w·(1 − lr·λ), after the step
            torch.testing.assert_close(p, q * (1 - LR * 5e-4), rtol=0, atol=0)
        elif name == "max_norm" and p.ndim > 1:  # every unit's incoming weights within the norm bound
            assert (p.detach().flatten(1).norm(dim=1) <= 3.0 + 1e-5).all()
        elif name not in ("weight_decay", "max_norm"):  # only these two act after the step
            assert torch.equal(p, q), pname


@pytest.mark.parametrize("name", SCENARIOS.names())
def test_every_scenario_on_the_real_digits(name: str, digits: ImageData) -> None:
    scenarios = ScenarioSet([SCENARIOS.build(name, PARAMS.get(name, {}))])
    a, summary = scenarios.apply(digits, 0)
    again, _ = scenarios.apply(digits, 0)
    other, _ = scenarios.apply(digits, 1)
    assert torch.equal(a.train_x, again.train_x) and torch.equal(a.train_y, again.train_y)  # paired: same draw
    assert a.test_x is digits.test_x and torch.equal(a.test_y, digits.test_y)  # the test split never changes
    assert 0 < a.train_x.shape[0] <= digits.train_x.shape[0] == digits.train_y.shape[0]
    assert a.train_y.min() >= 0 and a.train_y.max() < digits.num_classes
    # Every training image is one of the dataset's own.
    originals = {bytes(img.numpy().tobytes()) for img in digits.train_x}
    assert all(bytes(img.numpy().tobytes()) in originals for img in a.train_x)
    if name == "none":
        assert torch.equal(a.train_x, digits.train_x) and torch.equal(a.train_y, digits.train_y)
    else:
        assert summary is not None
        changed = a.train_x.shape != digits.train_x.shape or not torch.equal(a.train_y, digits.train_y)
        assert changed  # the scenario did something with its defaults
        seed_matters = a.train_x.shape != other.train_x.shape or not (
            torch.equal(a.train_x, other.train_x) and torch.equal(a.train_y, other.train_y))
        assert seed_matters
