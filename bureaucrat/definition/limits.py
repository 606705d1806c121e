"""Bounds on what expressions compute: the step's budget of work, sizes measured without
recursion, operators that refuse oversized results, and the JSON conversion of results.

Python arithmetic on untrusted input can allocate gigabytes or run for hours (``9**9**9``,
``"a" * 10**9``, ``round(5, -10**9)``, ``str([10**3000] * 99999)``). Every operator and function
that can make its result much larger than its operands checks the size of the result first and
raises ``LimitExceededError``. What each operation costs in work units is in ``costs``; the units
are spent from one ``Budget`` per step.

The walkers (``weight``, ``text_size``, ``json_size``) never recurse and stop as soon as they
pass their bound, so a value built of shared references (``[x, x]`` nested twenty times) costs
what the bound allows, not what its expansion would.
"""

from __future__ import annotations

import ast
import math
import operator as op
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

MAX_INT_BITS = 10_000
MAX_LENGTH = 100_000
MAX_ROUND_DIGITS = 4_000
DEFAULT_BUDGET = 20_000_000
"""Work units of one step unless the caller says otherwise (``Limits.step_budget``)."""
_SMALL_INT_BITS = 64
_UNBOUNDED = 1 << 62

_VIEWS: tuple[type, ...] = (type({}.keys()), type({}.values()), type({}.items()))
_SEQUENCES = frozenset({list, tuple, set, frozenset, *_VIEWS})
_CONTAINERS = _SEQUENCES | {dict}
_JSON_SCALARS = frozenset({type(None), bool, int, str})
_LISTS = frozenset({list, tuple, *_VIEWS})


class LimitExceededError(ArithmeticError):
    """A result would exceed one of this module's limits, or the step's budget is spent."""


