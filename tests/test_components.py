"""The components layer: one registry table read by `list`, validation and the grid; build_cell's seeding and
its optimizer over the model's and the loss's parameters; the shape check of `validate`."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from lossbench import components
from lossbench.cli import app
from lossbench.components import build_cell
from lossbench.registries import KINDS, registries
from lossbench.suite import load_suite
from lossbench.data import ImageData
from lossbench.device import EngineOptions
from lossbench.errors import SuiteErrors
from lossbench.grid import expand
from lossbench.losses import LOSSES
from lossbench.losses.classification import CrossEntropy

from conftest import TINY_SUITE, with_recipe


def options() -> EngineOptions:
    return EngineOptions(device=torch.device("cpu"), precision="fp32")


def test_list_shows_every_kind_of_the_table_and_nothing_else() -> None:
    listed = json.loads(CliRunner().invoke(app, ["list", "--json"]).output)
    assert tuple(listed) == KINDS == tuple(registries())
    for kind, registry in registries().items():
        assert [c["name"] for c in listed[kind]] == registry.names()


def test_validation_and_grid_read_the_same_table(write_suite, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loss registered only in the table's registry is accepted by validation and expanded by the grid."""

    class Doubled(CrossEntropy):
        """Twice the cross-entropy (a test loss)."""

        def hard(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return 2 * super().hard(outputs, labels)

    monkeypatch.setitem(LOSSES._entries, "test_doubled", Doubled)
    suite = load_suite(write_suite(TINY_SUITE.replace("[cross_entropy, mse]", "[test_doubled]")))
    assert {c.loss.name for c in expand(suite, "digits:sklearn")} == {"test_doubled"}


class _CentredCrossEntropy(CrossEntropy):
    """Cross-entropy on outputs minus a learned per-class offset: a loss with a parameter of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = torch.nn.Parameter(torch.zeros(10))

    def hard(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return super().hard(outputs - self.offset, labels)


def test_the_optimizer_trains_the_loss_parameters_too(write_suite, digits: ImageData,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from lossbench.engine import CellRun, train

    monkeypatch.setitem(LOSSES._entries, "test_centred", _CentredCrossEntropy)
    cell = with_recipe(expand(load_suite(write_suite(TINY_SUITE.replace("[cross_entropy, mse]", "[test_centred]"))),
                              "digits:sklearn")[0], epochs=1)
    parts = build_cell(cell, digits, options())
    optimized = {id(p) for group in parts.optimizer.param_groups for p in group["params"]}
    assert id(parts.loss.offset) in optimized
    assert all(id(p) in optimized for p in parts.model.parameters())
    train(CellRun(cell, parts), options())
    assert parts.loss.offset.abs().sum() > 0  # it moved


@pytest.mark.parametrize(("loss", "loss_decay"), [
    ("{name: arcface, embedding_dim: 16}", 0.0),
    ("{name: center, embedding_dim: 16}", 0.0),
    ("{name: cosface, embedding_dim: 16, weight_decay: 0.2}", 0.2),
    ("{name: center, embedding_dim: 16, weight_decay: 0.2}", 0.2),
])
def test_weight_decay_reaches_the_model_and_the_losses_own_parameters_only_when_set(
        write_suite, digits: ImageData, loss: str, loss_decay: float) -> None:
    """With zero gradients, one SGD step is the weight decay alone: p ← p − lr·wd·p. The optimizer's decay (0.5)
    shrinks every model weight by 1 − 0.1·0.5; the loss's class weights and centres shrink by 1 − 0.1·(its own
    weight_decay): not at all by default."""
    text = TINY_SUITE.replace("[cross_entropy, mse]", f"[{loss}]").replace(
        "{name: sgd, lr: 0.05, momentum: 0.9}", "{name: sgd, lr: 0.1, momentum: 0.0, weight_decay: 0.5}")
    cell = expand(load_suite(write_suite(text)), "digits:sklearn")[0]
    parts = build_cell(cell, digits, options())
    model, own = list(parts.model.parameters()), list(parts.loss.parameters())
    assert own and [len(g["params"]) for g in parts.optimizer.param_groups] == [len(model), len(own)]
    before = [p.detach().clone() for p in model + own]
    for p in model + own:
        p.grad = torch.zeros_like(p)
    parts.optimizer.step()
    for p, old in zip(model, before):
        torch.testing.assert_close(p.detach(), old * (1 - 0.1 * 0.5))
    for p, old in zip(own, before[len(model):]):
        torch.testing.assert_close(p.detach(), old * (1 - 0.1 * loss_decay))


def test_a_negative_loss_weight_decay_is_located(write_suite) -> None:
    text = TINY_SUITE.replace("[cross_entropy, mse]", "[{name: center, weight_decay: -0.1}]")
    with pytest.raises(SuiteErrors) as info:
        load_suite(write_suite(text))
    rendered = info.value.errors[0].render()
    assert "grid.loss[0]" in rendered and "weight_decay" in rendered and "-0.1" in rendered


def test_build_cell_seeds_init_order_augmentation_and_dropout_from_the_seed(write_suite,
                                                                             digits: ImageData) -> None:
    text = TINY_SUITE.replace("regularizer: [none]", "regularizer: [{name: dropout, p: 0.5}]").replace(
        "seeds: [0]", "seeds: [0, 1]")
    cells = expand(load_suite(write_suite(text)), "digits:sklearn")
    same_seed = [c for c in cells if c.seed == 0]
    assert len({c.loss.name for c in same_seed}) == 2  # the losses differ, the seed is the same
    a, b = (build_cell(c, digits, options()) for c in same_seed[:2])
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert torch.equal(torch.randperm(50, generator=a.order), torch.randperm(50, generator=b.order))
    assert (a.augment_rng.random(5) == b.augment_rng.random(5)).all()
    # The dropout stream: build_cell leaves the global RNG at seed + 1 for every cell of the seed.
    a = build_cell(same_seed[0], digits, options())
    mask_a = torch.nn.functional.dropout(torch.ones(100), 0.5)
    b = build_cell(same_seed[1], digits, options())
    assert torch.equal(mask_a, torch.nn.functional.dropout(torch.ones(100), 0.5))
    other = build_cell([c for c in cells if c.seed == 1][0], digits, options())
    assert not torch.equal(next(iter(other.model.parameters())), next(iter(a.model.parameters())))


def test_validate_catches_a_model_that_does_not_fit_the_images(write_suite) -> None:
    path = write_suite(TINY_SUITE.replace("name: small_cnn", "name: tutorial_cnn\n  padding: valid"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "at model.padding" in result.output and "too small for valid padding" in result.output
    assert "8×8" in result.output and ":7:" in result.output  # the line of `padding: valid`
    ok = CliRunner().invoke(app, ["validate", str(write_suite(TINY_SUITE.replace("small_cnn", "tutorial_cnn")))])
    assert ok.exit_code == 0, ok.output


def test_the_dataset_shape_comes_from_the_source_without_decoding(write_suite,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from lossbench.data.base import ImageShape

    datasets = registries()["datasets"]
    assert datasets.get("digits")().known_shape(None) == ImageShape(1, 8, 8, 10)
    assert datasets.get("cifar100")().known_shape(None) == ImageShape(3, 32, 32, 100)
    assert datasets.get("fashion_mnist")().known_shape(None) == ImageShape(1, 28, 28, 10)
    assert datasets.get("image_folder")().known_shape(None) is None

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("validation decoded the dataset")

    monkeypatch.setattr(datasets.get("cifar10"), "decode", no_decoding)
    text = TINY_SUITE.replace("name: digits", "name: cifar10").replace("  train_subset: 400\n", "")
    # 32×32 RGB images fit valid padding: the shape check ran on the source's shape, nothing was decoded.
    load_suite(write_suite(text.replace("small_cnn", "tutorial_cnn\n  padding: valid")))
