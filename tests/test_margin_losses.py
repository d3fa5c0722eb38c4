"""arcface, cosface and center: their papers' formulas on hand examples, gradients to their own parameters,
and training on the digits: above chance, with their parameters changed by the optimizer."""

from __future__ import annotations

import math

import pytest
import torch

from lossbench.config.dataset import DatasetConfig
from lossbench.losses import LOSSES
from lossbench.losses.margin import ArcFace, CenterLoss, CosFace

from conftest import with_recipe


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


def test_an_sgd_step_on_the_center_term_divides_by_the_batch_not_by_one_plus_the_class_count() -> None:
    """The docstring's comparison with Wen et al.: the gradient of L_C for centre j is Σ_{i: y_i = j}(c_j − x_i) / B
    (their update divides the same sum by 1 + n_j)."""
    loss = CenterLoss(embedding_dim=3)
    loss.setup(4)
    x, y = torch.randn(10, 3), torch.tensor([0, 0, 0, 1, 1, 2, 0, 1, 2, 0])
    loss.center_term(x, y).backward()
    for j in range(4):
        members = x[y == j]
        expected = (loss.centers[j].detach() - members).sum(dim=0) / len(y)
        torch.testing.assert_close(loss.centers.grad[j], expected)


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


def _arcface_batch(angle: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class weights W [3, 4] (float64), labels, and embeddings 3·(cos a·Ŵ_y + sin a·u) at `angle` a (radians)
    from their class weight, u a unit vector perpendicular to Ŵ_y: at a = 0 exactly three times the weight."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0])
    w = torch.nn.functional.normalize(weight, dim=1)[labels]
    u = torch.randn(4, 4, generator=g, dtype=torch.float64)
    u = torch.nn.functional.normalize(u - (u * w).sum(1, keepdim=True) * w, dim=1)
    x = 3 * weight[labels] / weight[labels].norm(dim=1, keepdim=True) if angle == 0 else \
        3 * (math.cos(angle) * w + math.sin(angle) * u)
    return weight, labels, x


def _arcface_reference(x: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, angle: float, scale: float,
                       margin: float) -> torch.Tensor:
    """Deng et al.'s loss written out in float64 with θ_y = acos(cos θ_y), which float64 resolves at these angles;
    at a = 0 the target angle is the constant 0 (its zero subgradient: the loss has a kink there)."""
    cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(weight, dim=1).T
    theta = torch.zeros(len(labels), 1, dtype=x.dtype) if angle == 0 else torch.acos(cos.gather(1, labels[:, None]))
    logits = cos.scatter(1, labels[:, None], torch.cos(theta + margin))
    return torch.nn.functional.cross_entropy(scale * logits, labels)


def _loss_and_grads(fn, x: torch.Tensor, weight: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """fn(x, w) -> (loss, the class weights it trained as [C, D], or [D, C] for PML); the loss and its gradients
    to x and to the class weights [C, D], in float64."""
    x = x.clone().requires_grad_()
    value, w = fn(x, torch.nn.Parameter(weight.clone()))
    value.backward()
    grad_w = w.grad if w.shape == weight.shape else w.grad.T
    return value.item(), x.grad.double(), grad_w.double()


@pytest.mark.parametrize("angle", [0.0, 1e-4, 1e-3, 3e-3])
def test_arcface_is_exact_near_its_class_weight(angle: float) -> None:
    """Loss and gradients (to embeddings and class weights) agree with a float64 reference and with
    pytorch-metric-learning's ArcFaceLoss at angles the old clamp of cos θ at 1 − 1e-6 (θ < 1.41e-3) got wrong."""
    from pytorch_metric_learning.losses import ArcFaceLoss

    scale, margin = 4.0, 0.5
    weight, labels, x = _arcface_batch(angle)
    ref = _loss_and_grads(lambda x, w: (_arcface_reference(x, w, labels, angle, scale, margin), w), x, weight)

    def ours(x: torch.Tensor, w: torch.nn.Parameter):  # type: ignore[no-untyped-def]
        loss = ArcFace(embedding_dim=4, scale=scale, margin=margin)
        loss.setup(3)
        loss.weight = w
        return loss.hard(x, labels), w  # hard(): forward would cast float64 outputs to float32

    def pml(x: torch.Tensor, w: torch.nn.Parameter):  # type: ignore[no-untyped-def]
        loss = ArcFaceLoss(num_classes=3, embedding_size=4, margin=math.degrees(margin), scale=scale)
        loss.W = torch.nn.Parameter(w.detach().T.clone())  # PML stores W as [D, C]
        return loss(x, labels), loss.W

    # float64: all three agree to rounding (at a = 0, acos of a cosine 1 ulp below 1 gives PML θ ≈ 1.5e-8).
    for value, gx, gw in (_loss_and_grads(ours, x, weight), _loss_and_grads(pml, x, weight)):
        assert value == pytest.approx(ref[0], rel=1e-7)
        assert torch.allclose(gx, ref[1], rtol=0, atol=1e-8) and torch.allclose(gw, ref[2], rtol=0, atol=1e-8)
    # float32, as training runs: within float32's resolution of the angle of unit vectors (~1e-7 rad), so
    # gradients of size ~0.1 to 1e-4 absolute at a = 1e-4 and far better above.
    value, gx, gw = _loss_and_grads(ours, x.float(), weight.float())
    assert value == pytest.approx(ref[0], rel=2e-6)
    assert ref[1].abs().max() > 0.05  # the target angle carries a real gradient here
    assert torch.allclose(gx, ref[1], rtol=0, atol=1e-4) and torch.allclose(gw, ref[2], rtol=0, atol=1e-4)


@pytest.mark.parametrize(("params", "match"), [
    ({"scale": 0.0}, "scale"), ({"margin": -0.1}, "margin"), ({"margin": 2.0}, "radians"), ({"embedding_dim": 0}, "dim"),
])
def test_bad_parameters_are_rejected(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ArcFace(**params)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from lossbench.data import load_dataset

    return load_dataset(DatasetConfig(name="digits", train_subset=500), cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("name", ["arcface", "cosface", "center"])
def test_training_changes_the_losses_own_parameters_and_beats_chance(name: str, digits, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from lossbench.config.schema import Suite
    from lossbench.device import EngineOptions
    from lossbench.execution import train_cell
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
    result = train_cell(with_recipe(expand(suite, digits.identity)[0], epochs=3, batch_size=32), digits,
                        EngineOptions(torch.device("cpu"), "fp32"))
    assert result.status == "done", result.traceback
    assert result.metrics["test_acc"] > 5 / digits.num_classes
    (loss, initial), = built
    for pname, before in initial.items():
        assert not torch.equal(before, dict(loss.named_parameters())[pname].detach()), f"{pname} did not train"
    expected = 10 * 32 if name != "center" else 10 * 32 + 10 + 10 * 32  # class weights; or class layer + centres
    assert result.metrics["loss_params"] == expected
