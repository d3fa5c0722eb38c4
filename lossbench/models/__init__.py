"""The networks lossbench trains, one module per family, all registered in MODELS.

A model is a `Model` subclass registered with `@MODELS.register("name")`: its constructor's keyword parameters
are the suite's `model:` keys, `build(ModelFacts)` returns the nn.Module of one cell, and `dropout_places` says
where it can put dropout. Adding a family is adding one module to this package: every module here is imported
below, so `lossbench list`, validation and the tests parametrized over MODELS pick it up.
"""

import importlib
import pkgutil

from lossbench.models.base import DropoutPlace, DropoutPlacement, IncompatibleInput, Model, ModelFacts
from lossbench.models.registry import MODELS

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MODELS", "DropoutPlace", "DropoutPlacement", "IncompatibleInput", "Model", "ModelFacts"]
