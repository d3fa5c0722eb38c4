"""pydantic's validation errors as plain sentences about a suite, without pydantic's own wording.

pydantic says "Input should be a valid dictionary or instance of DatasetConfig" or "Value error, ..."; a suite's
author needs "must be a mapping of keys" and the value they wrote. One function per error record, used for the
suite's structure (config/) and for component parameters (registry.py).
"""

from __future__ import annotations

import json
from typing import Any

_BY_TYPE = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string (quote it if YAML reads it as something else)",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "set_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "none_required": "must be empty (null)",
}

_COMPARISONS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
                "less_than_equal": ("le", "<=")}


def plain_message(error: dict[str, Any]) -> str:
    """One pydantic error record (`ValidationError.errors()[i]`) as a sentence, ending with the value given."""
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind in _COMPARISONS:
        key, sign = _COMPARISONS[kind]
        text = f"must be {sign} {ctx.get(key)}"
    elif kind == "too_short":
        text = f"needs at least {ctx.get('min_length')} item(s)"
    elif kind == "too_long":
        text = f"allows at most {ctx.get('max_length')} item(s)"
    elif kind == "string_too_long":
        text = f"allows at most {ctx.get('max_length')} characters"
    elif kind == "string_too_short":
        text = f"needs at least {ctx.get('min_length')} character(s)"
    elif kind == "string_pattern_mismatch":
        text = f"must match the pattern {ctx.get('pattern')}"
    elif kind == "literal_error":
        text = f"must be one of {ctx.get('expected')}"
    elif kind in _BY_TYPE:
        text = _BY_TYPE[kind]
    else:
        # An error type not listed above: keep pydantic's sentence but not its phrasing of "should".
        text = str(error.get("msg", "invalid value")).replace("Input should be", "must be")
        text = text.split(" or instance of ")[0]
    if "input" in error and not isinstance(error["input"], dict):
        text += f" (got {show_value(error['input'])})"
    return text


def show_value(value: Any, limit: int = 60) -> str:
    """A value as its author wrote it in YAML (true, null, 'text', [1, 2]), shortened; never an object repr."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = str(value)
    elif isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
