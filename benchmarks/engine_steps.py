"""Engine steps per second, and whether a step's cost depends on the size of the definition.

Drives the pure engine directly (no runner, no I/O): each measured step is one participant
response that completes an action and dispatches the next one. Prints steps per second for
sequences of 10, 100 and 1,000 actions and for an ``all`` of 100 branches, with each figure's
cost per step as a ratio to the 10-action sequence (the target: 1,000 actions within 2x).

    .venv/bin/python benchmarks/engine_steps.py [--rounds N]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bureaucrat.definition import Definition, parse_definition
from bureaucrat.engine import commands as cmd
from bureaucrat.engine import events, step

CONTEXT = """<context>
  <property name="customer" type="str">ACME</property>
  <property name="amount" type="float">12.5</property>
  <property name="items" type="json">[1, 2, 3]</property>
</context>"""


def sequence(n: int) -> str:
    actions = "\n".join(f'  <action participant="p{i % 7}"/>' for i in range(n))
    return f"<process>{CONTEXT}\n{actions}\n</process>"


def parallel(n: int) -> str:
    actions = "\n".join(f'    <action participant="p{i % 7}"/>' for i in range(n))
    return f"<process>{CONTEXT}\n  <all>\n{actions}\n  </all>\n</process>"


def run_once(definition: Definition) -> tuple[int, float]:
    """Run one instance to completion; return (response steps, seconds spent in them)."""
    result = step(definition, None, events.Start("bench"), 0.0)
    state = result.state
    pending: list[dict[str, Any]] = [
        c.message for c in result.commands if isinstance(c, cmd.DispatchWorkitem)
    ]
    steps, spent = 0, 0.0
    while pending:
        message = pending.pop(0)
        response = events.ParticipantResponse(message)
        began = time.perf_counter()
        result = step(definition, state, response, 1.0)
        spent += time.perf_counter() - began
        steps += 1
        state = result.state
        pending.extend(c.message for c in result.commands if isinstance(c, cmd.DispatchWorkitem))
    assert state["status"] == "completed", state["status"]
    return steps, spent


def measure(source: str, min_steps: int) -> float:
    """Seconds per step, the best of a few runs of at least ``min_steps`` steps each."""
    definition = parse_definition(source)
    best = float("inf")
    for _ in range(5):
        steps, spent = 0, 0.0
        while steps < min_steps:
            more, seconds = run_once(definition)
            steps += more
            spent += seconds
        best = min(best, spent / steps)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3000, help="steps per measurement")
    args = parser.parse_args()
    cases = [
        ("sequence of 10 actions", sequence(10)),
        ("sequence of 100 actions", sequence(100)),
        ("sequence of 1,000 actions", sequence(1000)),
        ("all of 100 branches", parallel(100)),
    ]
    baseline = None
    print(f"{'case':<28}{'steps/s':>12}{'us/step':>10}{'vs 10':>8}")
    for name, source in cases:
        seconds = measure(source, args.rounds)
        baseline = baseline or seconds
        ratio = seconds / baseline
        print(f"{name:<28}{1 / seconds:>12,.0f}{seconds * 1e6:>10.1f}{ratio:>7.2f}x")


if __name__ == "__main__":
    main()
