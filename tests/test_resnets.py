"""The residual networks, torchvision models by name and custom network classes: their layouts against the papers
and torchvision, BatchNorm in train and eval mode, pairing of initial weights, dropout placement, and training."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from lossbench.components import check_dropout_placement
from lossbench.data import ImageData
from lossbench.errors import ConfigError, ModelFitError, UnknownComponentError
from lossbench.models import MODELS, DropoutPlacement, ModelFacts
from lossbench.models.resnet import BasicBlock, PreActBlock, WideResNet

from conftest import with_recipe


def parameter_count(name: str, params: dict, facts: ModelFacts = ModelFacts(3, (32, 32), 10)) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in MODELS.build(name, params).build(facts).parameters())


@pytest.mark.parametrize(("name", "params", "expected"), [
    # The counts of the reference implementations at 10 classes: kuangliu/pytorch-cifar's ResNet18/34 and
    # PreActResNet18 (+1,024 for the final BN of He et al. 2016b), and the WRN paper's 36.5M and 2.7M.
    ("resnet18", {}, 11_173_962),
    ("resnet34", {}, 21_282_122),
    ("preact_resnet18", {}, 11_171_146 + 2 * 512),
    ("wide_resnet", {}, 36_479_194),
    ("wide_resnet", {"depth": 16, "widen_factor": 4}, 2_748_890),
])
def test_parameter_counts_match_the_reference_implementations(name: str, params: dict, expected: int) -> None:
    assert parameter_count(name, params) == expected


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "preact_resnet18"])
def test_cifar_form_has_a_3x3_stride_1_stem_and_no_max_pooling(name: str) -> None:
    model = MODELS.build(name, {"width": 4}).build(ModelFacts(3, (32, 32), 10))
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.kernel_size == (3, 3) and first.stride == (1, 1) and first.padding == (1, 1)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in model.modules())
    assert model.stem(torch.zeros(1, 3, 32, 32)).shape[-2:] == (32, 32)


def test_basic_block_computes_what_torchvisions_basic_block_computes() -> None:
    torch.manual_seed(0)
    ours = BasicBlock(8, 16, stride=2).eval()
    downsample = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
    theirs = torchvision.models.resnet.BasicBlock(8, 16, stride=2, downsample=downsample).eval()
    for bn in (ours.bn1, ours.bn2, ours.shortcut[1]):  # non-trivial running statistics and affine parameters
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)
    theirs.load_state_dict({k.replace("shortcut", "downsample"): v for k, v in ours.state_dict().items()})
    x = torch.randn(4, 8, 9, 9)
    torch.testing.assert_close(ours(x), theirs(x))


def test_preact_block_is_bn_relu_conv_twice_plus_a_projection_of_the_preactivation() -> None:
    torch.manual_seed(0)
    block = PreActBlock(4, 6, stride=2).eval()
    x = torch.randn(2, 4, 8, 8)
    pre = torch.relu(block.bn1(x))
    inner = nn.functional.conv2d(pre, block.conv1.weight, stride=2, padding=1)
    inner = nn.functional.conv2d(torch.relu(block.bn2(inner)), block.conv2.weight, padding=1)
    torch.testing.assert_close(block(x), inner + nn.functional.conv2d(pre, block.shortcut.weight, stride=2))


def test_wide_resnet_block_dropout_comes_after_the_second_bn_relu_as_in_the_paper() -> None:
    """Training mode, dropout 0.5: the second convolution's input is BN-ReLU of the first convolution's output
    (batch statistics unaffected by dropout) with each element either dropped (0) or scaled by 1/(1 − p) = 2."""
    torch.manual_seed(0)
    block = PreActBlock(4, 6, stride=1, dropout=0.5).train()
    x = torch.randn(8, 4, 6, 6)
    seen: list[torch.Tensor] = []
    block.conv2.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    block(x)
    with torch.no_grad():
        activated = torch.relu(block.bn2(block.conv1(torch.relu(block.bn1(x)))))
    kept = seen[0] != 0
    assert 0.3 < kept[activated > 0].float().mean() < 0.7  # about half the positive activations survive
    torch.testing.assert_close(seen[0][kept], 2 * activated[kept])
    # The whole network wires its blocks with it.
    net = MODELS.build("wide_resnet", {"depth": 10, "widen_factor": 1, "block_dropout": 0.3}).build(
        ModelFacts(3, (8, 8), 10))
    assert all(b.dropout.p == 0.3 for b in net.modules() if isinstance(b, PreActBlock))


def test_wide_resnet_rejects_depths_that_are_not_6n_plus_4() -> None:
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(depth=20, widen_factor=2, in_channels=3, num_outputs=10)
    with pytest.raises(ConfigError, match="6n\\+4"):
        MODELS.build("wide_resnet", {"depth": 26})


@pytest.mark.parametrize("name", ["resnet18", "preact_resnet18"])
def test_batchnorm_trains_on_batch_statistics_and_evaluates_on_running_ones(name: str, digits: ImageData) -> None:
    torch.manual_seed(0)
    model = MODELS.build(name, {"width": 4}).build(ModelFacts(1, (8, 8), 10))
    x = digits.train_x[:32].float() / 255
    before = [b.running_mean.clone() for b in model.modules() if isinstance(b, nn.BatchNorm2d)]
    model.train()
    model(x)
    after = [b.running_mean for b in model.modules() if isinstance(b, nn.BatchNorm2d)]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))  # running statistics moved in train mode
    # In train mode an image's output depends on the rest of the batch; in eval mode it does not.
    assert not torch.allclose(model(x)[:4], model(x[:4]))
    model.eval()
    frozen = [b.running_mean.clone() for b in model.modules() if isinstance(b, nn.BatchNorm2d)]
    torch.testing.assert_close(model(x)[:4], model(x[:4]))
    assert all(torch.equal(a, b.running_mean) for a, b in zip(frozen, (m for m in model.modules()
                                                                       if isinstance(m, nn.BatchNorm2d))))


@pytest.mark.parametrize("name", ["resnet18", "wide_resnet", "torchvision:resnet18"])
def test_the_same_seed_gives_the_same_initial_weights(name: str) -> None:
    params = {"width": 4} if name == "resnet18" else {"depth": 10, "widen_factor": 1} if name == "wide_resnet" else {}
    states = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        states.append(MODELS.build(name, params).build(ModelFacts(1, (8, 8), 10)).state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_classifier_dropout_sits_right_before_the_final_layer_and_conv_dropout_is_refused() -> None:
    for name in ("resnet18", "preact_resnet18", "wide_resnet", "torchvision:resnet18", "torchvision:vgg11"):
        params = {"width": 4} if "resnet18" == name else {}
        with torch.device("meta"):
            model = MODELS.build(name, params).build(ModelFacts(3, (32, 32), 10, DropoutPlacement(classifier=0.3)))
        leaves = [m for m in model.modules() if not list(m.children())]
        assert isinstance(leaves[-1], nn.Linear) and isinstance(leaves[-2], nn.Dropout) and leaves[-2].p == 0.3, name
        with pytest.raises(ModelFitError, match="cannot place dropout at conv"):
            check_dropout_placement(name, DropoutPlacement(conv=0.3))
    with pytest.raises(ModelFitError, match="cannot place dropout at classifier"):
        check_dropout_placement("torchvision:squeezenet1_1", DropoutPlacement(classifier=0.3))


def test_torchvision_models_adapt_channels_and_classes_without_downloading() -> None:
    model = MODELS.build("torchvision:resnet18", {}).build(ModelFacts(1, (32, 32), 7))
    assert model.conv1.in_channels == 1 and model.fc.out_features == 7
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 7)
    # Weights are drawn at random, never loaded: two seeds give two different networks.
    torch.manual_seed(1)
    other = MODELS.build("torchvision:resnet18", {}).build(ModelFacts(1, (32, 32), 7))
    assert not torch.equal(model.conv1.weight, other.conv1.weight)


def test_an_unknown_torchvision_model_gets_a_did_you_mean() -> None:
    with pytest.raises(UnknownComponentError) as info:
        MODELS.get("torchvision:resnet19")
    assert info.value.suggestion == "torchvision:resnet18"
    assert "torchvision:vit_b_16" in info.value.allowed


CUSTOM_NETS = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """Flatten and one linear layer."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple = (8, 8), hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size[0] * image_size[1], hidden),
                                 nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)


