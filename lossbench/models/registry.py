"""The registry of models. A model family is one module of this package that registers its classes here."""

from __future__ import annotations

from lossbench.models.base import Model
from lossbench.registry import Contract, Registry

MODELS: Registry[Model] = Registry("models", "model", Contract(
    Model, ("build",),
    "a custom model is a subclass of lossbench.models.Model whose constructor takes the suite's parameters, and "
    "which defines build(facts: lossbench.models.ModelFacts) returning the torch.nn.Module of one cell",
))
