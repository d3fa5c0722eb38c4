"""User losses named in a suite as `package.module:Class`, checked on import and adapted to the `Loss` interface.

A custom loss is a `torch.nn.Module` subclass whose `forward(outputs, targets)` returns a scalar and which
declares a class attribute `head = "logits"` or `"embedding"`. Optional attributes, with their defaults:
`soft_targets = False` (mixup and cutmix are then rejected before training; set True if forward accepts [B, C]
probability targets), `probabilistic = True`, and for embedding heads `embedding_dim` (or a method
`output_dim(num_classes)`), `knn_k` and `knn_metric` (defaults as in `Loss`). Its constructor's keyword
parameters are the suite parameters. A subclass of `Loss` is used as it is.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, ClassVar, get_args

import torch
from torch import nn

from lossbench.errors import ConfigError
from lossbench.losses.base import Head, Loss

_HEADS = get_args(Head)


class CustomLoss(Loss):
    """Adapter around a user's loss module; the engine sees its head, targets and k-NN settings like a built-in's."""

    inner_cls: ClassVar[type[nn.Module]]
    path: ClassVar[str]

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        if self.head == "embedding":
            if callable(getattr(inner, "output_dim", None)):
                self._output_dim = inner.output_dim
            elif isinstance(getattr(inner, "embedding_dim", None), int) and inner.embedding_dim > 0:
                self.embedding_dim = inner.embedding_dim
            else:
                raise ValueError(
                    "an embedding-head loss must set a positive int attribute `embedding_dim` "
                    "or define `output_dim(num_classes)`"
                )
            self.knn_k = int(getattr(inner, "knn_k", Loss.knn_k))
            self.knn_metric = getattr(inner, "knn_metric", Loss.knn_metric)
            if self.knn_k < 1 or self.knn_metric not in ("cosine", "euclidean"):
                raise ValueError(f"knn_k must be >= 1 and knn_metric cosine or euclidean, got {self.knn_k}, "
                                 f"{self.knn_metric!r}")

    def output_dim(self, num_classes: int) -> int:
        if self.head == "embedding" and hasattr(self, "_output_dim"):
            return int(self._output_dim(num_classes))
        return super().output_dim(num_classes)

    def embed(self, outputs: torch.Tensor) -> torch.Tensor:
        embed = getattr(self.inner, "embed", None)
        return embed(outputs) if callable(embed) else outputs

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        value = self.inner(outputs, targets)
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"custom loss '{self.path}' must return a scalar tensor, returned {shape}")
        return value


CONTRACT = (
    "a custom loss is a torch.nn.Module subclass (or a lossbench.losses.Loss) with a class attribute "
    "head = 'logits' or 'embedding' and forward(outputs, targets) returning a scalar tensor"
)


def _reject(path: str, why: str) -> ConfigError:
    return ConfigError(message=f"custom loss '{path}': {why}", value=path, details=[CONTRACT])


def check_custom_class(path: str, cls: type) -> None:
    """Raise a ConfigError unless `cls` is a usable loss: an nn.Module with a head and forward(outputs, targets)."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(
            message=f"custom loss '{path}' is not a loss: it is class {cls.__module__}.{cls.__qualname__}, "
                    f"and a loss must be a torch.nn.Module subclass",
            value=path, details=[CONTRACT],
        )
    head = getattr(cls, "head", None)
    if head not in _HEADS:
        raise _reject(path, f"needs a class attribute head = 'logits' or 'embedding' (found {head!r})")
    try:
        inspect.signature(cls.forward).bind(None, "outputs", "targets")
    except TypeError:
        raise _reject(
            path, f"forward{inspect.signature(cls.forward)} must take two arguments: (outputs, targets)"
        ) from None
    except ValueError:
        pass  # a builtin without a readable signature: nothing to check


@functools.cache
def adapt(path: str, cls: type) -> type[Loss]:
    """A `Loss` class for a checked custom class: `cls` itself if it subclasses Loss, else a CustomLoss subclass
    whose constructor has the signature (and so the suite parameters) of `cls`."""
    check_custom_class(path, cls)
    if issubclass(cls, Loss):
        return cls

    def __init__(self: CustomLoss, *args: Any, **kwargs: Any) -> None:
        CustomLoss.__init__(self, cls(*args, **kwargs))

    # Copy name, doc, annotations and __wrapped__: the registry then reads the user's parameters and types.
    functools.update_wrapper(__init__, cls.__init__)
    return type(
        cls.__name__,
        (CustomLoss,),
        {
            "__init__": __init__,
            "__doc__": cls.__doc__,
            "__module__": cls.__module__,
            "inner_cls": cls,
            "path": path,
            "head": cls.head,  # type: ignore[attr-defined]
            "soft_targets": bool(getattr(cls, "soft_targets", False)),
            "probabilistic": bool(getattr(cls, "probabilistic", True)),
        },
    )
