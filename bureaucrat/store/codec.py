"""JSON text in and out of the database, decoded by us so that a bad row is detected."""

from __future__ import annotations

import json
from typing import Any


class UndecodableError(ValueError):
    """A stored JSON document is not valid JSON or not an object; the message says which."""


def dumps(value: Any) -> str:
    """Compact JSON text for a column."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads_object(text: str | None) -> dict[str, Any]:
    """The JSON object in ``text``; ``UndecodableError`` when it is anything else."""
    if text is None:
        raise UndecodableError("no JSON document (NULL)")
    try:
        value = json.loads(text)
    except ValueError as error:
        raise UndecodableError(f"invalid JSON: {error}") from None
    if not isinstance(value, dict):
        raise UndecodableError(f"a JSON {type(value).__name__}, not an object")
    return value


def loads_lenient(text: str | None) -> dict[str, Any]:
    """The JSON object in ``text``, or a note that it could not be read (for display only)."""
    try:
        return loads_object(text)
    except UndecodableError as error:
        return {"undecodable": str(error)}
