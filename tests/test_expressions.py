"""The expression language: what works, what is refused at parse time, what fails at run time."""

from __future__ import annotations

import threading
import tracemalloc
from typing import Any

import pytest

from bureaucrat.definition import Expression, compile_expression, parse_definition, truthy
from bureaucrat.definition.limits import DEFAULT_BUDGET, Budget
from bureaucrat.errors import DefinitionError, ExpressionError

CONTEXT: dict[str, Any] = {
    "x": 3,
    "flag": True,
    "items": ["a", "b"],
    "tags": ["a", "urgent"],
    "a": {"b": 7},
    "done": False,
    "n": 4,
    "name": "Report.PDF",
    "big": [1] * 100_000,
}
NAMES: dict[str, Any] = {"context": CONTEXT, "event": {"ok": True, "size": 2}}
REFUSALS = (
    "integer result over",
    "result longer than",
    "round() takes at most",
    "budget of work is spent",
    "is not a JSON",
    "OverflowError",
)


def value(source: str, names: dict[str, Any] | None = None) -> Any:
    return compile_expression(source, 1).evaluate(NAMES if names is None else names)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('context["x"] > 0', True),
        ('context["flag"] is True', True),
        ("True", True),
        ('len(context["items"]) == 2', True),
        ('"a" in context["tags"]', True),
        ('event["ok"]', True),
        ('context.get("x", 0) + 1', 4),
        ('context.get("missing", 0) + 1', 1),
        ('context["a"]["b"]', 7),
        ('not context["done"]', True),
        ('context["n"] % 2 == 0', True),
        ('context["name"].lower().endswith(".pdf")', True),
        ('context["name"].split(".")', ["Report", "PDF"]),
        ('sorted(context["a"].keys())', ["b"]),
        ('context["items"][::-1]', ["b", "a"]),
        ('"yes" if context["x"] > 2 else "no"', "yes"),
        ('context["x"] in {1, 2, 3}', True),
        ("sum([1, 2.5]) + max(1, 2) - min([4, 3]) + abs(-1)", 3.5),
        ("round(2.675, 1)", 2.7),
        ('int("12") + float("0.5")', 12.5),
        ('str(3) + "!"', "3!"),
        ("str([1, 'a', None, 2.5])", "[1, 'a', None, 2.5]"),
        ("len(str(10 ** 3000))", 3001),
        ("len([2**63] * 100_000) + len([10**3000] * 30)", 100_030),
        ("sorted([3, 1, 2], reverse=True)", [3, 2, 1]),
        ("dict(a=1)", {"a": 1}),
        ('any([False, context["flag"]]) and all([1, 2])', True),
        ("list('ab')", ["a", "b"]),
        ("2 ** 10 + (1 << 3) - 7 // 2 + 7 / 2", 1024 + 8 - 3 + 3.5),
        ("-context['x'] + +1", -2),
        ("1 < context['x'] <= 3", True),
        ("(1,\n 2)", [1, 2]),
        ("  context['x']  ", 3),
        ("None", None),
    ],
)
def test_what_works(source: str, expected: Any) -> None:
    assert value(source) == expected


def test_results_are_json_values() -> None:
    assert value("(1, (2, 3))") == [1, [2, 3]]
    assert value("context['a'].items()") == [["b", 7]]
    assert value("{3, 1, 2}") == [1, 2, 3]
    assert value("{'k': (1,)}") == {"k": [1]}
    assert value("context['a']") is not CONTEXT["a"]


