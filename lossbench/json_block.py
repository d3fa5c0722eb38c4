"""A JSON object with a typed field per key a program writes, that reads any object and writes it back unchanged.

lossbench's cell records (lossbench/record.py) are made of such blocks: metrics, timings, the environment, one per
history entry. A block is a dataclass whose fields are the keys this version knows; every other key is kept in
`extra`, and the block remembers which keys it holds and in which order, so that reading a file and writing it
again gives the same bytes, whichever version of lossbench wrote it.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union

_B = TypeVar("_B", bound="Block")


@dataclass(frozen=True)
class MapOf:
    """The shape of a JSON object whose every value has the shape `item` (names → blocks, say)."""

    item: Shape


@dataclass(frozen=True)
class ListOf:
    """The shape of a JSON list whose every entry has the shape `item`."""

    item: Shape


#: What a nested field holds: a block, or an object or list of them (of any depth).
Shape = Union[type["Block"], MapOf, ListOf]


@dataclass
class Block:
    """A JSON object inside a record: one typed field per key lossbench writes (each defaulting to None), every
    other key in `extra`.

    A block remembers which keys it holds and in which order: the file's order when read, then each field in the
    order it is first set, as a dict would. So `from_dict(d).to_dict() == d` for any object `d`, key order
    included, and a rewritten file has the same bytes. A block built from its fields holds those that are not
    None, in their declared order (every field, when the class sets `WRITES_NONE`).
    """

    #: Keys of the file that no field of this version names, kept so that a rewrite loses nothing.
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)

    #: Whether a block built from its fields writes the fields that are None (as JSON null) too.
    WRITES_NONE: ClassVar[bool] = False
    #: The fields that hold blocks of their own, with their shape (a JSON object or list inside this one).
    NESTED: ClassVar[dict[str, Shape]] = {}

    def __post_init__(self) -> None:
        names = self.field_names()
        keys = [n for n in names if self.WRITES_NONE or getattr(self, n) is not None]
        object.__setattr__(self, "_keys", keys + [k for k in self.extra if k not in names])

    def __setattr__(self, name: str, value: Any) -> None:
        keys: list[str] | None = self.__dict__.get("_keys")
        if keys is not None and name not in keys and name in _name_set(type(self)):
            keys.append(name)
        object.__setattr__(self, name, value)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The keys this version has a typed field for, in their declared order."""
        return _field_names(cls)

    @classmethod
    def from_dict(cls: type[_B], data: dict[str, Any]) -> _B:
        """The block of a JSON object (the caller checked that it is one)."""
        names, nested = _name_set(cls), cls.NESTED
        # Filled in directly rather than through __init__: records are read by the thousand (every field of a
        # block defaults to None, so nothing is skipped).
        state: dict[str, Any] = dict.fromkeys(cls.field_names())
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names:
                extra[key] = value
            else:
                state[key] = _read(nested[key], value) if key in nested else value
        block = cls.__new__(cls)
        block.__dict__.update(state, extra=extra, _keys=list(data))
        return block

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: the keys in the order they were read or set, then `extra`'s others."""
        names = _name_set(type(self))
        out: dict[str, Any] = {}
        for key in self.__dict__["_keys"]:
            if key in names:
                value = getattr(self, key)
                out[key] = _plain(value) if key in self.NESTED else value
            elif key in self.extra:
                out[key] = self.extra[key]
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    def __bool__(self) -> bool:
        """False for a block that holds no key, like an empty JSON object."""
        return bool(self.to_dict())

    def get(self, name: str) -> Any:
        """The value under the JSON key `name` (a field, or a key in `extra`); None when absent."""
        return getattr(self, name) if name in _name_set(type(self)) else self.extra.get(name)

    def set(self, name: str, value: Any) -> None:
        """Set the value under the JSON key `name` (a field, or a key in `extra`); a nested field's plain JSON
        value becomes its blocks."""
        if name in _name_set(type(self)):
            setattr(self, name, _read(self.NESTED[name], value) if name in self.NESTED else value)
            return
        keys: list[str] = self.__dict__["_keys"]
        if name not in keys:
            keys.append(name)
        self.extra[name] = value

    def update(self, values: dict[str, Any]) -> None:
        """Set every value of `values` under its JSON key, in its order."""
        for name, value in values.items():
            self.set(name, value)


def _read(shape: Shape, value: Any) -> Any:
    """A JSON value read as `shape`; a value of another kind (a damaged file) is kept as it is."""
    if isinstance(shape, MapOf):
        return {k: _read(shape.item, v) for k, v in value.items()} if isinstance(value, dict) else value
    if isinstance(shape, ListOf):
        return [_read(shape.item, v) for v in value] if isinstance(value, list) else value
    return shape.from_dict(value) if isinstance(value, dict) else value


def _plain(value: Any) -> Any:
    """The JSON value of a nested field's blocks."""
    if isinstance(value, Block):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@functools.cache  # a class's fields do not change; blocks are read by the thousand in a report
def _field_names(cls: type[Block]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")


@functools.cache
def _name_set(cls: type[Block]) -> frozenset[str]:
    return frozenset(_field_names(cls))
