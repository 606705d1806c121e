"""The expression language of ``<condition>`` and ``<assign>``: safe, bounded, parsed once.

Definition text is untrusted, so an expression is Python syntax restricted twice over. At parse
time (``compile_expression``) the syntax tree must use only whitelisted node types, the names
``context`` and ``event``, whitelisted functions and, as the callee of a call only, whitelisted
non-mutating methods. At run time simpleeval evaluates the stored tree with operators and
functions that refuse oversized results (huge ints, strings, lists) before computing them, and
every node, operator, function and method pays what it costs (``costs``) from a ``Budget``: the
engine passes the one budget of its step, so that all the expressions of a step share it.

``Expression.evaluate`` raises ``ExpressionError`` for every failure and returns a JSON value, so
the engine can store the result in its state as it is. After a failure, ``budget.spent`` tells
whether the budget ran out.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from simpleeval import EvalWithCompoundTypes, NameNotDefined

from bureaucrat.definition import costs, limits
from bureaucrat.definition.limits import Budget
from bureaucrat.errors import DefinitionError, ExpressionError

MAX_SOURCE_LENGTH = 10_000
MAX_TREE_DEPTH = 100

NAMES = frozenset({"context", "event"})
FUNCTIONS: Mapping[str, Any] = {
    "len": len,
    "int": limits.safe_int,
    "float": float,
    "str": limits.safe_str,
    "bool": bool,
    "abs": abs,
    "min": min,
    "max": max,
    "round": limits.safe_round,
    "sorted": sorted,
    "sum": limits.safe_sum,
    "any": any,
    "all": all,
    "list": list,
    "dict": dict,
}
_STR_METHODS = {"startswith", "endswith", "lower", "upper", "strip", "lstrip", "rstrip"}
_STR_METHODS |= {"split", "count", "index", "find"}
ALLOWED_ATTRS: Mapping[type, frozenset[str]] = {
    dict: frozenset({"get", "keys", "values", "items"}),
    str: frozenset(_STR_METHODS),
    list: frozenset({"count", "index"}),
    tuple: frozenset({"count", "index"}),
}
METHODS = frozenset().union(*ALLOWED_ATTRS.values())

_OPERATORS: tuple[type[ast.AST], ...] = (
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.Pow,
)
_OPERATORS += (ast.LShift, ast.RShift, ast.BitOr, ast.BitXor, ast.BitAnd)
_OPERATORS += (ast.UAdd, ast.USub, ast.Not, ast.Invert, ast.And, ast.Or)
_OPERATORS += (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_OPERATORS += (ast.Is, ast.IsNot, ast.In, ast.NotIn)
_NODES: frozenset[type[ast.AST]] = frozenset(
    {ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call, ast.keyword, ast.Name, ast.Load}
    | {ast.Constant, ast.Subscript, ast.Slice, ast.List, ast.Tuple, ast.Dict, ast.Set, ast.IfExp}
    | {ast.Attribute, *_OPERATORS}
)
_NODE_WORDS = {
    "Lambda": "lambda",
    "NamedExpr": "assignment (:=)",
    "Starred": "unpacking (*)",
    "JoinedStr": "f-strings",
    "ListComp": "comprehensions",
    "SetComp": "comprehensions",
    "DictComp": "comprehensions",
    "GeneratorExp": "generator expressions",
    "MatMult": "the @ operator",
}


@dataclass(frozen=True, slots=True)
class Expression:
    """A checked expression: its (stripped) source, its XML line and its parsed tree."""

    source: str
    line: int
    tree: ast.expr = field(compare=False, repr=False)

    def evaluate(self, names: Mapping[str, Any], budget: Budget | None = None) -> Any:
        """The JSON value of the expression; ``ExpressionError`` on any failure.

        The work is paid from ``budget`` (None: a budget of ``limits.DEFAULT_BUDGET`` units
        for this evaluation alone), the conversion of the result to JSON included."""
        budget = Budget(limits.DEFAULT_BUDGET) if budget is None else budget
        value = self._run(names, budget)
        try:
            return limits.to_json(value, budget)
        except Exception as error:
            raise self._failure(error) from None

    def holds(self, names: Mapping[str, Any], budget: Budget | None = None) -> bool:
        """Whether the expression's value is truthy; ``ExpressionError`` on any failure."""
        budget = Budget(limits.DEFAULT_BUDGET) if budget is None else budget
        return bool(self._run(names, budget))

    def _run(self, names: Mapping[str, Any], budget: Budget) -> Any:
        try:
            evaluator = _IDLE.pop()
        except IndexError:
            evaluator = _Evaluator()
        evaluator.names = names
        evaluator.meter.budget = budget
        try:
            return evaluator.eval(self.source, previously_parsed=self.tree)
        except Exception as error:
            raise self._failure(error) from None
        finally:
            evaluator.names = _NO_NAMES
            _IDLE.append(evaluator)

    def _failure(self, error: Exception) -> ExpressionError:
        return ExpressionError(f"expression {_quote(self.source)} failed: {_explain(error)}")


