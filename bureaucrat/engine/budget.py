"""What one step may cost: its budget of work, the size of the state it leaves, the bytes of the
messages it sends; and the fault it raises when it would go past one of them.

A definition is untrusted input. A 300-byte one can double a list in a loop until the state
takes gigabytes, or evaluate a condition that sorts a long list hundreds of times per round. So
every step carries ``Limits``: the engine stops at the activity that would pass one of them with
the fault ``LimitExceeded``, whose message names the limit, its value and the configuration key
that changes it. Handlers catch it like any fault.

How the state's size and the step's output are kept track of, cheaply, is in ``sizes``.
"""

from __future__ import annotations

from dataclasses import dataclass

from bureaucrat.definition.limits import DEFAULT_BUDGET, json_size

LIMIT_EXCEEDED = "LimitExceeded"
"""The fault code of every limit in this module."""

MAX_STARTS_PER_STEP = 100_000
"""Activities one step may start, whatever its budget (``Limits.max_starts``); past it the step
faults StepLimitError.

Each start also costs ``START_UNITS`` of the budget (``runtime``), so with the default budget an
endless loop of cheap activities meets this cap first (after about a second), and a loop of
costly ones runs out of budget first. The cap stays as a backstop when the budget is configured
much larger: it bounds the nodes, commands and journal records that one step can produce.
"""

MAX_ERROR_TEXT = 2_000
"""Characters of a participant's or subprocess's error text kept in faults and the state."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of one step; the daemon takes them from its configuration.

    ``step_budget``: work units for everything one step does (each expression node, operation
    and element it touches, each activity started, each size measured; see
    ``bureaucrat.definition.costs``). The default, twenty million units, is about a second of
    CPU at worst on a 2020s server core (usually much less: most operations cost more units
    than they take time), and fits a ``foreach`` over 10,000 elements four times over, or an
    expression that builds a 100,000-element list many times over.
    ``max_state_size``: bytes of the instance's state as JSON.
    ``max_step_output``: bytes of the messages one step sends (workitems, subprocess launches,
    notifications), contexts included.
    ``max_starts``: activities one step may start (``MAX_STARTS_PER_STEP``; not configured,
    only lowered by the tests that run into it).
    ``on_fault``: what a fault that nothing catches does where the definition does not say
    (``<process on-fault=...>``): ``fault`` ends the instance, ``suspend`` makes an incident.
    """

    step_budget: int = DEFAULT_BUDGET
    max_state_size: int = 1_000_000
    max_step_output: int = 10_000_000
    max_starts: int = MAX_STARTS_PER_STEP
    on_fault: str = "fault"


DEFAULT_LIMITS = Limits()


def over_budget(limits: Limits) -> str:
    return (
        f"step_budget exceeded: this step needed more than {limits.step_budget:,} units of "
        "work (expressions, activities started, values measured); a loop or an expression does "
        "too much in one step. The limit is the configuration key [bureaucrat] step_budget"
    )


def over_state_size(limits: Limits, size: int, what: str) -> str:
    return (
        f"max_state_size exceeded: {what} would make the instance's state at least {size:,} "
        f"bytes, over the limit of {limits.max_state_size:,}. The limit is the configuration key "
        "[bureaucrat] max_state_size"
    )


def over_output(limits: Limits, size: int, what: str) -> str:
    return (
        f"max_step_output exceeded: {what} would bring the messages of this step to at least "
        f"{size:,} bytes, over the limit of {limits.max_step_output:,}. The limit is the "
        "configuration key [bureaucrat] max_step_output"
    )


def error_text(value: object) -> str:
    """A participant's or subprocess's error as text, at most ``MAX_ERROR_TEXT`` characters."""
    if isinstance(value, str):
        text = value
    elif json_size(value, MAX_ERROR_TEXT)[0] > MAX_ERROR_TEXT:
        return f"(an error of type {type(value).__name__}, too long to show)"
    else:
        text = str(value)
    if len(text) > MAX_ERROR_TEXT:
        return text[: MAX_ERROR_TEXT - 3] + "..."
    return text
