"""Bounded operators and functions for the expression evaluator, and the JSON check of results.

Python arithmetic on untrusted input can allocate gigabytes or run for hours (``9**9**9``,
``"a" * 10**9``, ``round(5, -10**9)``, ``str([10**3000] * 99999)``). Every operator and function
that can make its result much larger than its operands checks the size of the result first and
raises ``LimitExceededError``.
"""

from __future__ import annotations

import ast
import math
import operator as op
from collections.abc import Callable, ItemsView, KeysView, ValuesView
from typing import Any

MAX_INT_BITS = 10_000
MAX_LENGTH = 100_000
MAX_ROUND_DIGITS = 4_000
_SMALL_INT_BITS = 64

_REPEATABLE = (str, list, tuple)
_CONTAINERS = (list, tuple, set, frozenset, dict)
_JSON_SCALARS = frozenset({type(None), bool, int, str})
_VIEWS = (KeysView, ValuesView, ItemsView)
_LISTS = (list, tuple, *_VIEWS)


class LimitExceededError(ArithmeticError):
    """A result would exceed one of this module's limits."""


def too_many_bits(value: int) -> bool:
    return value.bit_length() > MAX_INT_BITS


def weight(value: object, budget: int) -> int:
    """Characters and elements in ``value``, nested ones included; stops counting past budget.

    Integers past 64 bits weigh their digits: ``[10**3000] * 99999`` is one list of references
    to one integer, but its JSON text in the instance state would be 300 MB.
    """
    return _measure(value, budget, _weight_of)


def text_size(value: object, budget: int) -> int:
    """About how many characters ``str(value)`` has (never many more); stops past budget.

    Unlike ``weight`` it counts the digits of every number and the punctuation between elements.
    """
    return _measure(value, budget, _text_size_of)


def _measure(value: object, budget: int, size_of: Callable[[object], int]) -> int:
    """The sum of ``size_of`` over ``value`` and everything nested in it, walked without
    recursion; stops as soon as the sum passes ``budget``."""
    total = 0
    stack = [value]
    while stack and total <= budget:
        item = stack.pop()
        total += size_of(item)
        if isinstance(item, _CONTAINERS + _VIEWS) and total <= budget:
            stack.extend(item.items() if isinstance(item, dict) else item)
    return total


def _weight_of(item: object) -> int:
    if isinstance(item, (str, *_CONTAINERS, *_VIEWS)):
        return len(item)
    if isinstance(item, int) and item.bit_length() > _SMALL_INT_BITS:
        return item.bit_length() * 3 // 10
    return 0


def _text_size_of(item: object) -> int:
    if isinstance(item, str):
        return len(item)
    if isinstance(item, int):
        return item.bit_length() * 3 // 10 + 1
    if isinstance(item, float):
        return 24
    if isinstance(item, _CONTAINERS + _VIEWS):
        return 2 * len(item)
    return 4


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
    if isinstance(left, _REPEATABLE) and isinstance(right, _REPEATABLE):
        # Concatenation shares the nested values: only the top level grows.
        _check_length(len(left) + len(right))
    return left + right


def safe_mult(left: Any, right: Any) -> Any:
    if isinstance(left, _REPEATABLE) and isinstance(right, int):
        _check_repeat(left, right)
    elif isinstance(right, _REPEATABLE) and isinstance(left, int):
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


def safe_mod(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        raise TypeError("string formatting with % is not supported")
    return left % right


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
    ast.Mod: safe_mod,
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


def to_json(value: Any) -> Any:
    """``value`` as plain JSON data: tuples and dict views become lists, sets sorted lists.

    Raises TypeError or ValueError for anything else (functions, non-string keys, NaN...), and
    ``LimitExceededError`` for an integer over ``MAX_INT_BITS``.
    """
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
    if isinstance(value, dict):
        return {_json_key(key): to_json(item) for key, item in value.items()}
    if isinstance(value, _LISTS):
        return [to_json(item) for item in value]
    if isinstance(value, set | frozenset):
        return [to_json(item) for item in sorted(value)]
    raise TypeError(f"the result, a {kind.__name__}, is not a JSON value")


def _json_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"the result has a key {key!r} that is not a string")
    return key
