"""Property-based: random well-formed definitions always end, and their state is always JSON.

Definitions are drawn from every activity kind, nested, with participants that answer at once
(echo, increment, or critical). Loops are bounded by a counter of their own context, awaits by a
timeout, so every drawn process must reach completed or faulted within a bound of steps, its
state must come back equal from a JSON round trip after every step (``check_json``), and the run
through JSON must go exactly as the same run with its state kept in memory.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bureaucrat.definition import parse_definition
from bureaucrat.engine import activity_id, events
from bureaucrat.testing import run_process

CHILD = "&lt;process&gt;&lt;action participant=&quot;inc_c&quot;/&gt;&lt;/process&gt;"

leaves = st.one_of(
    st.sampled_from(["echo", "inc_x", "inc_y", "fail"]).map(
        lambda p: f'<action participant="{p}"/>'
    ),
    st.integers(0, 3).map(lambda n: f'<assign property="a">context.get("a", 0) + {n}</assign>'),
    st.sampled_from(["0", "0.5", "2"]).map(lambda d: f'<delay duration="{d}"/>'),
    st.sampled_from(["E1", "E2"]).map(lambda c: f'<fault code="{c}" message="drawn"/>'),
    st.sampled_from(["go", "stop"]).map(lambda e: f'<await event="{e}" timeout="5"/>'),
    st.just('<call process="$child"/>'),
)


def blocks(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    body = st.lists(children, min_size=0, max_size=4).map("".join)
    nonempty = st.lists(children, min_size=1, max_size=3).map("".join)
    condition = st.sampled_from(["True", "False", 'context.get("x", 0) &gt; 0'])
    handlers = st.sampled_from(
        [
            "",
            '<context><faults><case code="E1">{}</case></faults></context>',
            "<context><faults><default>{}</default></faults></context>",
        ]
    )
    return st.one_of(
        body.map(lambda b: f"<sequence>{b}</sequence>"),
        st.tuples(handlers, body, body).map(
            lambda t: f"<sequence>{t[0].format(t[2])}{t[1]}</sequence>"
        ),
        body.map(lambda b: f"<all>{b}</all>"),
        st.tuples(condition, body, body).map(
            lambda t: (
                f"<switch><case><condition>{t[0]}</condition>{t[1]}</case>"
                f"<default>{t[2]}</default></switch>"
            )
        ),
        st.tuples(st.integers(0, 3), nonempty).map(
            lambda t: (
                "<while><context><property name='i' type='int'>0</property></context>"
                f"<condition>context['i'] &lt; {t[0]}</condition>"
                f"<assign property='i'>context['i'] + 1</assign>{t[1]}</while>"
            )
        ),
        body.map(lambda b: f'<foreach select="items">{b}</foreach>'),
    )


activities = st.recursive(leaves, blocks, max_leaves=12)
processes = st.lists(activities, min_size=1, max_size=4).map(
    lambda body: (
        "<process><context>"
        '<property name="items" type="json">[1, 2]</property>'
        f'<property name="child" type="str">{CHILD}</property>'
        f"</context>{''.join(body)}</process>"
    )
)


def answer(name: str) -> Any:
    def participant(payload: dict[str, Any]) -> dict[str, Any]:
        if name == "fail":
            return {**payload, "status": "critical", "error": "drawn failure"}
        if name.startswith("inc_"):
            return {**payload, name[4:]: payload.get(name[4:], 0) + 1}
        return payload

    return participant


PARTICIPANTS = {name: answer(name) for name in ("echo", "inc_x", "inc_y", "inc_c", "fail")}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(processes, st.lists(st.sampled_from(["go", "stop", "other"]), max_size=4))
def test_random_definitions_always_end_with_json_state(source: str, names: list[str]) -> None:
    parse_definition(source)  # drawn definitions are well formed by construction
    drawn_events = [(name, {"n": index}) for index, name in enumerate(names)]
    result = run_process(
        source, participants=PARTICIPANTS, events=drawn_events, max_steps=20_000, check_json=True
    )
    assert result.status in ("completed", "faulted"), result.trace[-5:]
    # The state read back from JSON after every step behaves as the state kept in memory: the
    # same run without the round trips ends the same way, step for step.
    in_memory = run_process(source, participants=PARTICIPANTS, events=drawn_events)
    assert in_memory.trace == result.trace
    assert in_memory.state == result.state
    assert json.dumps(in_memory.state, sort_keys=True) == json.dumps(result.state, sort_keys=True)
    if result.status == "faulted":
        assert result.fault is not None and result.fault["code"] in (
            "E1",
            "E2",
            "ActionError",
            "TimeoutError",
        )
    else:
        assert result.fault is None


timeless_leaves = st.one_of(
    st.sampled_from(["echo", "inc_x", "inc_y", "fail"]).map(
        lambda p: f'<action participant="{p}"/>'
    ),
    st.integers(0, 3).map(lambda n: f'<assign property="a">context.get("a", 0) + {n}</assign>'),
    st.sampled_from(["E1", "E2"]).map(lambda c: f'<fault code="{c}" message="drawn"/>'),
)
timeless_processes = st.lists(
    st.recursive(timeless_leaves, blocks, max_leaves=12), min_size=1, max_size=4
).map(
    lambda body: (
        "<process><context>"
        '<property name="items" type="json">[1, 2]</property>'
        f'<property name="child" type="str">{CHILD}</property>'
        f"</context>{''.join(body)}</process>"
    )
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timeless_processes, st.sampled_from(["dispatched", "answered", "launched", "handled"]))
def test_a_pause_and_a_resume_change_nothing_but_the_journal(source: str, moment: str) -> None:
    """Paused at a drawn moment and resumed when nothing else can happen, a process ends as it
    would have without: the answers that arrived meanwhile were held, and applied in the order
    they came.

    Without timers, events or subprocesses, which go on in their own time while the process
    is paused: a timeout that comes due meanwhile is applied on resume before the work that
    follows (as it should), an event that arrives while an await waits is taken, paused or
    not, and a subprocess runs on (its result is held). Each is tested on its own."""
    plain = run_process(source, participants=PARTICIPANTS)
    paused = run_process(
        source,
        participants=PARTICIPANTS,
        operations=[(moment, events.Pause()), (None, events.Resume())],
        max_steps=20_000,
        check_json=True,
    )
    assert (paused.status, paused.context, paused.fault) == (
        plain.status,
        plain.context,
        plain.fault,
    ), paused.trace
    # the process's own journal: its subprocesses go on while it is paused, and may finish
    # where, unpaused, it would have terminated them first
    assert _unsteered(paused.trace)["process"] == _unsteered(plain.trace)["process"]


def _unsteered(trace: list[str]) -> dict[str, list[str]]:
    """The lines of each instance's journal but those of pause and resume, sorted: the same
    things happen to each instance, though what was held happens later, and so may come after
    what arrived meanwhile in the other order (a timer already due, a subprocess's end)."""
    journals: dict[str, list[str]] = {}
    for line in trace:
        _, kind, activity, *_ = [*line.split(" "), ""]
        if kind not in STEERING:
            journals.setdefault(activity.split("_")[0], []).append(line.split(" ", 1)[1])
    return {instance: sorted(lines) for instance, lines in journals.items()}


STEERING = frozenset({"paused", "held", "resumed", "ignored", "dropped"})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(processes, st.data())
def test_a_rerun_from_any_activity_of_a_finished_process_ends_again(
    source: str, data: st.DataObject
) -> None:
    definition = parse_definition(source)
    path = data.draw(st.sampled_from(sorted(definition.activities)))
    result = run_process(
        source,
        participants=PARTICIPANTS,
        operations=[(None, events.Rerun(activity_id("process", path), {"x": 1}))],
        max_steps=20_000,
        check_json=True,
    )
    assert result.status in ("completed", "faulted"), result.trace[-5:]
    if "_f" not in f"_{path}":
        assert any(" rerun " in line for line in result.trace), result.trace[-5:]
