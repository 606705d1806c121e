"""What evaluating an expression costs: an ordinary condition, and the refusal of hostile ones.

Prints, for the ordinary condition, the microseconds of one evaluation and the ratio to the same
test written as a Python function; for each hostile expression, the milliseconds until it is
refused and the reason. The tests check the outcomes (the refusal, the budget units, the memory);
the times are here, where a slow machine makes a slower number instead of a failed build.

    .venv/bin/python benchmarks/expressions.py [--runs N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from bureaucrat.definition import compile_expression
from bureaucrat.errors import ExpressionError

CONTEXT: dict[str, Any] = {"x": 3, "tags": ["a", "urgent"], "big": [1] * 100_000}
NAMES: dict[str, Any] = {"context": CONTEXT}
ORDINARY = 'context["x"] > 0 and "a" in context["tags"]'
HOSTILE = (
    "9**9**9",
    '"a"*10**9',
    "[1]*10**9",
    "1 << 10**9",
    "round(5, -10**9)",
    "[[1]*100000]*100000",
    "sum([[1]*1000]*1000, [])",
    "'%*d' % (10**9, 1)",
    "str([10**3000] * 99999)",
    "str([context['big'], context['big']])",
    "str(dict(x=context['big']).items())",
)


def per_call(function: Callable[[], object], runs: int) -> float:
    """Seconds per call of ``function``, the best of three rounds of ``runs`` calls."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(runs):
            function()
        best = min(best, (time.perf_counter() - started) / runs)
    return best


def refusal(source: str) -> tuple[float, str]:
    """Seconds until ``source`` is refused, and why."""
    expression = compile_expression(source, 1)
    started = time.perf_counter()
    try:
        expression.evaluate(NAMES)
    except ExpressionError as error:
        return time.perf_counter() - started, str(error).split(" failed: ", 1)[1]
    return time.perf_counter() - started, "NOT REFUSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000, help="evaluations per round")
    args = parser.parse_args()

    expression = compile_expression(ORDINARY, 1)
    ours = per_call(lambda: expression.evaluate(NAMES), args.runs)
    native = per_call(lambda: CONTEXT["x"] > 0 and "a" in CONTEXT["tags"], args.runs)
    print(f"ordinary condition  {ORDINARY}")
    print(f"  {ours * 1e6:8.2f} us per evaluation ({ours / native:.0f}x a Python function)")
    print("hostile expressions (time to refusal)")
    for source in HOSTILE:
        seconds, reason = refusal(source)
        print(f"  {seconds * 1e3:8.2f} ms  {source:<40} {reason}")


if __name__ == "__main__":
    main()