def test_an_expression_may_be_nested_100_levels_deep_and_no_more() -> None:
    assert compile_expression("-" * 99 + "1", 1).evaluate({}) == -1  # 100 levels
    with pytest.raises(DefinitionError, match="nested more than 100 levels deep"):
        compile_expression("-" * 100 + "1", 1)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ('__import__("os")', "name __import__ not allowed"),
        ("context.__class__", "attribute access (.__class__) not allowed"),
        ("().__class__.__bases__", "attribute access (.__bases__) not allowed"),
        ("context.__class__()", "method .__class__() not allowed"),
        ('context.pop("x")', "method .pop() not allowed"),
        ('"{0.__class__}".format(context)', "method .format() not allowed"),
        ("context.x", "attribute access (.x) not allowed"),
        ("open('/etc/passwd')", "unknown function open()"),
        ("rand()", "unknown function rand()"),
        ("randint(3)", "unknown function randint()"),
        ("eval('1')", "unknown function eval()"),
        ("len", "len can only be called"),
        ("os", "unknown name os"),
        ("_secret", "name _secret not allowed"),
        ("context['f']()", "only functions and methods can be called"),
        ("lambda: 1", "lambda not allowed"),
        ("[x for x in context]", "comprehensions not allowed"),
        ("{k: 1 for k in context}", "comprehensions not allowed"),
        ("sum(x for x in [1])", "generator expressions not allowed"),
        ("(y := 1)", "assignment (:=) not allowed"),
        ("[*context['items']]", "unpacking (*) not allowed"),
        ("{**context}", "unpacking (**) not allowed"),
        ("dict(**context)", "unpacking (**) not allowed"),
        ("f'{context}'", "f-strings not allowed"),
        ("b'x'", "bytes literals not allowed"),
        ("1j", "complex literals not allowed"),
        ("context['a'] @ 1", "the @ operator not allowed"),
        ("0x" + "f" * 3000, "integer literal over 10000 bits"),
        ("9" * 5000, "integer literal too long"),
        ("1 +\n 2", "syntax error"),
        ("x = 1", "syntax error"),
        ("import os", "syntax error"),
        ("", "the expression is empty"),
        ("   ", "the expression is empty"),
        ("1 + " * 2600 + "1", "longer than 10000 characters"),
        ("not " * 150 + "1", "nested more than 100 levels deep"),
        ("x" + "[0]" * 3000, "cannot be parsed"),
        ("(" * 300 + ")" * 300, "syntax error: too many nested parentheses"),
    ],
)
def test_refused_at_parse_time(source: str, reason: str) -> None:
    with pytest.raises(DefinitionError) as raised:
        compile_expression(source, 12)
    assert raised.value.line == 12
    assert str(raised.value).startswith("line 12: expression ")
    assert reason in raised.value.problem


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("().__class__.__bases__.count(1)", "attribute access (.__bases__) not allowed"),
        ("context.__class__.__name__.count('a')", "attribute access (.__name__) not allowed"),
        ("event.get('x').__class__.index(1)", "attribute access (.__class__) not allowed"),
        ("'a'.__class__.count('a')", "attribute access (.__class__) not allowed"),
        ('[c for c in "ab"].count("a")', "comprehensions not allowed"),
        ('{k: 1 for k in "ab"}.get("a")', "comprehensions not allowed"),
        ('(c for c in "ab").count("a")', "generator expressions not allowed"),
        ("_secret.count(1)", "name _secret not allowed"),
        ("__builtins__.get('eval')", "name __builtins__ not allowed"),
        ("len.count(1)", "len can only be called"),
        ("(lambda: 1).count(1)", "lambda not allowed"),
        ("(y := 'ab').count('a')", "assignment (:=) not allowed"),
        ("f'{context}'.count('a')", "f-strings not allowed"),
        ("b'ab'.count('a')", "bytes literals not allowed"),
        ("'ab'.strip().__len__()", "method .__len__() not allowed"),
        ("context.get('x').strip().__class__.count(1)", "attribute access (.__class__)"),
        ("'a'.count([c for c in 'a'])", "comprehensions not allowed"),
    ],
)
def test_a_method_call_receiver_is_checked_like_any_expression(source: str, reason: str) -> None:
    """The receiver of a whitelisted method is walked and checked at parse time: it cannot
    smuggle in attribute access, comprehensions or dunder names."""
    with pytest.raises(DefinitionError) as raised:
        compile_expression(source, 7)
    assert raised.value.line == 7
    assert reason in raised.value.problem


