"""The registry of models. A model family is one module of this package that registers its classes here.

Besides the registered names, a suite may name `torchvision:<name>` (any classification model of
torchvision.models, see `torchvision_models`) and a custom class as `package.module:Class`: a subclass of `Model`,
or a plain `torch.nn.Module` whose constructor takes `in_channels` and `num_classes` (see `custom`).
"""

from __future__ import annotations

from torch import nn

from lossbench.models.base import Model
from lossbench.registry import Contract, Registry

#: The prefix of torchvision's models in a suite: `model: {name: "torchvision:resnet50"}`.
TORCHVISION_PREFIX = "torchvision:"


class ModelRegistry(Registry[Model]):
    """The model registry: registered names, `torchvision:<name>`, and custom Model or nn.Module classes."""

    def get(self, name: str) -> type[Model]:
        if name.startswith(TORCHVISION_PREFIX):
            from lossbench.models.torchvision_models import torchvision_model

            return torchvision_model(name[len(TORCHVISION_PREFIX):])
        cls = super().get(name)
        if name not in self._entries and not issubclass(cls, Model):
            from lossbench.models.custom import adapt_module

            return adapt_module(name, cls)  # an nn.Module subclass, checked in check_custom
        return cls

    def parameter_count(self, name: str) -> int:
        """Trainable parameters of `name` with its default parameters, for 3x32x32 images and 10 classes (the
        figure `lossbench list models` shows); counted on the meta device, so nothing is allocated."""
        import torch

        from lossbench.models.base import ModelFacts

        with torch.device("meta"):
            network = self.build(name, {}).build(ModelFacts(in_channels=3, image_size=(32, 32), out_features=10))
        return sum(p.numel() for p in network.parameters())

    def check_custom(self, path: str, cls: type) -> None:
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            from lossbench.models.custom import check_module_class

            check_module_class(path, cls)
            return
        super().check_custom(path, cls)


MODELS: ModelRegistry = ModelRegistry("models", "model", Contract(
    Model, ("build",),
    "a custom model is a torch.nn.Module subclass whose constructor takes in_channels and num_classes (and "
    "optionally image_size) besides the suite's parameters, or a subclass of lossbench.models.Model whose "
    "constructor takes the suite's parameters and which defines build(facts: lossbench.models.ModelFacts) returning "
    "the torch.nn.Module of one cell",
))
