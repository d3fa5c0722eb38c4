"""The field types the suite schema is built of: component references, bounds, strict numbers and flags."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from lossbench.schema_messages import show_value

# ---------------------------------------------------------------------------------------------------------------
# Component references: `focal` or `{name: focal, gamma: 2}`; stacks (augmentation, regularizer) may be lists.


class ComponentSpec(BaseModel):
    """A registered component named in a suite, with the parameters the suite sets (defaults filled later)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


def to_spec(value: Any) -> Any:
    """A component as written (`focal` or `{name: focal, gamma: 2}`) as the data of a ComponentSpec."""
    if isinstance(value, ComponentSpec):
        return value
    if isinstance(value, str):
        return {"name": value, "params": {}}
    if isinstance(value, dict):
        if "name" not in value:
            raise ValueError("a component mapping needs a 'name' key, e.g. {name: focal, gamma: 2}")
        if not isinstance(value["name"], str):
            raise ValueError(f"'name' must be a string, got {show_value(value['name'])}")
        odd = [k for k in value if not isinstance(k, str)]
        if odd:
            raise ValueError(
                f"parameter name {show_value(odd[0])} is not a string (YAML reads on/off/yes/no as booleans: "
                "quote the key)"
            )
        return {"name": value["name"], "params": {k: v for k, v in value.items() if k != "name"}}
    raise ValueError(f"expected a component name or a mapping with 'name', got {show_value(value)}")


def _to_stack(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("an empty list; write 'none' for no component")
        return [to_spec(v) for v in value]
    return [to_spec(value)]


Component = Annotated[ComponentSpec, BeforeValidator(to_spec)]
Stack = Annotated[list[ComponentSpec], BeforeValidator(_to_stack)]

# ---------------------------------------------------------------------------------------------------------------
# Bounds. Beyond them a suite is a typo (`epochs: 1e12`) or would exhaust memory before training; README lists them.

MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_EVAL_BATCH_SIZE = 1_048_576
MAX_IMAGE_SIZE = 1_024
#: Cells (grid points × seeds) in one suite; the count is computed from the axis lengths, never by building them.
MAX_CELLS = 100_000
#: Seeds are unsigned 32-bit: what torch, numpy and every other generator accept.
MAX_SEED = 2**32 - 1
#: Most seeds adaptive seeding may run per grid point (`seeds.max`).
MAX_ADAPTIVE_SEEDS = 1000
MAX_SUBSET = 1_000_000_000
MAX_DESCRIPTION = 10_000

# Integers and booleans are strict: YAML's `true` is not the number 1, and `2.5` epochs is not 2.
PositiveInt = Annotated[int, Field(strict=True, gt=0)]
Flag = Annotated[bool, Field(strict=True)]
Fraction = Annotated[float, Field(strict=True, gt=0, le=1)]
Seed = Annotated[int, Field(strict=True, ge=0, le=MAX_SEED)]


class StrictModel(BaseModel):
    """A section of the suite: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


Subset = Annotated[int, Field(strict=True, gt=0, le=MAX_SUBSET)] | Fraction


def spec_to_plain(spec: ComponentSpec) -> dict[str, Any] | str:
    """A component as a suite writes it: its bare name, or a mapping with its parameters."""
    return {"name": spec.name, **spec.params} if spec.params else spec.name