def test_a_definition_with_a_dunder_behind_a_method_receiver_is_refused_when_read() -> None:
    source = """<process>
  <assign property="x">().__class__.__bases__.count(1)</assign>
</process>"""
    with pytest.raises(DefinitionError) as raised:
        parse_definition(source)
    assert raised.value.line == 2
    assert "__bases__" in raised.value.problem


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('context["name"].strip().lower().startswith("report")', True),
        ('context.get("name", "").count("P")', 1),
        ('context["items"].count("a")', 1),
        ("[1, 2, 1].count(1)", 2),
        ("(1, 2).index(2)", 1),
        ('"a,b".split(",").count("b")', 1),
        ('{"k": [1]}.get("k").count(1)', 1),
        ('context["a"].get("b")', 7),
        ('event.get("size")', 2),
    ],
)
def test_method_calls_on_legitimate_receivers_still_work(source: str, expected: Any) -> None:
    assert value(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "9**9**9",
        "10**10**6",
        "2**100000",
        '"a"*10**9',
        "10**9 * 'a'",
        "[1]*10**9",
        "(1,)*10**9",
        "2**100000 * 2**100000",
        "2**9000 * 2**9000",
        "1 << 10**9",
        "round(5, -10**9)",
        "[[1]*100000]*100000",
        "[context['big']] * 2",
        "context['big'] + context['big']",
        "'ab' * 60000",
        "sum([[1]*1000]*1000, [])",
        "'%*d' % (10**9, 1)",
        "int('9' * 4000)",
        "float('nan')",
        "(-8) ** 0.5",
        "10.0 ** 400",
        "str([10**3000] * 99999)",
        "[10**3000] * 99999",
        "[[2**9999] * 99] * 99",
        "(10**3000,) * 40",
        "str([str(10**3000)] * 99)",
        "str([context['big'], context['big']])",
        "str(context['big'] + [0.5] * 99)",
        "str(dict(x=context['big']).items())",
    ],
)
def test_hostile_expressions_are_refused_before_they_build_their_result(source: str) -> None:
    """Each is refused by a bound (a size, the budget, or JSON), with a few megabytes at most
    allocated on the way: never the gigabytes or hours it asks for. What each refusal costs in
    time is printed by ``benchmarks/expressions.py``."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        with pytest.raises(ExpressionError) as raised:
            value(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not tracing:
            tracemalloc.stop()
    assert source[:20] in str(raised.value)
    assert any(refusal in str(raised.value) for refusal in REFUSALS), raised.value
    assert peak < 8_000_000


@pytest.mark.parametrize(
    ("source", "names", "reason"),
    [
        ('context["nope"]', NAMES, "key 'nope' not found"),
        ('event["ok"]', {"context": {}}, "name event is not defined here"),
        ("context['items'][5]", NAMES, "index out of range"),
        ("1 / 0", NAMES, "ZeroDivisionError"),
        ("'a' < 1", NAMES, "TypeError"),
        ("int('x')", NAMES, "ValueError"),
        ("context['x'].lower()", NAMES, "not allowed on"),
        ("len(context['x'])", NAMES, "TypeError"),
        ("context['items'].index('zzz')", NAMES, "ValueError"),
        ("{1: 2}", NAMES, "key 1 that is not a string"),
        ("min()", NAMES, "TypeError"),
        ("context['x']", {"context": None}, "TypeError"),
        ("str(2 ** 9999 * 2 ** 9)", NAMES, "integer result over 10000 bits"),
        ("context['n'] + 1", {"context": {"n": int("9" * 4300)}}, "integer result over 10000"),
    ],
)
def test_run_time_failures_are_expression_errors(
    source: str, names: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ExpressionError) as raised:
        value(source, names)
    assert str(raised.value).startswith(f"expression {source!r} failed: ")
    assert reason in str(raised.value)


@pytest.mark.parametrize("length", [79, 80, 81, 200])
def test_an_error_quotes_its_expression_cut_to_80_characters(length: int) -> None:
    source = 'context["nope"]' + " " * (length - 17) + "+1"
    assert len(source) == length
    with pytest.raises(ExpressionError) as raised:
        value(source, NAMES)
    shown = source if length <= 80 else source[:77] + "..."
    assert str(raised.value) == f"expression {shown!r} failed: key 'nope' not found"


def test_comparing_values_nested_past_pythons_stack_fails_saying_so() -> None:
    deep: list[Any] = []
    other: list[Any] = []
    for nested in (deep, other):
        for _ in range(100_000):
            nested.append([])
            nested = nested[0]
    with pytest.raises(ExpressionError) as raised:
        value('context["a"] == context["b"]', {"context": {"a": deep, "b": other}})
    assert str(raised.value).endswith("failed: nested too deeply")


def test_truthy_means_any_condition_holds() -> None:
    yes = compile_expression("context['x'] > 0", 1)
    no = compile_expression("context['done']", 2)
    assert truthy([], NAMES) is True
    assert truthy([no, yes], NAMES) is True
    assert truthy([no], NAMES) is False
    assert truthy([compile_expression("context['items']", 3)], NAMES) is True


def test_truthy_raises_expression_errors() -> None:
    broken = compile_expression("context['nope']", 1)
    with pytest.raises(ExpressionError):
        truthy([broken], NAMES)


def test_expression_is_a_frozen_value() -> None:
    first = compile_expression(" context['x'] ", 4)
    assert first == compile_expression("context['x']", 4)
    assert first.source == "context['x']"
    assert first.line == 4
    assert hash(first) == hash(Expression("context['x']", 4, first.tree))
    with pytest.raises(AttributeError):
        first.line = 5  # type: ignore[misc]


def test_a_plain_condition_costs_a_few_dozen_units_of_the_budget() -> None:
    """So a step's budget holds hundreds of thousands of ordinary conditions; the time one
    evaluation takes is printed by ``benchmarks/expressions.py``."""
    expression = compile_expression('context["x"] > 0 and "a" in context["tags"]', 1)
    budget = Budget(DEFAULT_BUDGET)
    assert expression.evaluate(NAMES, budget) is True
    assert 0 < DEFAULT_BUDGET - budget.left <= 100


def test_evaluation_is_safe_across_threads() -> None:
    expression = compile_expression('context["n"] * 2', 1)
    results: list[Any] = []

    def run(number: int) -> None:
        names = {"context": {"n": number}}
        results.extend(expression.evaluate(names) == number * 2 for _ in range(500))

    threads = [threading.Thread(target=run, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 4000


# formatting and budgets --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('"%s-%05d %.2f %%" % ("a", 42, 3.14159)', "a-00042 3.14 %"),
        ('"%(x)s of %(n)d" % context', "3 of 4"),
        ('"%r|%-4s|%x" % ("a", "b", 255)', "'a'|b   |ff"),
        ('"%s" % [1, 2]', "[1, 2]"),
        ('"%c%c" % (72, "i")', "Hi"),
        ("'%*d' % (5, 1)", "    1"),
    ],
)
def test_percent_formatting_works(source: str, expected: str) -> None:
    assert value(source) == expected


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("'%*d' % (10**6, 1)", "result longer than 100000"),
        ("'%.200000f' % 1.0", "result longer than 100000"),
        ("'%s%s' % (context['big'], context['big'])", "result longer than 100000"),
        ("'%s%s%s' % ('a' * 50000, 'b' * 50000, 'c' * 50000)", "result longer than 100000"),
        ("'%z' % 1", "unsupported format character"),
        ("'%s %s' % (1,)", "not enough arguments"),
    ],
)
def test_percent_formatting_is_bounded(source: str, reason: str) -> None:
    with pytest.raises(ExpressionError) as raised:
        value(source)
    assert reason in str(raised.value)


BURNING = " and ".join(['sorted(list("ab"*50000))'] * 280)


@pytest.mark.slow  # spends the default budget on purpose: left out of make mutate
def test_an_expression_that_would_take_seconds_runs_out_of_budget() -> None:
    budget = Budget(DEFAULT_BUDGET)
    with pytest.raises(ExpressionError) as raised:
        compile_expression(BURNING, 1).evaluate(NAMES, budget)
    assert "budget" in str(raised.value)
    assert budget.spent


def test_evaluations_that_share_a_budget_spend_it_together() -> None:
    expression = compile_expression('len(sorted(list("ab" * 5000)))', 1)
    budget = Budget(200_000)
    spent = []
    while not budget.spent:
        left = budget.left
        try:
            assert expression.evaluate(NAMES, budget) == 10_000
        except ExpressionError:
            break
        spent.append(left - budget.left)
    assert 1 < len(spent) < 10  # each evaluation pays alike; the budget runs out
    assert len(set(spent)) == 1
    assert budget.spent


SMALL: dict[str, Any] = {"v": [[1], [2]], "w": [[1], [2]], "s": "a.b", "n": 3}
LARGE: dict[str, Any] = {
    "v": [[i] for i in range(10_000)],
    "w": [[i] for i in range(10_000)],
    "s": "a." * 10_000,
    "n": 2**4000,
}


@pytest.mark.parametrize(
    "source",
    [
        'context["v"] == context["w"]',
        '["z"] in context["v"]',
        'sorted(context["v"])[:1]',
        'max(context["v"])',
        'str(context["v"])[:3]',
        'len(context["s"].split("."))',
        'context["s"].count("b")',
        'context["v"][1:][:1]',
        '("%s" % [context["v"]])[:3]',
        'context["n"] * context["n"] > 0',
        'str(context["n"])[:3]',
    ],
)
def test_what_touches_more_costs_more(source: str) -> None:
    expression = compile_expression(source, 1)
    spent = []
    for names in (SMALL, LARGE):
        budget = Budget(DEFAULT_BUDGET)
        expression.evaluate({"context": names}, budget)
        spent.append(DEFAULT_BUDGET - budget.left)
    assert spent[1] > spent[0] + 100


@pytest.mark.slow  # builds a value of 65,536 references first: left out of make mutate
def test_a_result_built_of_shared_references_pays_its_expansion() -> None:
    names = {"context": {"x": [["abcdefgh"] * 2] * 2}}
    for _ in range(16):
        names = {"context": {"x": value('[context["x"], context["x"]]', names)}}
    budget = Budget(100_000)
    with pytest.raises(ExpressionError):
        compile_expression('[context["x"], context["x"]]', 1).evaluate(names, budget)
    assert budget.spent


LONG_NAMES: dict[str, Any] = {
    "context": {"long": "a" * 100_000, "needle": "b" * 100, "many": list(range(10_000))}
}


@pytest.mark.parametrize(
    ("source", "expected", "cost"),
    [
        # searching: the string's length times the needle's (up to 100 characters)
        ('context["long"].count(context["needle"])', 0, 156_283),
        # splitting: the string's length and the pieces
        ('len(context["long"].split(context["needle"]))', 1, 1_600),
        # a prefix: only the prefix is compared
        ('context["long"].startswith(context["needle"])', False, 34),
        # any other: the string's length
        ('context["long"].upper()[:1]', "A", 1_595),
        # a list's method: every element it may touch
        ('context["many"].count(5)', 1, 10_024),
        # keyword arguments reach the method
        ('"a.b.c".split(".", maxsplit=1)', ["a", "b.c"], 46),
    ],
)
def test_a_method_call_costs_by_its_method_and_what_it_is_given(
    source: str, expected: Any, cost: int
) -> None:
    budget = Budget(DEFAULT_BUDGET)
    assert compile_expression(source, 1).evaluate(LONG_NAMES, budget) == expected
    assert DEFAULT_BUDGET - budget.left == cost


# a fresh evaluator -------------------------------------------------------------------------------

FRESH_NAMES: dict[str, Any] = {"context": {"n": 5, "name": "Ab", "items": [1, 2, 2]}, "event": {}}
NOT_ALLOWED = "FeatureNotAvailable: Sorry,"


@pytest.mark.parametrize(
    ("source", "expected", "failure", "cost"),
    [
        ('context["n"] * 2 + 1', 11, None, 28),
        ('len(context["items"]) + max(1, 2)', 5, None, 34),
        ('context["name"].upper()', "AB", None, 21),
        ('context["items"].count(2)', 2, None, 27),
        ('sorted(context["items"])[1:]', [2, 2], None, 52),
        (
            'context["n"].upper()',
            None,
            f"{NOT_ALLOWED} attribute access not allowed on '<class 'int'>' "
            "(attempted to access `.upper`)",
            20,
        ),
        (
            'context["items"].keys()',
            None,
            f"{NOT_ALLOWED} '.keys' access not allowed on '<class 'list'>'",
            20,
        ),
        ("2 ** 10 ** 6", None, "integer result over 10000 bits", 1254),
        ('"x" * 10 ** 7', None, "the step's budget of work is spent", 100_021),
    ],
)
def test_an_evaluator_built_afresh_applies_every_rule_and_charge(
    source: str, expected: Any, failure: str | None, cost: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evaluators are kept for reuse; one built when none is idle (the first evaluation, or one
    per thread evaluating at once) has the same operators, functions, methods and costs."""
    monkeypatch.setattr("bureaucrat.definition.expressions._IDLE", [])
    budget = Budget(100_000)
    expression = compile_expression(source, 1)
    if failure is None:
        assert expression.evaluate(FRESH_NAMES, budget) == expected
    else:
        with pytest.raises(ExpressionError) as raised:
            expression.evaluate(FRESH_NAMES, budget)
        assert str(raised.value) == f"expression {source!r} failed: {failure}"
    assert 100_000 - budget.left == cost


def test_an_expression_may_be_exactly_as_long_as_the_limit() -> None:
    from bureaucrat.definition.expressions import MAX_SOURCE_LENGTH

    longest = "[" + "1," * 4_998 + "11]"
    assert len(longest) == MAX_SOURCE_LENGTH == 10_000
    assert len(compile_expression(longest, 1).evaluate({})) == 4_999
    with pytest.raises(DefinitionError, match="longer than 10000 characters"):
        compile_expression(longest.replace("11]", "111]"), 1)
