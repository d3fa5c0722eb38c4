"""User networks named in a suite as `package.module:Class`: a plain `torch.nn.Module` subclass, adapted to Model.

The class's constructor must take the keyword parameters `in_channels` (the dataset's channel count) and
`num_classes` (the width of the final layer: the class count, or the feature width a loss asks for), and may take
`image_size` ((height, width) in pixels); its other keyword parameters are the suite's `model:` keys. It is
checked to be such a factory (an nn.Module subclass with those parameters) before anything calls it. lossbench
cannot place dropout inside it, so a dropout regularizer with a custom network is a validation error. A subclass
of `lossbench.models.Model` is used as it is (its contract is checked by the registry).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from torch import nn

from lossbench.errors import ConfigError
from lossbench.models.base import Model, ModelFacts

RUNTIME_PARAMETERS = ("in_channels", "num_classes", "image_size")
_REQUIRED = ("in_channels", "num_classes")


def check_module_class(path: str, cls: type) -> inspect.Signature:
    """The constructor signature of `cls`, once it is known to be an nn.Module subclass that takes `in_channels`
    and `num_classes` as keywords; a ConfigError otherwise. `cls` is not called."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(message=f"custom model '{path}' is not a torch.nn.Module subclass", value=path)
    signature = inspect.signature(cls.__init__)
    keyword = {p.name for p in signature.parameters.values()
               if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    missing = [name for name in _REQUIRED if name not in keyword]
    if missing:
        raise ConfigError(
            message=f"custom model '{path}': its constructor{signature} does not take {' and '.join(missing)}",
            value=path,
            details=["a custom network's constructor takes in_channels and num_classes (and optionally image_size) "
                     "as keyword parameters; lossbench passes them from the dataset and the loss"],
        )
    return signature


@functools.cache
def adapt_module(path: str, cls: type[nn.Module]) -> type[Model]:
    """A Model class whose suite parameters are those of `cls` apart from the runtime ones, building `cls`."""
    signature = check_module_class(path, cls)
    suite_params = [p for name, p in signature.parameters.items() if name not in RUNTIME_PARAMETERS]
    takes_image_size = "image_size" in signature.parameters
    annotations = {k: v for k, v in getattr(cls.__init__, "__annotations__", {}).items()
                   if k not in RUNTIME_PARAMETERS}

    def __init__(self: Model, **params: Any) -> None:
        self.params = params  # type: ignore[attr-defined]

    __init__.__signature__ = signature.replace(parameters=suite_params)  # type: ignore[attr-defined]
    __init__.__annotations__ = annotations

    def build(self: Model, facts: ModelFacts) -> nn.Module:
        runtime: dict[str, Any] = {"in_channels": facts.in_channels, "num_classes": facts.out_features}
        if takes_image_size:
            runtime["image_size"] = facts.image_size
        module = cls(**self.params, **runtime)  # type: ignore[attr-defined]
        if not isinstance(module, nn.Module):
            raise TypeError(f"custom model '{path}' built a {type(module).__name__}, not a torch.nn.Module")
        return module

    return type(cls.__name__, (Model,), {
        "__init__": __init__, "build": build, "__doc__": cls.__doc__, "__module__": cls.__module__,
        "dropout_places": frozenset(), "registry_name": path,
    })
