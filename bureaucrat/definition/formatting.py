"""``%`` string formatting for expressions, with the size of the result known before it is built.

``"%*d" % (10**9, 1)`` or ``"%.999999999f" % 1`` would allocate gigabytes in one C call. The
format is read first: every conversion's width, precision and argument give an upper bound on
its text, and the whole must fit ``limits.MAX_LENGTH`` and the budget before Python formats it.
Formats this reader does not understand are refused rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bureaucrat.definition import limits
from bureaucrat.definition.limits import Budget, LimitExceededError

_SPEC = re.compile(
    r"%(?:\((?P<key>[^()]*)\))?(?P<flags>[#0\- +]*)(?P<width>\*|\d+)?"
    r"(?:\.(?P<precision>\*|\d*))?[hlL]?(?P<kind>[diouxXeEfFgGcrsa%])"
)
_FLOAT_DIGITS = 310
"""Digits a float has before its point at most (1e308); the exponent forms need far fewer."""


class _Arguments:
    """The values a format consumes, in order, or by key from a mapping."""

    def __init__(self, values: Any) -> None:
        self.mapping = values if isinstance(values, Mapping) else None
        self.values = values if isinstance(values, tuple) else (values,)
        self.next = 0

    def take(self, key: str | None) -> Any:
        if key is not None:
            if self.mapping is None:
                raise TypeError("format requires a mapping")
            return self.mapping[key]
        if self.next >= len(self.values):
            raise TypeError("not enough arguments for format string")
        self.next += 1
        return self.values[self.next - 1]


def format_percent(text: str, values: Any, budget: Budget) -> str:
    """``text % values``, refused with ``LimitExceededError`` when the result could exceed
    ``MAX_LENGTH`` characters, and paid for from ``budget``."""
    arguments = _Arguments(values)
    total, units, end = 0, 1, 0
    for match in _SPEC.finditer(text):
        if "%" in text[end : match.start()]:
            raise ValueError("unsupported format character in % format")
        total += match.start() - end
        end = match.end()
        size, read = _conversion(match, arguments, budget.left + 1)
        total += size
        units += read
        if total > limits.MAX_LENGTH:
            raise LimitExceededError(f"result longer than {limits.MAX_LENGTH} elements")
    if "%" in text[end:]:
        raise ValueError("unsupported format character in % format")
    total += len(text) - end
    budget.spend(units + total // 64)
    return str(text % values)


def _conversion(match: re.Match[str], arguments: _Arguments, bound: int) -> tuple[int, int]:
    """(characters at most, units to read the argument) of one conversion."""
    kind = match["kind"]
    if kind == "%":
        return 1, 0
    width = _number(match["width"], arguments)
    precision = _number(match["precision"], arguments) if match["precision"] is not None else None
    value = arguments.take(match["key"])
    if kind in "sra":
        read = limits.text_size(value, limits.MAX_LENGTH)
        if read > limits.MAX_LENGTH:
            raise LimitExceededError(f"result longer than {limits.MAX_LENGTH} elements")
        size = len(str(value) if kind == "s" else repr(value) if kind == "r" else ascii(value))
        if precision is not None:
            size = min(size, precision)
        return max(size, width), 2 * read
    if kind == "c":
        return max(1, width), 0
    return max(_number_size(kind, value, precision), width), 0


def _number(text: str | None, arguments: _Arguments) -> int:
    """A width or precision: digits, ``*`` (the next argument) or nothing (0)."""
    if not text:
        return 0
    number = arguments.take(None) if text == "*" else int(text)
    if not isinstance(number, int):
        raise TypeError("* wants int")
    if abs(number) > limits.MAX_LENGTH:
        raise LimitExceededError(f"result longer than {limits.MAX_LENGTH} elements")
    return abs(number)


def _number_size(kind: str, value: Any, precision: int | None) -> int:
    digits = precision or 0
    if kind in "eEgG":
        return digits + 12
    if isinstance(value, int):
        return max(value.bit_length() * 3 // 10 + 1, value.bit_length() // 3 + 1, digits) + 3
    return _FLOAT_DIGITS + max(digits, 6) + 3
