"""Any classification model of `torchvision.models`, by name (`torchvision:<name>` in a suite), with random weights.

Nothing is downloaded: the model is built with `weights=None`, its classifier sized to the loss's output width by
torchvision itself (`num_classes`), and its first convolution rebuilt for the dataset's channel count where that
differs from 3 (same kernel, stride, padding, dilation, groups and bias; freshly initialized). Dropout before the
classifier wraps the model's last linear layer; a model whose last layer is not linear (squeezenet ends in a
convolution) cannot take it, and neither can any torchvision model take dropout after its conv blocks.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import torch
from torch import nn

from lossbench.errors import UnknownComponentError, did_you_mean
from lossbench.models.base import DropoutPlace, Model, ModelFacts
from lossbench.models.registry import TORCHVISION_PREFIX

PREFIX = TORCHVISION_PREFIX

# Constructor arguments for models whose defaults assume ImageNet weights: no auxiliary heads (their extra
# outputs would reach the loss), and no input re-normalization.
_EXTRA_ARGS: dict[str, dict[str, object]] = {
    "googlenet": {"aux_logits": False, "init_weights": True, "transform_input": False},
    "inception_v3": {"aux_logits": False, "init_weights": True, "transform_input": False},
}


@functools.cache
def classification_model_names() -> tuple[str, ...]:
    """The names of torchvision's classification models (those of `torchvision.models` itself)."""
    import torchvision.models

    return tuple(torchvision.models.list_models(module=torchvision.models))


def check_torchvision_name(name: str) -> None:
    """Raise UnknownComponentError with a did-you-mean when `name` is not a torchvision classification model."""
    names = classification_model_names()
    if name not in names:
        raise UnknownComponentError(
            message=f"unknown torchvision model '{name}'",
            value=f"{PREFIX}{name}",
            allowed=[f"{PREFIX}{n}" for n in names],
            suggestion=(f"{PREFIX}{s}" if (s := did_you_mean(name, names)) else None),
        )


def build_torchvision_model(name: str, in_channels: int, num_outputs: int, classifier_dropout: float = 0.0
                            ) -> nn.Module:
    """torchvision model `name`, randomly initialized, for `in_channels` input channels and `num_outputs` outputs."""
    import torchvision.models

    check_torchvision_name(name)
    model = torchvision.models.get_model(name, weights=None, num_classes=num_outputs, **_EXTRA_ARGS.get(name, {}))
    _adapt_first_conv(model, in_channels)
    if classifier_dropout > 0:
        parent, attr, last = _last_module(model)
        if not isinstance(last, nn.Linear):
            raise ValueError(
                f"torchvision model '{name}' ends in {type(last).__name__}, not a linear classifier: it cannot take "
                "dropout before the classifier"
            )
        setattr(parent, attr, nn.Sequential(nn.Dropout(classifier_dropout), last))
    return model


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    for parent in model.modules():
        for attr, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels != in_channels:
                    if child.groups != 1:
                        raise ValueError(f"the first convolution is grouped ({child.groups} groups); it cannot be "
                                         f"rebuilt for {in_channels} input channels")
                    setattr(parent, attr, nn.Conv2d(
                        in_channels, child.out_channels, child.kernel_size, stride=child.stride,
                        padding=child.padding, dilation=child.dilation, bias=child.bias is not None,
                        padding_mode=child.padding_mode,
                    ))
                return
    raise ValueError("the model has no Conv2d layer to adapt to the input channels")


def _last_module(model: nn.Module) -> tuple[nn.Module, str, nn.Module]:
    """(parent, attribute name, module) of the last leaf module registered in `model` (its classifier in every
    torchvision classification model, which registers the classifier last)."""
    leaves = [(name, m) for name, m in model.named_modules() if name and not list(m.children())]
    if not leaves:
        raise ValueError("the model has no layers")
    name, module = leaves[-1]
    parent_name, _, attr = name.rpartition(".")
    return model.get_submodule(parent_name), attr, module


class TorchvisionModel(Model):
    """A torchvision classification model, randomly initialized, adapted to the input channels and output width."""

    torchvision_name: ClassVar[str]

    def build(self, facts: ModelFacts) -> nn.Module:
        return build_torchvision_model(self.torchvision_name, facts.in_channels, facts.out_features,
                                       facts.dropout.classifier)


@functools.cache
def torchvision_model(name: str) -> type[Model]:
    """The Model class of `torchvision:<name>`; it can place dropout before the classifier where that is linear."""
    check_torchvision_name(name)
    with torch.device("meta"):  # shapes only: nothing is allocated or initialized for real
        _, _, last = _last_module(build_torchvision_model(name, 3, 10))
    places: frozenset[DropoutPlace] = frozenset({"classifier"}) if isinstance(last, nn.Linear) else frozenset()
    return type(f"torchvision_{name}", (TorchvisionModel,), {
        "__doc__": f"torchvision.models.{name}, random init, first conv and classifier adapted to the data.",
        "__module__": __name__,
        "torchvision_name": name,
        "dropout_places": places,
        "registry_name": f"{PREFIX}{name}",
    })
