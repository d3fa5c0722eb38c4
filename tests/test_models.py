"""Every registered model, timm-style: built from its runtime facts, a forward and a backward pass on real images
with a gradient on every parameter, dropout where it says it can place it, and validation of what it cannot do."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from lossbench.components import check_dropout_placement, check_model_shape
from lossbench.data import ImageData
from lossbench.errors import ModelFitError
from lossbench.models import MODELS, DropoutPlacement, IncompatibleInput, Model, ModelFacts
from lossbench.models.cnn import ArticleCNN

from conftest import with_recipe

ALL_MODELS = MODELS.names()


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("out_features", [10, 32])  # classes of a logits loss, or an embedding width
def test_forward_and_backward_give_every_parameter_a_gradient(name: str, out_features: int,
                                                              digits: ImageData) -> None:
    torch.manual_seed(0)
    model = MODELS.build(name, {}).build(ModelFacts(in_channels=1, image_size=(8, 8), out_features=out_features))
    x = digits.train_x[:16].float() / 255
    out = model(x)
    assert out.shape == (16, out_features) and torch.isfinite(out).all()
    nn.functional.cross_entropy(out, digits.train_y[:16] % out_features).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_rgb_32px_images_fit_and_the_shape_check_agrees(name: str, device: str) -> None:
    facts = ModelFacts(in_channels=3, image_size=(32, 32), out_features=100)
    state = torch.get_rng_state()
    check_model_shape(name, {}, facts, device=device)
    assert torch.equal(torch.get_rng_state(), state)  # the check draws no random numbers a cell would see
    out = MODELS.build(name, {}).build(facts)(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 100)



@pytest.mark.parametrize("name", ALL_MODELS)
def test_the_cpu_and_meta_shape_checks_agree_on_tiny_images(name: str) -> None:
    outcomes = []
    for device in ("cpu", "meta"):
        try:
            check_model_shape(name, {}, ModelFacts(1, (2, 2), 10), device=device)  # pooling may go below 1 pixel
            outcomes.append("fits")
        except ModelFitError as exc:
            assert "does not fit images of 1×2×2" in exc.message or exc.parameter is not None
            outcomes.append("does not fit")
    assert outcomes[0] == outcomes[1]


def test_validate_does_not_import_torch_dynamo() -> None:
    """`validate` (the shape check's CPU forward pass of the built-in models, the checkpoint sizes) needs neither
    torch._dynamo nor the meta decompositions, nor the report's pandas and scipy: seconds at start-up each. A
    subprocess, since this test process may have imported them already."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; from typer.testing import CliRunner; from lossbench.cli import app; "
            "r = CliRunner().invoke(app, ['validate', 'suites/smoke.yaml']); assert r.exit_code == 0, r.output; "
            "print('torch._dynamo' in sys.modules, 'pandas' in sys.modules, 'scipy' in sys.modules, "
            "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    # torch was used for the check; neither torch._dynamo nor the report's pandas and scipy were imported
    assert out.stdout.split() == ["False", "False", "False", "True"]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_dropout_goes_where_the_model_says_it_can(name: str) -> None:
    cls = MODELS.get(name)
    for place in ("classifier", "conv"):
        placement = DropoutPlacement(**{place: 0.3})
        if place in cls.dropout_places:
            check_dropout_placement(name, placement)
            plain = MODELS.build(name, {}).build(ModelFacts(1, (8, 8), 10))
            with_dropout = MODELS.build(name, {}).build(ModelFacts(1, (8, 8), 10, placement))
            count = sum(isinstance(m, nn.Dropout) for m in with_dropout.modules())
            assert count > sum(isinstance(m, nn.Dropout) for m in plain.modules())
            assert all(m.p == 0.3 for m in with_dropout.modules() if isinstance(m, nn.Dropout))
        else:
            with pytest.raises(ModelFitError, match="cannot place dropout"):
                check_dropout_placement(name, placement)


class _NoDropoutNet(Model):
    """A linear model on flattened pixels that places no dropout anywhere."""

    def build(self, facts: ModelFacts) -> nn.Module:
        h, w = facts.image_size
        return nn.Sequential(nn.Flatten(), nn.Linear(facts.in_channels * h * w, facts.out_features))


@pytest.fixture
def no_dropout_model() -> Iterator[str]:
    name = "test_no_dropout_net"
    MODELS.register(name)(_NoDropoutNet)
    yield name
    del MODELS._entries[name]


def test_a_registered_model_is_listed_validated_and_trained(no_dropout_model: str, write_suite, tmp_path,
                                                            digits: ImageData) -> None:
    """A new model is one class: `list`, validation and the runner pick it up by its registered name."""
    from typer.testing import CliRunner

    from lossbench.cli import app
    from lossbench.suite import load_suite
    from lossbench.device import EngineOptions
    from lossbench.grid import expand
    from lossbench.execution import train_cell

    listed = CliRunner().invoke(app, ["list", "models"], env={"COLUMNS": "200"})
    assert no_dropout_model in listed.output
    text = "name: t\ndataset: {name: digits}\nmodel: {name: %s}\ntrain: {epochs: 1, device: cpu}\n" \
           "grid: {loss: [cross_entropy], regularizer: [none, {name: dropout, p: 0.5}]}\n" % no_dropout_model
    bad = CliRunner().invoke(app, ["validate", str(write_suite(text))])
    assert bad.exit_code == 2
    assert "grid.regularizer[1]" in bad.output and "cannot place dropout at classifier" in bad.output
    good = write_suite(text.replace(", {name: dropout, p: 0.5}", ""))
    cell = expand(load_suite(good), "digits:sklearn")[0]
    result = train_cell(with_recipe(cell, epochs=1, batch_size=256), digits, EngineOptions(torch.device("cpu"), "fp32"))
    assert result.status == "done", result.traceback


def test_valid_padding_on_8px_digits_is_an_incompatible_input_naming_padding() -> None:
    with pytest.raises(IncompatibleInput) as err:
        MODELS.build("tutorial_cnn", {"padding": "valid"}).build(ModelFacts(1, (8, 8), 10))
    assert err.value.parameter == "padding"
    with pytest.raises(ModelFitError) as fit:
        check_model_shape("tutorial_cnn", {"padding": "valid"}, ModelFacts(1, (8, 8), 10))
    assert fit.value.parameter == "padding" and fit.value.value == "valid"


@pytest.mark.parametrize("name", [n for n in ALL_MODELS if issubclass(MODELS.get(n), ArticleCNN)])
def test_articles_cnns_pool_before_relu_match_the_article_order(name: str, digits: ImageData) -> None:
    """The built networks put ReLU after max-pooling (faster); outputs and gradients equal conv-ReLU-pool."""
    fast = MODELS.build(name, {}).build(ModelFacts(1, (8, 8), 10))
    layers = list(fast[0])
    reference_layers: list[nn.Module] = []
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
            reference_layers += [layers[i + 1], layer]  # article order: ReLU, then pool
        elif not (isinstance(layer, nn.ReLU) and i > 0 and isinstance(layers[i - 1], nn.MaxPool2d)):
            reference_layers.append(layer)
    reference = nn.Sequential(nn.Sequential(*reference_layers), fast[1])
    assert any(isinstance(m, nn.MaxPool2d) for m in layers)
    x = digits.train_x[:64].float() / 255
    fast_out, ref_out = fast(x), reference(x)
    assert torch.equal(fast_out, ref_out)
    fast_out.square().sum().backward()
    fast_grads = [p.grad.clone() for p in fast.parameters()]
    fast.zero_grad()
    ref_out2 = reference(x)
    ref_out2.square().sum().backward()
    assert all(torch.equal(g, p.grad) for g, p in zip(fast_grads, fast.parameters()))
