"""arcface, cosface and center: their papers' formulas on hand examples, gradients to their own parameters,
and training on the digits: above chance, with their parameters changed by the optimizer."""

from __future__ import annotations

import math

import pytest
import torch

from lossbench.losses import LOSSES
from lossbench.losses.margin import ArcFace, CenterLoss, CosFace


def unit(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def hand_ce(logits: list[float], target: int) -> float:
    """-log softmax(logits)[target], written out."""
    return -logits[target] + math.log(sum(math.exp(z) for z in logits))


def with_weights(loss, degrees: list[float]):
    loss.setup(len(degrees))
    with torch.no_grad():
        # Unnormalized on purpose: the losses normalize the class weights themselves.
        loss.weight.copy_(torch.tensor([[3 * a for a in unit(d)] for d in degrees]))
    return loss


def test_arcface_matches_the_papers_formula_on_a_hand_example() -> None:
    # Class weights at 0, 90 and 180 degrees; a feature at 30 degrees (length 2) labelled class 0.
    loss = with_weights(ArcFace(embedding_dim=2, scale=4.0, margin=0.5), [0, 90, 180])
    x = torch.tensor([[2 * a for a in unit(30)]])
    theta = math.radians(30)
    expected = hand_ce([4 * math.cos(theta + 0.5), 4 * math.cos(math.radians(60)), 4 * math.cos(math.radians(150))], 0)
    assert loss(x, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-5)
    # Labelled class 1 instead: θ_y = 60 degrees gets the margin, class 0 keeps cos 30°.
    expected = hand_ce([4 * math.cos(theta), 4 * math.cos(math.radians(60) + 0.5), 4 * math.cos(math.radians(150))], 1)
    assert loss(x, torch.tensor([1])).item() == pytest.approx(expected, rel=1e-5)
    # Predictions: the scale times the plain cosines, no margin.
    assert torch.allclose(loss.to_logits(x), 4 * torch.tensor([[math.cos(theta), 0.5, math.cos(math.radians(150))]]),
                          atol=1e-6)


def test_arcface_beyond_pi_continues_linearly_as_insightface_does() -> None:
    # Target class at 180 degrees from the feature: θ_y + m > π, so the logit is s·(cos θ − m·sin m).
    loss = with_weights(ArcFace(embedding_dim=2, scale=2.0, margin=0.5), [0, 180])
    x = torch.tensor([unit(0)])
    expected = hand_ce([2 * 1.0, 2 * (-1.0 - 0.5 * math.sin(0.5))], 1)
    assert loss(x, torch.tensor([1])).item() == pytest.approx(expected, rel=1e-4)


def test_cosface_matches_the_papers_formula_on_a_hand_example() -> None:
    loss = with_weights(CosFace(embedding_dim=2, scale=8.0, margin=0.35), [0, 90, 180])
    x = torch.tensor([unit(30), unit(120)])
    first = hand_ce([8 * (math.cos(math.radians(30)) - 0.35), 8 * 0.5, 8 * math.cos(math.radians(150))], 0)
    second = hand_ce([8 * math.cos(math.radians(120)), 8 * (math.cos(math.radians(30)) - 0.35), 8 * 0.5], 1)
    assert loss(x, torch.tensor([0, 1])).item() == pytest.approx((first + second) / 2, rel=1e-5)


def test_margin_zero_is_cross_entropy_on_scaled_cosines() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(16, 5), torch.randint(0, 4, (16,))
    for cls in (ArcFace, CosFace):
        loss = cls(embedding_dim=5, scale=10.0, margin=0.0)
        loss.setup(4)
        expected = torch.nn.functional.cross_entropy(loss.to_logits(x), y)
        assert loss(x, y).item() == pytest.approx(expected.item(), rel=1e-5)


def test_center_loss_is_cross_entropy_plus_lambda_half_mean_squared_distance() -> None:
    loss = CenterLoss(embedding_dim=2, center_weight=0.1)
    loss.setup(2)
    with torch.no_grad():
        loss.classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        loss.classifier.bias.zero_()
        loss.centers.copy_(torch.tensor([[1.0, 1.0], [-1.0, 2.0]]))
    x = torch.tensor([[3.0, 1.0], [0.0, 0.0]])
    y = torch.tensor([0, 1])
    ce = (hand_ce([3.0, 1.0], 0) + hand_ce([0.0, 0.0], 1)) / 2
    # ‖(3,1) − (1,1)‖² = 4 and ‖(0,0) − (−1,2)‖² = 5; L_C = ½ · (4 + 5) / 2.
    assert loss(x, y).item() == pytest.approx(ce + 0.1 * 0.5 * (4 + 5) / 2, rel=1e-6)


@pytest.mark.parametrize("name", ["arcface", "cosface", "center"])
def test_every_own_parameter_gets_a_gradient_and_soft_targets_are_refused(name: str) -> None:
    loss = LOSSES.build(name, {"embedding_dim": 6})
    assert loss.output_dim(10) == 6 and not loss.soft_targets
    loss.setup(3)
    x = torch.randn(8, 6, requires_grad=True)
    loss(x, torch.randint(0, 3, (8,))).backward()
    own = list(loss.parameters())
    assert own and all(p.grad is not None and p.grad.abs().sum() > 0 for p in own)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="hard labels"):
        loss(x, torch.full((8, 3), 1 / 3))


