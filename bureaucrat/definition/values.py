"""Conversion of definition text into values: property values and attribute values.

Each converter takes the raw text and returns the value or raises ``ValueError`` whose message
says, in the user's words, what is wrong with the text; the XML parser adds where it is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable

from bureaucrat.definition.limits import too_many_bits
from bureaucrat.definition.model import JSON, ParticipantKind, PropertyType

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
"""Decimal notation only: Python's float() also takes 1_000, nan, infinity and non-ASCII digits."""
_WHOLE = re.compile(r"[0-9]{1,9}")
_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _shown(text: str) -> str:
    return f'"{text}"' if len(text) <= 40 else f'"{text[:37]}..."'


def to_int(text: str) -> int:
    stripped = text.strip()
    if not _INT.fullmatch(stripped):
        raise ValueError(f"{_shown(stripped)} is not an int")
    try:
        value = int(stripped)
    except ValueError:  # more digits than Python converts
        value = None
    if value is None or too_many_bits(value):
        raise ValueError(f"{_shown(stripped)} is not an int (too many digits)")
    return value


def to_float(text: str) -> float:
    stripped = text.strip()
    value = float(stripped) if _FLOAT.fullmatch(stripped) else math.nan
    if not math.isfinite(value):
        raise ValueError(f"{_shown(stripped)} is not a float")
    return value


def to_str(text: str) -> str:
    return text


def to_bool(text: str) -> bool:
    stripped = text.strip()
    try:
        return _BOOLS[stripped.lower()]
    except KeyError:
        expected = "expected one of 0, 1, true, false, yes, no"
        raise ValueError(f"{_shown(stripped)} is not a bool ({expected})") from None


def to_json(text: str) -> JSON:
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as error:
        raise ValueError(f"the value is not valid JSON: {error.msg} at {_where(error)}") from None
    except RecursionError:
        raise ValueError("the JSON value is nested too deeply") from None


def _where(error: json.JSONDecodeError) -> str:
    return f"line {error.lineno} column {error.colno} of the value"


def _no_constant(name: str) -> float:
    raise ValueError(f"the value is not valid JSON: {name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the value is not valid JSON: {text} is too large a number")
    return value


CONVERTERS: dict[PropertyType, Callable[[str], JSON]] = {
    PropertyType.INT: to_int,
    PropertyType.FLOAT: to_float,
    PropertyType.STR: to_str,
    PropertyType.BOOL: to_bool,
    PropertyType.JSON: to_json,
}


def property_type(name: str) -> PropertyType:
    try:
        return PropertyType(name)
    except ValueError:
        expected = ", ".join(kind.value for kind in PropertyType)
        raise ValueError(f'unknown type "{name}" (expected one of {expected})') from None


def seconds(text: str, *, positive: bool) -> float:
    """A number of seconds: finite, and > 0 when ``positive`` else >= 0."""
    try:
        value = to_float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0 or (positive and value == 0):
        kind = "a positive" if positive else "a non-negative"
        raise ValueError(f"{_shown(text)} is not {kind} number of seconds")
    return value


def count(text: str) -> int:
    """A whole number >= 0 (at most nine digits)."""
    stripped = text.strip()
    if not _WHOLE.fullmatch(stripped):
        raise ValueError(f"{_shown(stripped)} is not a whole number >= 0")
    return int(stripped)


def positive_seconds(text: str) -> float:
    return seconds(text, positive=True)


def non_negative_seconds(text: str) -> float:
    return seconds(text, positive=False)


def participant_kind(text: str) -> ParticipantKind:
    try:
        return ParticipantKind(text.strip())
    except ValueError:
        expected = " or ".join(kind.value for kind in ParticipantKind)
        raise ValueError(f'unknown kind "{text}" (expected {expected})') from None
