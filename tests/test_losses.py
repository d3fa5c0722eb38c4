"""The loss catalogue: each loss against an independent computation (torch built-ins, torchvision, or plain
Python loops over the definition), soft/hard agreement, finite gradients at extreme outputs, training above
chance through the engine, and custom losses named by import path, down to the CLI."""

from __future__ import annotations

import itertools
import json
import math
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from typer.testing import CliRunner

from lossbench.cli import app
from lossbench.config.dataset import DatasetConfig
from lossbench.config.schema import Suite
from lossbench.device import EngineOptions
from lossbench.execution import train_cell
from lossbench.errors import ConfigError
from lossbench.grid import expand
from lossbench.losses import LOSSES, Loss

from conftest import with_recipe

C = 5


def _batch(seed: int, b: int = 6, c: int = C, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits [b, c], labels [b], soft targets [b, c]) from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g, dtype=torch.float64) * scale
    labels = torch.randint(0, c, (b,), generator=g)
    soft = torch.rand(b, c, generator=g, dtype=torch.float64).softmax(1)
    return logits, labels, soft


def _loss(name: str, **params: object) -> Loss:
    """The loss `name`, set up for C classes (creating its own parameters, for the losses that have some)."""
    loss = LOSSES.build(name, dict(params))
    loss.setup(C)
    return loss


