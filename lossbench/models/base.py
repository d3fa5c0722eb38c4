"""What every model receives and declares: the runtime facts of a cell, and where it can place dropout.

A model is a class registered in MODELS. Its constructor's keyword parameters are what a suite may set under
`model:` (e.g. `padding`); `build(facts)` returns the nn.Module for one cell. Everything the suite does not set
comes in one `ModelFacts`: the input channels and image size of the dataset, the width of the final layer (the
number of classes for a logits loss, the embedding size for an embedding loss) and where to put dropout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import nn

#: The places a dropout regularizer can ask for: before the classifier, after each convolutional block.
DropoutPlace = Literal["classifier", "conv"]


@dataclass(frozen=True)
class DropoutPlacement:
    """Dropout probabilities per place (0 = none): before the final classifier layer, after each conv block."""

    classifier: float = 0.0
    conv: float = 0.0

    def requested(self) -> tuple[DropoutPlace, ...]:
        """The places that ask for dropout (p > 0)."""
        return tuple(place for place in ("classifier", "conv") if getattr(self, place) > 0)  # type: ignore[misc]


@dataclass(frozen=True)
class ModelFacts:
    """What a model needs to know about its cell beyond the suite's parameters."""

    in_channels: int
    #: (height, width) in pixels.
    image_size: tuple[int, int]
    #: Width of the final layer: classes for a logits loss, embedding dimensions for an embedding loss.
    out_features: int
    dropout: DropoutPlacement = DropoutPlacement()


class IncompatibleInput(ValueError):
    """The model cannot take the dataset's images as configured; `parameter` names the suite setting to change."""

    def __init__(self, message: str, parameter: str | None = None):
        super().__init__(message)
        self.parameter = parameter


class Model:
    """Base of registered models: constructed from the suite's parameters, built once per cell."""

    #: Where this model can insert dropout. A requested place outside this set is a validation error.
    dropout_places: ClassVar[frozenset[DropoutPlace]] = frozenset()

    def build(self, facts: ModelFacts) -> nn.Module:
        """The network for one cell. Raises IncompatibleInput when the facts do not fit the parameters."""
        raise NotImplementedError
