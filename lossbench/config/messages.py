"""Errors of a suite as a reader wants them: pydantic's errors and the registries' placed at the file line or
command-line option they came from, with the allowed values and a did-you-mean, in the order a reader meets them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from lossbench.config.schema import DEVICE_SYNONYMS, Suite
from lossbench.config.source import SuiteSource
from lossbench.errors import ConfigError, LossbenchError, did_you_mean
from lossbench.schema_messages import plain_message, show_value
from lossbench.suite_yaml import dotted

# ---------------------------------------------------------------------------------------------------------------
# Structural validation: pydantic errors → ConfigErrors with positions and suggestions.


def _model_at(path: Sequence[Any]) -> type[BaseModel] | None:
    """The schema class that owns the mapping at `path` (for listing allowed keys)."""
    model: type[BaseModel] = Suite
    mapping_key = False
    for key in path:
        if isinstance(key, int) or mapping_key:
            mapping_key = False
            continue
        field = model.model_fields.get(str(key))
        if field is None:
            return None
        ann = field.annotation
        if getattr(ann, "__origin__", None) is dict:  # a mapping of models (tune.space): its keys are the user's
            ann, mapping_key = ann.__args__[1], True
        # Union members may be Annotated (tagged); their __origin__ is the type itself.
        members = [getattr(a, "__origin__", a) for a in getattr(ann, "__args__", (ann,))]
        nested = next((a for a in members if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nested is None:
            return None
        model = nested
    return model


_TYPE_TAGS = {"int", "float", "str", "bool", "list", "dict", "none"}


def _is_type_tag(part: Any) -> bool:
    # pydantic puts union members and validators into locations: 'int', 'constrained-float', 'function-before[..]'.
    text = str(part)
    return not isinstance(part, int) and ("[" in text or text in _TYPE_TAGS or text.startswith("constrained-"))


def _clean_loc(loc: Sequence[Any]) -> list[Any]:
    return [p for p in loc if not _is_type_tag(p)]


def structural_errors(source: SuiteSource, exc: ValidationError) -> list[ConfigError]:
    """Pydantic's errors of the suite's structure, each placed where its value came from, one per place."""
    errors: list[ConfigError] = []
    seen: set[str] = set()
    for err in exc.errors():
        loc = _clean_loc(err["loc"])
        # Mapping-form components carry their params under 'params' internally; users never write that key.
        loc = [p for p in loc if p != "params"]
        kind = err["type"]
        value = err.get("input")
        allowed: list[str] | None = None
        suggestion = None
        if kind == "extra_forbidden":
            key = loc[-1] if loc else value
            owner = _model_at(loc[:-1])
            allowed = sorted(owner.model_fields) if owner else None
            suggestion = did_you_mean(str(key), allowed or [])
            message = f"unknown key '{key}'"
        elif kind == "literal_error":
            allowed = [s.strip(" '") for s in str(err["ctx"]["expected"]).replace(" or ", ", ").split(",")]
            suggestion = DEVICE_SYNONYMS.get(str(value).lower()) if loc[-1:] == ["device"] else None
            suggestion = suggestion or did_you_mean(str(value), allowed)
            message = f"{show_value(value)} is not allowed"
        elif kind == "missing":
            message = f"missing required key '{loc[-1]}'"
        else:
            message = plain_message(err)
        # A union reports one error per member type (int | fraction); the user needs the first, for that place.
        place = _dotted(loc)
        if place in seen:
            continue
        seen.add(place)
        errors.append(ConfigError(message=message, location=source.locate(loc), value=value, allowed=allowed,
                                  suggestion=suggestion))
    return errors


def _dotted(path: Sequence[Any]) -> str:
    return dotted(tuple(path))


def located_error(source: SuiteSource, exc: LossbenchError, path: tuple[Any, ...]) -> ConfigError:
    """A registry error placed at the component, or at the parameter's own line when the suite wrote it there,
    or at the override that set the component's name (`model.name=torchvision:x`)."""
    if exc.parameter:
        path = path + (exc.parameter,)
    elif path + ("name",) in source.origins:
        path = path + ("name",)
    exc.location = source.locate(path)
    return exc if isinstance(exc, ConfigError) else ConfigError(message=exc.message, location=exc.location)


def in_file_order(errors: list[ConfigError]) -> list[ConfigError]:
    """Errors sorted as a reader meets them: command-line options first, then by line and column."""
    def key(e: ConfigError) -> tuple[int, int, int]:
        loc = e.location
        if loc is None or loc.option:
            return (0, 0, 0)
        return (1, loc.line or 0, loc.column or 0)

    return sorted(errors, key=key)