def test_a_feature_on_its_class_weight_has_a_finite_gradient() -> None:
    loss = with_weights(ArcFace(embedding_dim=2, scale=4.0, margin=0.5), [0, 90])
    x = torch.tensor([unit(0)], requires_grad=True)
    loss(x, torch.tensor([0])).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(loss.weight.grad).all()


@pytest.mark.parametrize(("params", "match"), [
    ({"scale": 0.0}, "scale"), ({"margin": -0.1}, "margin"), ({"margin": 2.0}, "radians"), ({"embedding_dim": 0}, "dim"),
])
def test_bad_parameters_are_rejected(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ArcFace(**params)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from lossbench.data import load_dataset

    return load_dataset("digits", None, cache_dir=tmp_path_factory.mktemp("cache"), train_subset=500)


@pytest.mark.parametrize("name", ["arcface", "cosface", "center"])
def test_training_changes_the_losses_own_parameters_and_beats_chance(name: str, digits, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from lossbench.config import Suite
    from lossbench.engine import EngineOptions
    from lossbench.runner import train_cell
    from lossbench.grid import expand

    built = []
    cls = LOSSES.get(name)
    original_setup = cls.setup

    def recording_setup(self, num_classes: int) -> None:  # type: ignore[no-untyped-def]
        original_setup(self, num_classes)
        built.append((self, {n: p.detach().clone() for n, p in self.named_parameters()}))

    monkeypatch.setattr(cls, "setup", recording_setup)
    suite = Suite.model_validate({
        "name": "margin", "dataset": {"name": "digits"}, "model": {"name": "small_cnn"},
        "train": {"epochs": 3, "batch_size": 32, "optimizer": {"name": "adam", "lr": 3e-3}},
        "grid": {"loss": [{"name": name, "embedding_dim": 32}]},
    })
    torch.set_num_threads(1)
    result = train_cell(expand(suite, digits.identity)[0], digits, EngineOptions(torch.device("cpu"), "fp32", 3, 32))
    assert result.status == "done", result.traceback
    assert result.metrics["test_acc"] > 5 / digits.num_classes
    (loss, initial), = built
    for pname, before in initial.items():
        assert not torch.equal(before, dict(loss.named_parameters())[pname].detach()), f"{pname} did not train"
    expected = 10 * 32 if name != "center" else 10 * 32 + 10 + 10 * 32  # class weights; or class layer + centres
    assert result.metrics["loss_params"] == expected
