"""`tune:` in the suite schema: the trial budget, the metric, the sampler and the ranges of the tuned parameters."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from lossbench.config.fields import Flag, Seed, StrictModel
from lossbench.schema_messages import show_value

MAX_TRIALS = 10_000


def _number(value: Any) -> int | float:
    """A tuning range's end: an integer stays one (a whole-number range), a finite float stays a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = " (YAML reads 1.0e6 as text: write 1.0e+6)" if isinstance(value, str) and "e" in value.lower() else ""
        raise ValueError(f"must be a number, got {show_value(value)}{hint}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    return value


Number = Annotated[Any, BeforeValidator(_number)]


class ParamRange(StrictModel):
    """One tuned parameter: a range `{low, high}` (whole numbers when both ends are, else real numbers; `log: true`
    samples uniformly on the log scale) or a list of `choices`."""

    low: Number | None = None
    high: Number | None = None
    log: Flag = False
    choices: list[Any] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_form(self) -> ParamRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give either choices or low/high (with log), not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (e.g. {low: 1.0e-4, high: 1.0, log: true}) or choices: [...]")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got {self.low}")
        return self

    @property
    def is_int(self) -> bool:
        """A whole-number range (both ends written as integers)."""
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)


class TuneConfig(StrictModel):
    """`tune:`: every grid cell gets the same number of trials on the validation split, then its best values are
    trained with the suite's seeds and tested (lossbench/tune.py). Metrics: val_acc and val_top5 are maximised,
    val_nll, val_ece and val_loss minimised."""

    trials: Annotated[int, Field(strict=True, gt=0, le=MAX_TRIALS)]
    metric: Literal["val_acc", "val_top5", "val_nll", "val_ece", "val_loss"] = "val_acc"
    sampler: Literal["tpe", "random", "grid", "qmc"] = "tpe"
    pruner: Literal["none", "median", "hyperband"] = "none"
    seed: Seed = 0
    space: dict[str, ParamRange] = Field(min_length=1)