class Budget:
    """The work units one step may still spend: expression evaluation, activity starts and the
    sizes the engine measures all draw on it.

    One unit is about 50 ns of CPython's time on one core of a 2020s server (the figures are
    calibrated with ``benchmarks/hostile_steps.py``): an expression node costs 4, copying or
    comparing an element 1, walking one in Python 2, 64 characters of a string 1. ``left`` goes
    below zero only when ``spend`` has raised: ``spent`` tells afterwards that the budget, not
    the expression, was the cause of a failure.
    """

    __slots__ = ("left",)

    def __init__(self, units: int) -> None:
        self.left = units

    @property
    def spent(self) -> bool:
        return self.left < 0

    def spend(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise LimitExceededError("the step's budget of work is spent")


def too_many_bits(value: int) -> bool:
    return value.bit_length() > MAX_INT_BITS


# sizes ------------------------------------------------------------------------------------------


def weight(value: object, budget: int) -> int:
    """Characters and elements in ``value``, nested ones included; stops counting past budget.

    Integers past 64 bits weigh their digits: ``[10**3000] * 99999`` is one list of references
    to one integer, but its JSON text in the instance state would be 300 MB.
    """
    return measure(value, budget, _weight_of)


def text_size(value: object, budget: int) -> int:
    """About how many characters ``str(value)`` has (never many more); stops past budget.

    Unlike ``weight`` it counts the digits of every number and the punctuation between elements.
    """
    return measure(value, budget, _text_size_of)


def measure(value: object, budget: int, size_of: Callable[[Any], int]) -> int:
    """The sum of ``size_of`` over ``value`` and everything nested in it, walked without
    recursion; stops as soon as the sum passes ``budget``."""
    total = 0
    stack: list[Any] = [value]
    while stack and total <= budget:
        item = stack.pop()
        total += size_of(item)
        kind = type(item)
        if kind is dict:
            stack.extend(item.items())
        elif kind in _SEQUENCES:
            stack.extend(item)
    return total


def _weight_of(item: Any) -> int:
    kind = type(item)
    if kind is str or kind in _CONTAINERS:
        return len(item)
    if kind is int and item.bit_length() > _SMALL_INT_BITS:
        return int(item.bit_length() * 3 // 10)
    return 0


def _text_size_of(item: Any) -> int:
    kind = type(item)
    if kind is str:
        return len(item)
    if kind is int:
        return int(item.bit_length() * 3 // 10 + 1)
    if kind is float:
        return 24
    if kind in _CONTAINERS:
        return 2 * len(item)
    return 4


def json_size(value: object, bound: int, visits: int = -1) -> tuple[int, int]:
    """(bytes, values visited): about how many bytes ``value`` takes as compact UTF-8 JSON text.

    Strings are counted exactly (escapes and UTF-8 included), integers by their digits, floats
    as 24 bytes at most. The walk stops once the bytes pass ``bound`` or the values visited pass
    ``visits`` (when not negative): the figures returned are then only lower bounds.
    """
    total = seen = 0
    stack: list[Any] = [value]
    pop, push = stack.pop, stack.extend
    while stack:
        item = pop()
        seen += 1
        kind = type(item)
        if kind is str:
            text = encode_basestring(item)
            total += len(text) if item.isascii() else len(text.encode("utf-8", "surrogatepass"))
        elif kind is dict:
            total += 2 * len(item) + 1
            push(item)
            push(item.values())
        elif kind in _SEQUENCES:
            total += len(item) + 1
            push(item)
        elif kind is int:
            total += item.bit_length() * 3 // 10 + 2
        elif kind is float:
            total += 24
        else:
            total += 5
        if total > bound or seen == visits:
            break
    return total, seen


# bounded operators ------------------------------------------------------------------------------


def _check_length(size: int) -> None:
    if size > MAX_LENGTH:
        raise LimitExceededError(f"result longer than {MAX_LENGTH} elements")


def _check_repeat(sequence: object, times: int) -> None:
    if times > 0:
        _check_length(weight(sequence, MAX_LENGTH // times) * times)


def _check_bits(bits: float) -> None:
    if bits > MAX_INT_BITS:
        raise LimitExceededError(f"integer result over {MAX_INT_BITS} bits")


def safe_add(left: Any, right: Any) -> Any:
    if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
        # Concatenation shares the nested values: only the top level grows.
        _check_length(len(left) + len(right))
    return left + right


def safe_mult(left: Any, right: Any) -> Any:
    if isinstance(left, str | list | tuple) and isinstance(right, int):
        _check_repeat(left, right)
    elif isinstance(right, str | list | tuple) and isinstance(left, int):
        _check_repeat(right, left)
    elif isinstance(left, int) and isinstance(right, int):
        _check_bits(left.bit_length() + right.bit_length() - 1)
    return left * right


def safe_power(base: Any, exponent: Any) -> Any:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        _check_bits(exponent * math.log2(abs(base)))
    return base**exponent


def safe_lshift(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int) and right > 0:
        _check_bits(left.bit_length() + right)
    return left << right


def safe_int(*args: Any) -> int:
    result = int(*args)
    _check_bits(result.bit_length())
    return result


def safe_str(*args: Any) -> str:
    if args:
        _check_length(text_size(args[0], MAX_LENGTH))
    return str(*args)


def safe_round(number: Any, ndigits: Any = None) -> Any:
    if isinstance(ndigits, int) and abs(ndigits) > MAX_ROUND_DIGITS:
        raise LimitExceededError(f"round() takes at most {MAX_ROUND_DIGITS} digits")
    return round(number, ndigits)


def safe_sum(values: Any, start: Any = 0) -> Any:
    if not isinstance(start, int | float):
        raise TypeError("sum() adds numbers only")
    return sum(values, start)


def _contains(item: Any, container: Any) -> bool:
    return item in container


def _not_contains(item: Any, container: Any) -> bool:
    return item not in container


def _is(left: Any, right: Any) -> bool:
    return left is right


def _is_not(left: Any, right: Any) -> bool:
    return left is not right


OPERATORS: dict[type[ast.AST], Callable[..., Any]] = {
    ast.Add: safe_add,
    ast.Sub: op.sub,
    ast.Mult: safe_mult,
    ast.Div: op.truediv,
    ast.FloorDiv: op.floordiv,
    ast.Mod: op.mod,  # ``costs`` bounds string formatting before it gets here
    ast.Pow: safe_power,
    ast.LShift: safe_lshift,
    ast.RShift: op.rshift,
    ast.BitOr: op.or_,
    ast.BitXor: op.xor,
    ast.BitAnd: op.and_,
    ast.UAdd: op.pos,
    ast.USub: op.neg,
    ast.Not: op.not_,
    ast.Invert: op.invert,
    ast.Eq: op.eq,
    ast.NotEq: op.ne,
    ast.Lt: op.lt,
    ast.LtE: op.le,
    ast.Gt: op.gt,
    ast.GtE: op.ge,
    ast.In: _contains,
    ast.NotIn: _not_contains,
    ast.Is: _is,
    ast.IsNot: _is_not,
}
"""The bounded operators, uncharged: ``costs.Meter`` wraps each with what it costs."""


# results as JSON --------------------------------------------------------------------------------

WALK_UNITS = 3
"""Units per value that a walk in Python visits (measuring, converting): about 150 ns."""
CHARS_PER_UNIT = 64
"""Characters that C code scans, copies or encodes for one unit."""


def walk_cost(size: int, seen: int) -> int:
    """The units that ``json_size`` spent to find ``size`` bytes in ``seen`` values."""
    return WALK_UNITS * seen + size // CHARS_PER_UNIT


def to_json(value: Any, budget: Budget | None = None) -> Any:
    """``value`` as plain JSON data: tuples and dict views become lists, sets sorted lists.

    With a ``budget``, the values that the conversion would create are counted first (shared
    references counted as often as they occur, without recursion) and paid for, so a small
    value that expands to a huge one costs its expansion before anything is built.
    Raises TypeError or ValueError for anything else (functions, non-string keys, NaN...), and
    ``LimitExceededError`` for an integer over ``MAX_INT_BITS`` or a budget spent.
    """
    if budget is not None and type(value) not in _JSON_SCALARS:
        left = max(budget.left, 0)
        size, seen = json_size(value, left * CHARS_PER_UNIT, left // (2 * WALK_UNITS) + 1)
        budget.spend(walk_cost(size, seen) + WALK_UNITS * seen)  # measured, then converted
    return _convert(value)


def _convert(value: Any) -> Any:
    kind = type(value)
    if kind is int:
        _check_bits(value.bit_length())  # past 4,300 digits, json.dumps refuses an int
        return value
    if kind in _JSON_SCALARS:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(f"the result {value} is not a JSON number")
        return value
    if kind is dict:
        return {_json_key(key): _convert(item) for key, item in value.items()}
    if kind in _LISTS:
        return [_convert(item) for item in value]
    if kind is set or kind is frozenset:
        return [_convert(item) for item in sorted(value)]
    raise TypeError(f"the result, a {kind.__name__}, is not a JSON value")


def _json_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"the result has a key {key!r} that is not a string")
    return key