def _call(loss: Loss, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Run a loss in float64 (base forward casts to float32; the math under test is the same)."""
    return loss.hard(outputs, targets) if not targets.is_floating_point() else loss.soft(outputs, targets)


def _softmax_rows(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


# ---------------------------------------------------------------------------------------------------------------
# The registry and its docs.


EXPECTED = {
    "cross_entropy", "label_smoothing", "focal", "poly1", "bce", "mse", "rmse", "mae", "exponential", "hinge",
    "squared_hinge", "gce", "sce", "contrastive", "triplet", "supcon",
}


def test_catalogue_is_complete_and_documented() -> None:
    assert EXPECTED <= set(LOSSES.names())
    for info in LOSSES.describe():
        assert info.doc, f"{info.name} has no one-line doc"
        assert all(not p.required for p in info.params), f"{info.name}: every parameter needs a default"
    exp_doc = next(i.doc for i in LOSSES.describe() if i.name == "exponential")
    assert "exp(−y_c·f_c)" in exp_doc


@pytest.mark.parametrize("name", LOSSES.names())
def test_heads_and_declarations(name: str) -> None:
    loss = _loss(name)
    assert loss.head in ("logits", "embedding")
    if loss.head == "embedding" or list(loss.parameters()):
        # Embedding losses, and logit losses holding their own class layer, take 128 features from the model.
        assert loss.output_dim(10) == 128 and not loss.soft_targets
    else:
        assert loss.output_dim(10) == 10


# ---------------------------------------------------------------------------------------------------------------
# Each loss against an independent computation.


@pytest.mark.parametrize("seed", [0, 1])
def test_cross_entropy_matches_torch(seed: int) -> None:
    z, y, q = _batch(seed)
    torch.testing.assert_close(_call(_loss("cross_entropy"), z, y), F.cross_entropy(z, y))
    torch.testing.assert_close(_call(_loss("cross_entropy"), z, q), F.cross_entropy(z, q))
    w = [0.5, 1.0, 2.0, 1.5, 0.1]
    weighted = _loss("cross_entropy", class_weights=w).double()
    torch.testing.assert_close(_call(weighted, z, y), F.cross_entropy(z, y, weight=torch.tensor(w, dtype=z.dtype)))
    # Soft form on one-hot rows equals the weighted hard form.
    torch.testing.assert_close(_call(weighted, z, F.one_hot(y, C).double()), _call(weighted, z, y))


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.4])
def test_label_smoothing_matches_torch(epsilon: float) -> None:
    z, y, q = _batch(2)
    loss = _loss("label_smoothing", epsilon=epsilon)
    torch.testing.assert_close(_call(loss, z, y), F.cross_entropy(z, y, label_smoothing=epsilon))
    torch.testing.assert_close(_call(loss, z, q), F.cross_entropy(z, q, label_smoothing=epsilon))


def test_focal_softmax_by_hand() -> None:
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    expected = 0.0
    for row, label in zip(z.tolist(), y.tolist()):
        p = _softmax_rows(row)[label]
        expected += -0.5 * (1 - p) ** 2 * math.log(p)
    got = _call(_loss("focal", gamma=2.0, alpha=0.5), z, y)
    assert got.item() == pytest.approx(expected / 2, rel=1e-12)
    # gamma = 0 is cross-entropy.
    z5, y5, _ = _batch(3)
    torch.testing.assert_close(_call(_loss("focal", gamma=0.0), z5, y5), F.cross_entropy(z5, y5))


@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.25), (0.5, None), (0.0, 0.75)])
def test_focal_sigmoid_matches_torchvision(gamma: float, alpha: float | None) -> None:
    z, y, q = _batch(4)
    loss = _loss("focal", gamma=gamma, alpha=alpha, form="sigmoid")
    onehot = F.one_hot(y, C).double()
    tv_alpha = -1.0 if alpha is None else alpha
    expected = torchvision.ops.sigmoid_focal_loss(z, onehot, alpha=tv_alpha, gamma=gamma, reduction="sum") / 6
    torch.testing.assert_close(_call(loss, z, y), expected)
    # torchvision's formula is written for any targets in [0, 1]: the soft form agrees there too.
    expected_soft = torchvision.ops.sigmoid_focal_loss(z, q, alpha=tv_alpha, gamma=gamma, reduction="sum") / 6
    torch.testing.assert_close(_call(loss, z, q), expected_soft)


def test_poly1_by_hand() -> None:
    z = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([1, 0])
    expected = 0.0
    for row, label in zip(z.tolist(), y.tolist()):
        p = _softmax_rows(row)[label]
        expected += -math.log(p) + 2.0 * (1 - p)
    assert _call(_loss("poly1", epsilon=2.0), z, y).item() == pytest.approx(expected / 2, rel=1e-12)


def test_bce_matches_torch() -> None:
    z, y, q = _batch(5)
    onehot = F.one_hot(y, C).double()
    expected = F.binary_cross_entropy_with_logits(z, onehot, reduction="sum") / z.shape[0]
    torch.testing.assert_close(_call(_loss("bce"), z, y), expected)
    torch.testing.assert_close(
        _call(_loss("bce"), z, q), F.binary_cross_entropy_with_logits(z, q, reduction="sum") / z.shape[0]
    )


def test_mse_matches_torch() -> None:
    z, y, q = _batch(6)
    onehot = F.one_hot(y, C).double()
    torch.testing.assert_close(_call(_loss("mse"), z, y), F.mse_loss(z.softmax(1), onehot))
    torch.testing.assert_close(_call(_loss("mse", over="outputs"), z, y), F.mse_loss(z, onehot))
    torch.testing.assert_close(_call(_loss("mse", over="outputs"), z, q), F.mse_loss(z, q))


def test_square_loss_rescaling_by_hand() -> None:
    # Hui & Belkin: (1/C)·[k·(f_y − M)² + Σ_{c≠y} f_c²].
    z = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, 1.0]], dtype=torch.float64)
    y = [2, 0]
    k, m = 3.0, 5.0
    per_sample = []
    for row, label in zip(z.tolist(), y):
        total = sum(k * (f - m) ** 2 if c == label else f**2 for c, f in enumerate(row))
        per_sample.append(total / 3)
    loss = _loss("mse", over="outputs", k=k, M=m)
    assert _call(loss, z, torch.tensor(y)).item() == pytest.approx(sum(per_sample) / 2, rel=1e-12)
    root = _loss("rmse", over="outputs", k=k, M=m)
    expected_root = sum(math.sqrt(v) for v in per_sample) / 2
    assert _call(root, z, torch.tensor(y)).item() == pytest.approx(expected_root, rel=1e-12)
    with pytest.raises(ConfigError, match="over: outputs"):
        _loss("mse", k=2.0)


def test_rmse_and_mae_match_torch() -> None:
    z, y, _ = _batch(7)
    onehot = F.one_hot(y, C).double()
    p = z.softmax(1)
    per_sample = F.mse_loss(p, onehot, reduction="none").mean(1).sqrt()
    torch.testing.assert_close(_call(_loss("rmse"), z, y), per_sample.mean())
    torch.testing.assert_close(_call(_loss("mae"), z, y), F.l1_loss(p, onehot, reduction="sum") / z.shape[0])
    # On one-hot targets the L1 distance is 2·(1 − p_y).
    torch.testing.assert_close(_call(_loss("mae"), z, y), (2 * (1 - p.gather(1, y[:, None]))).mean())


def test_exponential_by_hand() -> None:
    z = torch.tensor([[1.0, -0.5, 2.0], [0.0, 0.3, -1.0]], dtype=torch.float64)
    y = [0, 2]
    expected = 0.0
    for row, label in zip(z.tolist(), y):
        expected += sum(math.exp(-(1 if c == label else -1) * f) for c, f in enumerate(row)) / 3
    assert _call(_loss("exponential"), z, torch.tensor(y)).item() == pytest.approx(expected / 2, rel=1e-12)
    # Overflow guard: exp(t) continues linearly above t = 30, so huge outputs give a finite, large loss.
    huge = torch.tensor([[1e4, 0.0, 0.0]], dtype=torch.float64)
    value = _call(_loss("exponential"), huge, torch.tensor([1])).item()
    assert math.isfinite(value) and value == pytest.approx((math.exp(30) * (1 + 1e4 - 30) + 2.0) / 3, rel=1e-9)


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_weston_watkins_hinge_matches_torch(margin: float) -> None:
    z, y, _ = _batch(8)
    hinge = _loss("hinge", margin=margin)
    torch.testing.assert_close(_call(hinge, z, y), F.multi_margin_loss(z, y, p=1, margin=margin))
    squared = _loss("squared_hinge", margin=margin)
    torch.testing.assert_close(_call(squared, z, y), F.multi_margin_loss(z, y, p=2, margin=margin))


def test_crammer_singer_hinge_by_hand() -> None:
    z, y, q = _batch(9)
    for power, name in ((1, "hinge"), (2, "squared_hinge")):
        expected = 0.0
        for row, label in zip(z.tolist(), y.tolist()):
            best_other = max(f for c, f in enumerate(row) if c != label)
            expected += max(0.0, 1.0 + best_other - row[label]) ** power
        loss = _loss(name, variant="crammer_singer")
        assert _call(loss, z, y).item() == pytest.approx(expected / len(y), rel=1e-12)
        # Soft targets: the expected loss over labels drawn from q.
        expected_soft = 0.0
        for row, qrow in zip(z.tolist(), q.tolist()):
            for label, weight in enumerate(qrow):
                best_other = max(f for c, f in enumerate(row) if c != label)
                expected_soft += weight * max(0.0, 1.0 + best_other - row[label]) ** power
        assert _call(loss, z, q).item() == pytest.approx(expected_soft / len(y), rel=1e-12)


def test_gce_by_hand() -> None:
    z = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, -1.0]], dtype=torch.float64)
    y = [0, 1]
    q = 0.7
    expected = sum((1 - _softmax_rows(row)[label] ** q) / q for row, label in zip(z.tolist(), y)) / 2
    assert _call(_loss("gce", q=q), z, torch.tensor(y)).item() == pytest.approx(expected, rel=1e-12)
    # q = 1 is half the L1 distance: (1 − p_y) = MAE / 2.
    z5, y5, _ = _batch(10)
    torch.testing.assert_close(_call(_loss("gce", q=1.0), z5, y5), _call(_loss("mae"), z5, y5) / 2)


def test_sce_by_hand() -> None:
    z = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, -1.0]], dtype=torch.float64)
    y = [2, 0]
    alpha, beta, a = 0.1, 1.0, -4.0
    expected = 0.0
    for row, label in zip(z.tolist(), y):
        p = _softmax_rows(row)
        ce = -math.log(p[label])
        rce = -sum(pc * (0.0 if c == label else a) for c, pc in enumerate(p))
        expected += alpha * ce + beta * rce
    assert _call(_loss("sce"), z, torch.tensor(y)).item() == pytest.approx(expected / 2, rel=1e-12)


# Embedding losses against loops over the definitions, on unit-normalized embeddings.


def _unit_rows(z: torch.Tensor) -> list[list[float]]:
    rows = z.tolist()
    return [[v / math.sqrt(sum(x * x for x in r)) for v in r] for r in rows]


def _dist(a: list[float], b: list[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def _embedding_case(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, generator=g, dtype=torch.float64) * 3, torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_contrastive_by_loops(seed: int, normalize: bool) -> None:
    z, y = _embedding_case(seed)
    u, labels = (_unit_rows(z) if normalize else z.tolist()), y.tolist()
    margin = 1.2 if normalize else 4.0
    pulls, pushes = [], []
    for i, j in itertools.permutations(range(len(u)), 2):
        d = _dist(u[i], u[j])
        (pulls if labels[i] == labels[j] else pushes).append(
            0.5 * d * d if labels[i] == labels[j] else 0.5 * max(0.0, margin - d) ** 2
        )
    expected = sum(pulls) / len(pulls) + sum(pushes) / len(pushes)
    got = _loss("contrastive", margin=margin, normalize=normalize).hard(z, y)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def _triplet_reference(u: list[list[float]], labels: list[int], margin: float, mining: str) -> float:
    n = len(u)
    d = [[_dist(u[i], u[j]) for j in range(n)] for i in range(n)]
    pos = {a: [p for p in range(n) if p != a and labels[p] == labels[a]] for a in range(n)}
    neg = {a: [m for m in range(n) if labels[m] != labels[a]] for a in range(n)}
    if mining == "all":
        values = [max(0.0, d[a][p] - d[a][m] + margin) for a in range(n) for p in pos[a] for m in neg[a]]
        active = [v for v in values if v > 0]
        return sum(active) / len(active)
    if mining == "batch_hard":
        values = [max(0.0, max(d[a][p] for p in pos[a]) - min(d[a][m] for m in neg[a]) + margin)
                  for a in range(n) if pos[a] and neg[a]]
        return sum(values) / len(values)
    values = []
    for a in range(n):
        for p in pos[a]:
            semi = [d[a][m] for m in neg[a] if d[a][p] < d[a][m] < d[a][p] + margin]
            chosen = min(semi) if semi else max(d[a][m] for m in neg[a])
            values.append(max(0.0, d[a][p] - chosen + margin))
    return sum(values) / len(values)


@pytest.mark.parametrize("mining", ["all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_by_loops(mining: str, seed: int) -> None:
    z, y = _embedding_case(seed)
    for normalize, margin in ((True, 0.2), (True, 1.0), (False, 0.5), (False, 3.0)):
        rows = _unit_rows(z) if normalize else z.tolist()
        expected = _triplet_reference(rows, y.tolist(), margin, mining)
        got = _loss("triplet", margin=margin, mining=mining, normalize=normalize).hard(z, y)
        assert got.item() == pytest.approx(expected, rel=1e-9), (mining, margin, normalize)


def test_embedding_margins_are_checked() -> None:
    with pytest.raises(ConfigError, match="unit vectors"):
        _loss("triplet", margin=3.0)
    assert _loss("triplet", margin=3.0, normalize=False).margin == 3.0
    with pytest.raises(ConfigError, match="margin must be > 0"):
        _loss("contrastive", margin=-1.0, normalize=False)


@pytest.mark.parametrize("seed", [0, 1])
def test_supcon_by_loops(seed: int) -> None:
    z, y = _embedding_case(seed)
    u, labels, tau = _unit_rows(z), y.tolist(), 0.5
    n = len(u)
    per_anchor = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        sims = {a: sum(x * w for x, w in zip(u[i], u[a])) / tau for a in range(n) if a != i}
        log_norm = math.log(sum(math.exp(s) for s in sims.values()))
        per_anchor.append(-sum(sims[p] - log_norm for p in positives) / len(positives))
    got = _loss("supcon", temperature=tau).hard(z, y)
    assert got.item() == pytest.approx(sum(per_anchor) / len(per_anchor), rel=1e-9)


@pytest.mark.parametrize("name", ["contrastive", "triplet", "supcon"])
def test_embedding_losses_without_positives_are_zero_and_differentiable(name: str) -> None:
    z = torch.randn(4, 8, requires_grad=True)
    value = _loss(name)(z, torch.tensor([0, 1, 2, 3]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()
    if name != "contrastive":  # contrastive still pushes the negatives apart
        assert value.item() == 0.0


@pytest.mark.parametrize("name", ["contrastive", "triplet", "supcon"])
def test_embedding_losses_reject_soft_targets(name: str) -> None:
    with pytest.raises(ValueError, match="hard labels only"):
        _loss(name)(torch.randn(4, 128), torch.full((4, 10), 0.1))


# ---------------------------------------------------------------------------------------------------------------
# Properties over the whole registry.


@pytest.mark.parametrize("name", LOSSES.names())
def test_soft_and_hard_agree_on_one_hot(name: str) -> None:
    loss = _loss(name)
    if not loss.soft_targets:
        pytest.skip(f"{name} takes hard labels only")
    for seed in range(3):
        z, y, _ = _batch(seed)
        torch.testing.assert_close(loss(z.float(), y), loss(z.float(), F.one_hot(y, C).float()))


# Non-default forms whose arithmetic differs from the defaults, checked at extreme outputs as well.
VARIANTS = [
    ("focal", {"gamma": 0.5}),
    ("focal", {"form": "sigmoid", "gamma": 0.5, "alpha": 0.25}),
    ("mse", {"over": "outputs", "k": 2.0, "M": 5.0}),
    ("rmse", {"over": "outputs"}),
    ("hinge", {"variant": "crammer_singer"}),
    ("squared_hinge", {"variant": "crammer_singer"}),
    ("contrastive", {"normalize": False, "margin": 3.0}),
    ("triplet", {"mining": "all", "normalize": False}),
    ("triplet", {"mining": "semi_hard"}),
    ("triplet", {"mining": "all"}),
]


def _extreme_case(name: str, params: dict) -> tuple[Loss, torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[type-arg]
    loss = _loss(name, **params)
    g = torch.Generator().manual_seed(0)
    width = loss.output_dim(C)
    signs = torch.randint(0, 2, (8, width), generator=g).float() * 2 - 1
    labels = torch.tensor([0, 0, 1, 1, 2, 3, 4, 4])
    soft = F.one_hot(labels, C).float() * 0.7 + 0.3 / C
    return loss, signs * 1e4, labels, soft


@pytest.mark.parametrize("name, params", [(n, {}) for n in LOSSES.names()] + VARIANTS)
def test_gradients_finite_at_extreme_outputs(name: str, params: dict) -> None:  # type: ignore[type-arg]
    loss, outputs, labels, soft = _extreme_case(name, params)
    targets = [labels] + ([soft] if loss.soft_targets else [])
    # Also outputs that make the true class (or the first coordinate) overwhelmingly large or small.
    peaked = torch.zeros_like(outputs)
    peaked[torch.arange(8), labels % outputs.shape[1]] = 1e4
    for base in (outputs, -outputs, peaked, -peaked):
        for target in targets:
            x = base.clone().requires_grad_(True)
            value = loss(x, target)
            value.backward()
            assert torch.isfinite(value), f"{name}: loss {value} at ±1e4"
            assert torch.isfinite(x.grad).all(), f"{name}: non-finite gradient at ±1e4"


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from lossbench.data import load_dataset

    return load_dataset(DatasetConfig(name="digits", train_subset=500), cache_dir=tmp_path_factory.mktemp("cache"))


def _cell(loss: str | dict, data) -> object:  # type: ignore[no-untyped-def]
    suite = Suite.model_validate({
        "name": "loss-test",
        "dataset": {"name": "digits"},
        "model": {"name": "small_cnn"},
        "train": {"epochs": 3, "batch_size": 32, "optimizer": {"name": "adam", "lr": 3e-3}},
        "grid": {"loss": [loss]},
    })
    return expand(suite, data.identity)[0]


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_trains_above_chance(name: str, digits) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    result = train_cell(with_recipe(_cell(name, digits), epochs=3, batch_size=32), digits,
                        EngineOptions(torch.device("cpu"), "fp32"))
    assert result.status == "done", result.traceback
    chance = 1 / digits.num_classes
    assert result.metrics["test_acc"] > 5 * chance, (name, result.metrics["test_acc"])
    assert math.isfinite(result.metrics["test_nll"]) and 0 <= result.metrics["ece"] <= 1
    if _loss(name).head == "embedding":
        assert 0 < result.metrics["map_at_r"] <= 1 and 0 < result.metrics["precision_at_1"] <= 1
        assert all(h.train_acc is None for h in result.history)
        assert any("k-NN" in note for note in result.notes)
    else:
        assert all(h.train_acc is not None for h in result.history)


def test_non_probabilistic_losses_say_so(digits) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    result = train_cell(with_recipe(_cell({"name": "mse", "over": "outputs"}, digits), epochs=1, batch_size=64),
                        digits, EngineOptions(torch.device("cpu"), "fp32"))
    assert any("softmax(outputs)" in note for note in result.notes)


# ---------------------------------------------------------------------------------------------------------------
# Custom losses named as package.module:Class, through the CLI.

CUSTOM_MODULE = "lossbench_test_custom_losses"
CUSTOM_SOURCE = '''
import torch
import torch.nn.functional as F
from torch import nn


class ScaledCE(nn.Module):
    """Cross-entropy times a constant."""

    head = "logits"

    def __init__(self, scale: float = 1.0):
        super().__init__()
        if scale <= 0:
            raise ValueError("scale must be > 0")
        self.scale = scale

    def forward(self, outputs, targets):
        return self.scale * F.cross_entropy(outputs, targets)


class CenterPull(nn.Module):
    """Pulls unit embeddings of a class towards their batch mean and pushes class means apart."""

    head = "embedding"
    embedding_dim = 16
    knn_k = 3

    def embed(self, outputs):
        return F.normalize(outputs, dim=1)

    def forward(self, outputs, targets):
        z = F.normalize(outputs, dim=1)
        onehot = F.one_hot(targets, 10).float()
        means = (onehot.T @ z) / onehot.sum(0).clamp(min=1)[:, None]
        pull = (z - means[targets]).square().sum(1).mean()
        return pull + (means @ means.T).mean()


class NoHead(nn.Module):
    def forward(self, outputs, targets):
        return outputs.sum()


class OneArgument(nn.Module):
    head = "logits"

    def forward(self, outputs):
        return outputs.sum()


class EmbeddingWithoutWidth(nn.Module):
    head = "embedding"

    def forward(self, outputs, targets):
        return outputs.sum()


def not_a_class(outputs, targets):
    return outputs.sum()
'''


@pytest.fixture
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / f"{CUSTOM_MODULE}.py").write_text(CUSTOM_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, CUSTOM_MODULE, raising=False)
    return tmp_path


def _suite(tmp_path: Path, losses: list, augmentation: list | None = None) -> Path:  # type: ignore[type-arg]
    lines = textwrap.dedent("""\
        name: custom-loss
        dataset: {name: digits, train_subset: 300}
        model: {name: small_cnn}
        train: {epochs: 1, batch_size: 64, optimizer: {name: adam, lr: 0.003}, device: cpu}
        grid:
          loss:
        """)
    lines += "".join(f"    - {json.dumps(loss)}\n" for loss in losses)
    if augmentation:
        lines += "  augmentation:\n" + "".join(f"    - {json.dumps(a)}\n" for a in augmentation)
    path = tmp_path / "suite.yaml"
    path.write_text(lines)
    return path


def test_custom_losses_validate_and_run_from_the_cli(custom_module: Path) -> None:
    losses = [{"name": f"{CUSTOM_MODULE}:ScaledCE", "scale": 2.0}, f"{CUSTOM_MODULE}:CenterPull"]
    suite = _suite(custom_module, losses)
    runner = CliRunner()
    checked = runner.invoke(app, ["validate", str(suite)])
    assert checked.exit_code == 0, checked.output
    out = custom_module / "results"
    ran = runner.invoke(app, ["run", str(suite), "--out", str(out), "--cache-dir", str(custom_module / "cache"),
                              "--plain", "--no-report"])
    assert ran.exit_code == 0, ran.output
    records = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    assert sorted(r["status"] for r in records) == ["done", "done"]
    embedding = next(r for r in records if r["config"]["loss"]["name"].endswith(":CenterPull"))
    assert {"precision_at_1", "map_at_r"} <= set(embedding["metrics"])
    assert embedding["metrics"]["knn_k"] == 3
    scaled = next(r for r in records if r["config"]["loss"]["name"].endswith(":ScaledCE"))
    assert scaled["config"]["loss"]["params"] == {"scale": 2.0}


@pytest.mark.parametrize(
    "loss, message",
    [
        ("no_such_package_xyz.module:Loss", "cannot import module"),
        (f"{CUSTOM_MODULE}:Missing", "has no attribute"),
        (f"{CUSTOM_MODULE}:not_a_class", "is not a class"),
        (f"{CUSTOM_MODULE}:NoHead", "head = 'logits' or 'embedding'"),
        (f"{CUSTOM_MODULE}:OneArgument", "(outputs, targets)"),
        (f"{CUSTOM_MODULE}:EmbeddingWithoutWidth", "embedding_dim"),
        ({"name": f"{CUSTOM_MODULE}:ScaledCE", "scael": 2.0}, "has no parameter 'scael'"),
        ({"name": f"{CUSTOM_MODULE}:ScaledCE", "scale": -1.0}, "scale must be > 0"),
    ],
)
def test_bad_custom_losses_are_validation_errors(custom_module: Path, loss: object, message: str) -> None:
    result = CliRunner().invoke(app, ["validate", str(_suite(custom_module, [loss]))])
    assert result.exit_code == 2, result.output
    assert message in result.output.replace("\n", " ")


@pytest.mark.parametrize("loss", [f"{CUSTOM_MODULE}:ScaledCE", "triplet"])
def test_hard_label_losses_with_mixup_are_rejected(custom_module: Path, loss: str) -> None:
    result = CliRunner().invoke(app, ["validate", str(_suite(custom_module, [loss], augmentation=["none", "mixup"]))])
    assert result.exit_code == 2, result.output
    assert "hard labels only" in result.output