def compile_expression(source: str, line: int) -> Expression:
    """Parse and check ``source``; ``DefinitionError`` at ``line`` if it is not acceptable."""
    text = source.strip()
    try:
        tree = _parse(text)
        _check_tree(tree)
    except _RefusedError as refused:
        raise DefinitionError(f"expression {_quote(text)}: {refused}", line) from None
    return Expression(text, line, tree)


def truthy(conditions: Sequence[Expression], names: Mapping[str, Any]) -> bool:
    """Whether any of ``conditions`` holds; True when there are none."""
    if not conditions:
        return True
    return any(condition.holds(names) for condition in conditions)


class _RefusedError(Exception):
    """An expression failed a parse-time check (the message says why)."""


def _parse(text: str) -> ast.expr:
    if not text:
        raise _RefusedError("the expression is empty")
    if len(text) > MAX_SOURCE_LENGTH:
        raise _RefusedError(f"longer than {MAX_SOURCE_LENGTH} characters")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(text, mode="eval").body
    except SyntaxError as error:
        if error.msg.startswith("Exceeds the limit"):  # a decimal literal over 4300 digits
            raise _RefusedError("integer literal too long") from None
        raise _RefusedError(f"syntax error: {error.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise _RefusedError("the expression cannot be parsed (too complex)") from None


def _check_tree(root: ast.expr) -> None:
    """Walk the tree without recursion, refusing anything outside the whitelist."""
    stack: list[tuple[ast.AST, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_TREE_DEPTH:
            raise _RefusedError(f"nested more than {MAX_TREE_DEPTH} levels deep")
        if type(node) not in _NODES:
            name = type(node).__name__
            raise _RefusedError(f"{_NODE_WORDS.get(name, name)} not allowed")
        stack.extend((child, depth + 1) for child in _checked_children(node))


def _checked_children(node: ast.AST) -> list[ast.AST]:
    """Check ``node`` itself and return the children still to check."""
    if isinstance(node, ast.Name):
        _check_name(node.id, called=False)
    elif isinstance(node, ast.Attribute):
        raise _RefusedError(f"attribute access (.{node.attr}) not allowed; write context[...]")
    elif isinstance(node, ast.Call):
        return _checked_call(node)
    elif isinstance(node, ast.Constant):
        _check_constant(node.value)
    elif _unpacks(node):
        raise _RefusedError("unpacking (**) not allowed")
    return list(ast.iter_child_nodes(node))


def _unpacks(node: ast.AST) -> bool:
    if isinstance(node, ast.Dict):
        return any(key is None for key in node.keys)
    return isinstance(node, ast.keyword) and node.arg is None


def _checked_call(node: ast.Call) -> list[ast.AST]:
    """Check the callee of ``node``: a whitelisted function, or a whitelisted method. A method's
    receiver is returned with the arguments, to be checked like any other expression, so that
    ``().__class__.__bases__.count(1)`` or ``[c for c in "ab"].count("a")`` is refused here,
    when the definition is read, and not left to the evaluator."""
    callee = node.func
    arguments: list[ast.AST] = [*node.args, *node.keywords]
    if isinstance(callee, ast.Name):
        _check_name(callee.id, called=True)
        return arguments
    if isinstance(callee, ast.Attribute):
        if callee.attr not in METHODS:
            raise _RefusedError(f"method .{callee.attr}() not allowed")
        return [callee.value, *arguments]
    raise _RefusedError("only functions and methods can be called")


def _check_name(name: str, *, called: bool) -> None:
    if name.startswith("_"):
        raise _RefusedError(f"name {name} not allowed")
    if called and name not in FUNCTIONS:
        raise _RefusedError(f"unknown function {name}()")
    if not called and name in FUNCTIONS:
        raise _RefusedError(f"{name} can only be called, as in {name}(...)")
    if not called and name not in NAMES:
        raise _RefusedError(f"unknown name {name} (expressions can read context and event)")


def _check_constant(value: object) -> None:
    if isinstance(value, int) and limits.too_many_bits(value):
        raise _RefusedError(f"integer literal over {limits.MAX_INT_BITS} bits")
    if not isinstance(value, str | int | float | None):
        raise _RefusedError(f"{type(value).__name__} literals not allowed")


def _quote(source: str) -> str:
    shown = source if len(source) <= 80 else source[:77] + "..."
    return repr(shown)


def _explain(error: Exception) -> str:
    if isinstance(error, limits.LimitExceededError):
        return str(error)
    if isinstance(error, NameNotDefined):
        return f"name {error.name} is not defined here"
    if isinstance(error, KeyError):
        return f"key {error.args[0]!r} not found" if error.args else "key not found"
    if isinstance(error, IndexError):
        return f"index out of range ({error})"
    if isinstance(error, RecursionError):
        return "nested too deeply"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _Evaluator(EvalWithCompoundTypes):  # type: ignore[misc]
    """simpleeval with bounded, metered operators and our functions; the tree is checked
    already. Every node evaluated costs ``costs.NODE_UNITS``; calls and slices cost more."""

    def __init__(self) -> None:
        self.meter = costs.Meter()
        attrs = {kind: set(names) for kind, names in ALLOWED_ATTRS.items()}
        super().__init__(self.meter.operators(), {}, _NO_NAMES, attrs)
        # EvalWithCompoundTypes adds the builtins list, tuple, dict and set: ours replace them.
        self.functions = self.meter.functions(dict(FUNCTIONS))
        self.ATTR_INDEX_FALLBACK = False

    def _eval(self, node: ast.AST) -> Any:
        # simpleeval's version also walks every intermediate value looking for forbidden
        # callables, which costs O(size of the context) per name; ``_check_tree`` already
        # guarantees that only whitelisted functions and methods can be reached.
        budget = self.meter.budget
        budget.left -= costs.NODE_UNITS
        if budget.left < 0:
            budget.spend(0)
        return self.nodes[type(node)](node)

    def _eval_call(self, node: ast.Call) -> Any:
        callee = node.func
        if not isinstance(callee, ast.Attribute):
            return super()._eval_call(node)
        method = self._eval(callee)
        args = [self._eval(argument) for argument in node.args]
        keywords = dict(self._eval(keyword) for keyword in node.keywords)
        budget = self.meter.budget
        budget.spend(costs.method_cost(method.__self__, callee.attr, args, budget.left + 1))
        return method(*args, **keywords)

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        value = super()._eval_subscript(node)
        if isinstance(node.slice, ast.Slice):
            self.meter.charge(costs.length(value))
        return value


_NO_NAMES: Mapping[str, Any] = {}
_IDLE: list[_Evaluator] = []
"""Evaluators not in use. An evaluator holds the names of one evaluation, so each evaluation
takes one for itself (list.pop and list.append are atomic) and gives it back when done; building
one costs several times more than an evaluation."""
