"""What each operation of the expression language costs, in the work units of a ``Budget``.

A ``Meter`` holds the budget of the evaluation in progress and wraps the bounded operators and
functions of ``limits``: each pays an upper estimate of its work before it runs, so a step that
would take seconds of CPU stops within its budget instead. The estimates look at sizes only
(``len``, and a walk of nested values bounded by what is left of the budget), never at timings.

    every evaluated node                      4
    building, copying, scanning an element    1 per element, 1 per 64 characters scanned
    comparing containers, ``in`` on a list    every nested element the comparison may touch
    sorting                                   the elements touched times log2(n) / 4
    integers past 128 bits                    by their 64-bit limbs (multiplying: their product)
    ``str()`` and ``%``                       what they read plus what they write
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import Any

from bureaucrat.definition import limits
from bureaucrat.definition.formatting import format_percent
from bureaucrat.definition.limits import Budget

NODE_UNITS = 4
CHARS_PER_UNIT = limits.CHARS_PER_UNIT
_NUMBERS = frozenset({int, float, bool, type(None)})
_FLAT = frozenset({float, bool, type(None)})
_INTS = frozenset({int, bool})
_VIEWS: tuple[type, ...] = (type({}.keys()), type({}.values()), type({}.items()))
_CONTAINERS = frozenset({list, tuple, set, frozenset, dict, *_VIEWS})
_HASHED = frozenset({dict, set, frozenset, _VIEWS[0]})

Cost = Callable[..., int]


def length(value: Any) -> int:
    """Units to build or scan ``value`` once, top level only."""
    kind = type(value)
    if kind is str:
        return len(value) // CHARS_PER_UNIT
    if kind in _CONTAINERS:
        return len(value)
    return 0


def touch(value: Any, bound: int) -> int:
    """Units to reach every element of ``value``, nested ones included (as a comparison, a
    sort or ``str()`` may); counts no further than about ``bound``.

    Flat lists of numbers or of strings are sized at C speed; anything nested is walked.
    """
    kind = type(value)
    if kind is str:
        return len(value) // CHARS_PER_UNIT
    if kind is int:
        return _digits(value)
    if kind not in _CONTAINERS:
        return 0
    items = value.values() if kind is dict else value
    kinds = set(map(type, items))
    if kinds <= _FLAT:
        return len(value)
    if kinds <= _INTS:
        return len(value) * (1 + _digits(max(map(abs, items), default=0)))
    if kinds == {str}:
        return len(value) + sum(map(len, items)) // CHARS_PER_UNIT
    return _walk(value, bound)


def _walk(value: Any, bound: int) -> int:
    """``WALK_UNITS`` per value walked (Python's loop), plus what each value itself weighs;
    the same bounded walk as the size estimates of ``limits``."""
    return limits.measure(value, bound, _units_of)


def _units_of(item: Any) -> int:
    kind = type(item)
    if kind is str:
        return limits.WALK_UNITS + len(item) // CHARS_PER_UNIT
    if kind is int:
        return limits.WALK_UNITS + _digits(item)
    return limits.WALK_UNITS


def _digits(value: int) -> int:
    """Units to turn an integer into decimal digits (quadratic past 128 bits), or compare it."""
    limbs = value.bit_length() >> 6
    return 0 if limbs < 2 else limbs * limbs // 12


def _int_product(left: int, right: int) -> int:
    a, b = left.bit_length() >> 6, right.bit_length() >> 6
    return 0 if a < 2 and b < 2 else (a + 1) * (b + 1) // 20 + 1


# operators --------------------------------------------------------------------------------------


def _free(bound: int, *operands: Any) -> int:
    return 0


def _sum_or_concat(bound: int, left: Any, right: Any) -> int:
    if type(left) is int and type(right) is int:
        return (left.bit_length() + right.bit_length()) >> 9
    return length(left) + length(right)


def _multiply(bound: int, left: Any, right: Any) -> int:
    if type(left) is int and type(right) is int:
        return _int_product(left, right)
    times, sequence = (right, left) if type(right) is int else (left, right)
    if type(times) is int and times > 0 and hasattr(sequence, "__len__"):
        size = len(sequence) * times
        return min(size // CHARS_PER_UNIT if type(sequence) is str else size, limits.MAX_LENGTH)
    return 0


def _arithmetic(bound: int, left: Any, right: Any) -> int:
    if type(left) is int and type(right) is int:
        return _int_product(left, right)
    return length(left) + length(right)


def _power(bound: int, base: Any, exponent: Any) -> int:
    if type(base) is int and type(exponent) is int and exponent > 1 and abs(base) > 1:
        bits = min(exponent * math.log2(abs(base)), limits.MAX_INT_BITS + 1)
        limbs = int(bits) >> 6
        return (limbs + 1) * (limbs + 1) // 20 + 1
    return 0


def _shift(bound: int, left: Any, right: Any) -> int:
    if type(left) is int and type(right) is int and right > 0:
        return min(left.bit_length() + right, limits.MAX_INT_BITS) >> 9
    return 0


def _compare(bound: int, left: Any, right: Any) -> int:
    kinds = type(left), type(right)
    if kinds[0] in _NUMBERS and kinds[1] in _NUMBERS:
        return 0
    if kinds[0] is str and kinds[1] is str:
        return min(len(left), len(right)) // CHARS_PER_UNIT
    first = touch(left, bound)
    return first + touch(right, first)


def _contains(bound: int, item: Any, container: Any) -> int:
    kind = type(container)
    if kind is str:
        needle = len(item) if type(item) is str else 1
        return len(container) * min(needle, 100) // CHARS_PER_UNIT + 1
    if kind in _HASHED:
        return length(item)
    return touch(container, bound)


_OPERATOR_COSTS: dict[type[ast.AST], Cost] = {
    ast.Add: _sum_or_concat,
    ast.Sub: _arithmetic,
    ast.Mult: _multiply,
    ast.Div: _arithmetic,
    ast.FloorDiv: _arithmetic,
    ast.Mod: _arithmetic,
    ast.Pow: _power,
    ast.LShift: _shift,
    ast.RShift: _free,
    ast.BitOr: _arithmetic,
    ast.BitXor: _arithmetic,
    ast.BitAnd: _arithmetic,
    ast.Eq: _compare,
    ast.NotEq: _compare,
    ast.Lt: _compare,
    ast.LtE: _compare,
    ast.Gt: _compare,
    ast.GtE: _compare,
    ast.In: _contains,
    ast.NotIn: _contains,
}


# functions and methods --------------------------------------------------------------------------


def _argument(bound: int, *args: Any, **kwargs: Any) -> int:
    return touch(args[0] if len(args) == 1 else args, bound)


def _scan(bound: int, *args: Any, **kwargs: Any) -> int:
    return length(args[0]) if args else 0


def _iterate(bound: int, *args: Any, **kwargs: Any) -> int:
    """One unit per element the function goes through, characters of a string included."""
    return len(args[0]) if args and hasattr(args[0], "__len__") else 0


def _int(bound: int, *args: Any, **kwargs: Any) -> int:
    if args and type(args[0]) is str:
        size = len(args[0])
        return size * size // 10_000 + size // CHARS_PER_UNIT
    return 0


def _str(bound: int, *args: Any, **kwargs: Any) -> int:
    if not args or type(args[0]) is str:
        return 0
    return 3 * touch(args[0], bound) // 2


def _sorted(bound: int, *args: Any, **kwargs: Any) -> int:
    if not args:
        return 0
    count = len(args[0]) if hasattr(args[0], "__len__") else 1
    return touch(args[0], bound) * max(1, count.bit_length()) // 4 + count


def _dict(bound: int, *args: Any, **kwargs: Any) -> int:
    return 2 * length(args[0]) if args else 0


_FUNCTION_COSTS: dict[str, Cost] = {
    "int": _int,
    "float": _scan,
    "str": _str,
    "min": _argument,
    "max": _argument,
    "sorted": _sorted,
    "sum": _argument,
    "any": _iterate,
    "all": _iterate,
    "list": _iterate,
    "dict": _dict,
}


def method_cost(owner: Any, name: str, args: list[Any], bound: int) -> int:
    """Units that ``owner.name(*args)`` costs (only whitelisted methods are reachable)."""
    kind = type(owner)
    if kind is str:
        size = len(owner) // CHARS_PER_UNIT
        first = args[0] if args else None
        if name in ("count", "find", "index"):
            needle = len(first) if type(first) is str else 1
            return len(owner) * min(needle, 100) // CHARS_PER_UNIT + 1
        if name == "split":
            pieces = owner.count(first) + 1 if type(first) is str and first else len(owner) // 2
            return size + pieces + 1
        if name in ("startswith", "endswith"):
            return touch(first, bound) + 1
        return size + 1
    if kind is list or kind is tuple:
        return touch(owner, bound)
    return 0


class Meter:
    """The budget that the evaluation in progress spends, and the operators and functions that
    charge it. An evaluator owns one meter and points it at each evaluation's budget."""

    def __init__(self) -> None:
        self.budget = Budget(limits.DEFAULT_BUDGET)

    def charge(self, units: int) -> None:
        self.budget.spend(units)

    def operators(self) -> dict[type[ast.AST], Callable[..., Any]]:
        charged = {
            kind: self._charged(function, _OPERATOR_COSTS.get(kind, _free))
            for kind, function in limits.OPERATORS.items()
        }
        charged[ast.Mod] = self._modulo
        return charged

    def functions(self, plain: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
        return {
            name: self._charged(function, _FUNCTION_COSTS.get(name, _free))
            for name, function in plain.items()
        }

    def _charged(self, function: Callable[..., Any], cost: Cost) -> Callable[..., Any]:
        if cost is _free:
            return function

        def charged(*args: Any, **kwargs: Any) -> Any:
            budget = self.budget
            budget.spend(cost(budget.left + 1, *args, **kwargs))
            return function(*args, **kwargs)

        return charged

    def _modulo(self, left: Any, right: Any) -> Any:
        if type(left) is str:
            return format_percent(left, right, self.budget)
        self.budget.spend(_arithmetic(self.budget.left + 1, left, right))
        return left % right