class NoClasses(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()


class NotAModule:
    def __init__(self, in_channels: int, num_classes: int):
        raise AssertionError("must never be called")
'''


@pytest.fixture
def custom_nets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_nets.py").write_text(textwrap.dedent(CUSTOM_NETS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_nets"


def test_a_custom_module_class_is_checked_before_it_is_called(custom_nets: str) -> None:
    assert [p.name for p in MODELS.params(f"{custom_nets}:TinyNet")] == ["hidden"]
    model = MODELS.build(f"{custom_nets}:TinyNet", {"hidden": 5}).build(ModelFacts(1, (8, 8), 10))
    assert model.net[1].out_features == 5 and model.net[3].out_features == 10
    with pytest.raises(ConfigError, match="does not take num_classes"):
        MODELS.get(f"{custom_nets}:NoClasses")
    with pytest.raises(ConfigError):
        MODELS.get(f"{custom_nets}:NotAModule")
    with pytest.raises(ModelFitError, match="cannot place dropout"):
        check_dropout_placement(f"{custom_nets}:TinyNet", DropoutPlacement(classifier=0.5))


@pytest.mark.parametrize("model", ["torchvision:resnet18", "my_nets:TinyNet", "resnet18"])
def test_validate_and_one_epoch_on_a_tiny_subset(model: str, custom_nets: str, write_suite, tmp_path: Path,
                                                 digits: ImageData) -> None:
    from typer.testing import CliRunner

    from lossbench.cli import app
    from lossbench.suite import load_suite
    from lossbench.device import EngineOptions
    from lossbench.grid import expand
    from lossbench.execution import train_cell

    extra = ", width: 8" if model == "resnet18" else ""
    path = write_suite(f"name: t\ndataset: {{name: digits, train_subset: 64, test_subset: 50}}\n"
                       f"model: {{name: '{model}'{extra}}}\ntrain: {{epochs: 1, batch_size: 32, device: cpu}}\n"
                       "grid: {loss: [cross_entropy, {name: center, embedding_dim: 16}]}\n")
    checked = CliRunner().invoke(app, ["validate", str(path)])
    assert checked.exit_code == 0, checked.output
    subset = ImageData(**{**digits.__dict__, "train_x": digits.train_x[:64], "train_y": digits.train_y[:64],
                          "test_x": digits.test_x[:50], "test_y": digits.test_y[:50]})
    for cell in expand(load_suite(path), digits.identity):
        result = train_cell(with_recipe(cell, epochs=1, batch_size=32), subset,
                            EngineOptions(torch.device("cpu"), "fp32"))
        assert result.status == "done", result.traceback
        assert result.metrics["model_params"] > 0


def test_list_models_shows_the_new_models_with_their_parameter_counts() -> None:
    import json

    from typer.testing import CliRunner

    from lossbench.cli import app

    listed = CliRunner().invoke(app, ["list", "models", "--json"])
    assert listed.exit_code == 0, listed.output
    counts = {m["name"]: m["parameter_count"] for m in json.loads(listed.output)["models"]}
    assert counts["resnet18"] == 11_173_962 and counts["resnet34"] == 21_282_122
    assert counts["preact_resnet18"] == 11_172_170 and counts["wide_resnet"] == 36_479_194
    table = CliRunner().invoke(app, ["list", "models"], env={"COLUMNS": "200"})
    assert "11,173,962" in table.output and "torchvision:<name>" in table.output
