"""Corner cases of the engine and the definition reader: each test pins down one defect found
by trying hostile or unusual definitions, responses and events.

Tests drive the pure ``step`` directly when they need to hold a response back (to answer late,
twice, or never), and the local runner otherwise.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bureaucrat.definition import parse_definition
from bureaucrat.engine import Limits, step
from bureaucrat.engine import commands as cmd
from bureaucrat.engine import events as ev
from bureaucrat.engine.context import changes
from bureaucrat.engine.state import State
from bureaucrat.errors import DefinitionError
from bureaucrat.testing import run_process


class Instance:
    """One instance driven step by step; its state makes a JSON round trip after every step."""

    def __init__(self, xml: str, fields: dict[str, Any] | None = None) -> None:
        self.definition = parse_definition(xml)
        self.state: State | None = None
        self.commands: tuple[cmd.Command, ...] = ()
        self.apply(ev.Start("pid", fields or {}))

    def apply(self, event: ev.Event, now: float = 0.0) -> None:
        result = step(self.definition, self.state, event, now)
        state = json.loads(json.dumps(result.state))
        assert state == result.state
        self.state, self.commands = state, result.commands

    @property
    def current(self) -> State:
        assert self.state is not None
        return self.state

    def dispatched(self) -> list[cmd.DispatchWorkitem]:
        return [c for c in self.commands if isinstance(c, cmd.DispatchWorkitem)]

    def answer(self, workitem: cmd.DispatchWorkitem, **changes: Any) -> None:
        payload = {**workitem.message["payload"], **changes}
        self.apply(ev.ParticipantResponse({**workitem.message, "payload": payload}))


def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


# faults ------------------------------------------------------------------------------------------

ALL_CATCHES_ITS_OWN_BRANCH = """<process>
  <all>
    <context><faults><default><action participant="cure"/></default></faults></context>
    <fault code="Broken"/>
    <action participant="late_sibling"/>
  </all>
  <action participant="after"/>
</process>"""


def test_all_that_catches_a_branch_fault_does_not_start_the_other_branches() -> None:
    instance = Instance(ALL_CATCHES_ITS_OWN_BRANCH)
    assert [w.participant for w in instance.dispatched()] == ["cure"]
    assert list(instance.current["workitems"].values()) == ["0_f0_0"]


def test_all_that_catches_a_branch_fault_completes_after_its_handler() -> None:
    participants = {"cure": echo, "late_sibling": echo, "after": echo}
    result = run_process(ALL_CATCHES_ITS_OWN_BRANCH, participants=participants)
    assert result.status == "completed"
    assert [name for name, _ in result.calls] == ["cure", "after"]


@pytest.mark.parametrize("name", ["inst:iteration", "inst:selection", "inst:current", "inst:fault"])
def test_assign_to_an_engine_property_is_refused_with_its_line(name: str) -> None:
    source = f'<process>\n<foreach select="items">\n<assign property="{name}">"x"</assign>'
    with pytest.raises(DefinitionError) as raised:
        parse_definition(source + "</foreach></process>")
    assert raised.value.line == 3
    assert "read-only" in raised.value.problem


# responses ---------------------------------------------------------------------------------------


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def test_a_response_nested_deeper_than_the_stack_is_applied() -> None:
    instance = Instance('<process><action participant="p"/></process>', {"d": nested(600)})
    (workitem,) = instance.dispatched()
    instance.answer(workitem, d=nested(600), e=nested(601))
    assert instance.current["status"] == "completed"
    assert instance.current["scopes"][""]["e"] == nested(601)


# endless loops -----------------------------------------------------------------------------------

ENDLESS = '<while><condition>True</condition><assign property="n">1</assign></while>'
FEW_STARTS = Limits(max_starts=2_000)
"""The cap on starts lowered, so that an endless loop meets it fast (the default's own test is in
test_semantics)."""


def test_a_handler_that_catches_step_limit_error_runs() -> None:
    result = run_process(
        f"""<process>
              <sequence>
                <context><faults><case code="StepLimitError">
                  <assign property="stopped">context["inst:fault"]["code"]</assign>
                  <action participant="cure"/>
                </case></faults></context>
                {ENDLESS}
              </sequence>
              <action participant="after"/>
            </process>""",
        participants={"cure": echo, "after": echo},
        limits=FEW_STARTS,
    )
    assert result.status == "completed"
    assert result.context["stopped"] == "StepLimitError"
    assert [name for name, _ in result.calls] == ["cure", "after"]


CATCHING_IN_A_LOOP = f"""<while><condition>True</condition><sequence>
    <context><faults><default><assign property="caught">1</assign></default></faults></context>
    {ENDLESS}
  </sequence></while>"""


def test_a_loop_around_a_handler_that_catches_step_limit_error_still_ends() -> None:
    source = f"<process>{CATCHING_IN_A_LOOP}</process>"
    result = run_process(source, max_steps=10, limits=FEW_STARTS)
    assert result.status == "faulted"
    assert result.fault is not None and result.fault["code"] == "StepLimitError"
    assert result.context["caught"] == 1


@pytest.mark.parametrize("on_fault", ["fault", "suspend"])
def test_too_many_starts_again_in_its_handler_fault_where_the_loop_ran_away(on_fault: str) -> None:
    """The second time, no handler is tried: the fault (or the incident) names the endless
    loop, and the journal shows it there both times."""
    source = f'<process on-fault="{on_fault}">{CATCHING_IN_A_LOOP}</process>'
    result = run_process(source, max_steps=10, limits=FEW_STARTS)
    message = "more than 2000 activities started without waiting once; is a loop missing a way out?"
    raised = f'0 fault process_0_0_0 code="StepLimitError" message="{message}"'
    assert [line for line in result.trace if line.split(" ")[1] in ("fault", "handled")] == [
        raised,
        '0 handled process_0_0 code="StepLimitError" handler="process_0_0_f0"',
        raised,
    ]
    where = {"code": "StepLimitError", "message": message, "activity": "process_0_0_0"}
    if on_fault == "suspend":
        assert result.status == "suspended"
        incident = result.state["incident"]
        assert {k: v for k, v in incident.items() if k != "agenda"} == {**where, "path": "0_0_0"}
        # what it had still to start: the start that met the limit, which a resume drops, as
        # the loop it belongs to starts again
        assert [entry[:2] for entry in incident["agenda"]] == [["0_0_0_0", "0_0_0"]]
    else:
        assert result.state["fault"] == where


def test_a_handler_that_catches_a_budget_spent_on_starts_runs_in_the_same_step() -> None:
    """Empty sequences cost only their starts: the budget runs out on one of them, in the
    middle of the agenda; the handler that catches the fault gets a budget again and runs."""
    body = "<sequence/>" * 40
    source = f"""<process><sequence>
        <context><faults><case code="LimitExceeded"><assign property="caught">1</assign></case>
        </faults></context>{body}</sequence></process>"""
    result = run_process(source, limits=Limits(step_budget=2_000))
    assert result.status == "completed"
    assert result.context["caught"] == 1
    assert any('fault process_0 code="LimitExceeded"' in line for line in result.trace)


def test_too_many_starts_in_a_long_sequence_are_blamed_on_the_loop_around_it() -> None:
    """Of the loops around the block that was starting, the one that started the most in its
    current run is blamed, even for a single start; the sequence itself is no loop."""
    body = '<assign property="x">1</assign>' * 60
    result = run_process(
        f'<process><foreach select="items"><sequence>{body}</sequence></foreach></process>',
        {"items": [1, 2, 3, 4]},
        limits=Limits(max_starts=50),
    )
    assert result.state["fault"]["activity"] == "process_0"


def test_repeated_late_and_stray_messages_leave_the_state_as_it_was() -> None:
    instance = Instance(
        '<process><action participant="p" timeout="5"/><action participant="q"/></process>'
    )
    (first,) = instance.dispatched()
    timer = instance.current["nodes"]["0"]["timer"]
    instance.answer(first, x=1)
    after_answer = instance.current
    (second,) = instance.dispatched()
    strays: list[ev.Event] = [
        ev.ParticipantResponse({**first.message, "payload": {"status": "done", "x": 2}}),
        ev.ParticipantResponse({"target": "pid_9", "payload": {"status": "done"}}),
        ev.ParticipantResponse({**second.message, "payload": "not an object"}),
        ev.ParticipantResponse({**second.message, "payload": {"status": "in progress"}}),
        ev.TimerFired(timer),
        ev.EventReceived("nobody_waits"),
        ev.ChildFinished("pid.99", "completed"),
        ev.Retry(),
    ]
    for stray in strays:
        instance.apply(stray)
        assert instance.current == after_answer, stray
        assert {c.kind for c in instance.commands if isinstance(c, cmd.Record)} <= {
            "ignored",
            "reported",
        }
    instance.answer(second)
    finished = instance.current
    assert finished["status"] == "completed"
    instance.answer(second, x=3)
    assert instance.current == finished


# the local runner --------------------------------------------------------------------------------


def test_run_process_takes_definition_text_that_starts_with_a_byte_order_mark() -> None:
    text = '\ufeff<?xml version="1.0"?>\n<process><assign property="x">1</assign></process>'
    result = run_process(text)
    assert result.status == "completed" and result.context == {"x": 1}


def test_the_launcher_also_reads_text_with_a_byte_order_mark_as_xml() -> None:
    from bureaucrat.launcher import read_definition

    assert read_definition("\ufeff<process/>") == "\ufeff<process/>"


# an operator's retry of one activity; the count of steps ------------------------------------------


TWO_FAILING = '<process><all><action participant="a"/><action participant="b"/></all></process>'


def _answer(command: Any, status: str) -> ev.ParticipantResponse:
    message = dict(command.message)
    message["payload"] = {**message["payload"], "status": status}
    return ev.ParticipantResponse(message)


def _both_failed() -> tuple[Any, dict[str, Any]]:
    definition = parse_definition(TWO_FAILING)
    started = step(definition, None, ev.Start("p"), 0.0)
    state = started.state
    for command in started.commands:
        if isinstance(command, cmd.DispatchWorkitem):
            state = step(definition, state, _answer(command, "error"), 1.0).state
    assert [n for n in state["nodes"].values() if n.get("failed")], state["nodes"]
    return definition, state


def _dispatched(commands: tuple[Any, ...]) -> list[str]:
    return [c.participant for c in commands if isinstance(c, cmd.DispatchWorkitem)]


def test_a_retry_naming_an_activity_retries_that_action_only() -> None:
    definition, state = _both_failed()
    result = step(definition, state, ev.Retry("p_0_1"), 2.0)
    assert _dispatched(result.commands) == ["b"]
    everything = step(definition, state, ev.Retry(None), 2.0)
    assert sorted(_dispatched(everything.commands)) == ["a", "b"]


def test_a_retry_naming_no_failed_action_changes_nothing() -> None:
    definition, state = _both_failed()
    for activity in ("p_0", "p_7", "other_0_1"):
        result = step(definition, state, ev.Retry(activity), 2.0)
        assert _dispatched(result.commands) == []
        assert result.state is state  # ignored: the state as it was, steps not counted
        assert [c.kind for c in result.commands if isinstance(c, cmd.Record)] == ["ignored"]


def test_every_applied_event_counts_one_step_and_ignored_ones_none() -> None:
    definition, state = _both_failed()
    assert state["steps"] == 3  # the launch and two answers
    retried = step(definition, state, ev.Retry("p_0_0"), 2.0).state
    assert retried["steps"] == 4
    assert step(definition, retried, ev.Retry("p_9"), 3.0).state["steps"] == 4


# what the engine checks before it believes an event (survivors of the mutation trial) ---------


def test_an_answer_whose_target_is_not_its_workitems_activity_is_ignored() -> None:
    definition = parse_definition(
        '<process><action participant="a"/><action participant="b"/></process>'
    )
    state = step(definition, None, ev.Start("p"), 0).state
    [workitem] = state["workitems"]
    forged = {"workitem_id": workitem, "target": "p_1", "payload": {"status": "done"}}
    result = step(definition, state, ev.ParticipantResponse(forged), 0)
    assert result.state is state
    [record] = [c for c in result.commands if isinstance(c, cmd.Record)]
    assert record.kind == "ignored" and "target" in record.details["reason"]
    honest = {"workitem_id": workitem, "target": "p_0", "payload": {"status": "done"}}
    assert step(definition, state, ev.ParticipantResponse(honest), 0).state["nodes"]["1"]


def test_a_timer_whose_activity_is_no_longer_in_progress_is_ignored() -> None:
    definition = parse_definition('<process><delay duration="5"/></process>')
    state = step(definition, None, ev.Start("p"), 0).state
    [timer] = state["timers"]
    stale = {**state, "nodes": {k: v for k, v in state["nodes"].items() if k != "0"}}
    result = step(definition, stale, ev.TimerFired(timer), 5)
    assert result.state is stale


def test_an_event_two_awaits_wait_for_is_not_offered_to_one_the_first_cancelled() -> None:
    # the first await to take "go" ends a round of its while, whose condition then fails: the
    # root's handler cancels the other branch, whose await must not be offered the event
    result = run_process(
        """<process><context><property name="n" type="int">0</property>
        <faults><default><assign property="caught">1</assign></default></faults></context>
        <all>
          <while><condition>1 / (1 - context['n'])</condition>
            <assign property="n">1</assign><await event="go"/></while>
          <sequence><sequence><await event="go"/></sequence></sequence>
        </all></process>""",
        events=[("go", {})],
    )
    assert result.status == "completed" and result.context == {"n": 1, "caught": 1}
    taken = [line for line in result.trace if " event " in line]
    assert taken == ['0 event process_0_0_1 event="go" taken=true'], result.trace


@pytest.mark.parametrize("fields", [[1, 2], "text", None, 7])
def test_launch_fields_that_are_not_an_object_are_no_fields(fields: Any) -> None:
    definition = parse_definition(
        '<process><context><property name="n" type="int">1</property></context>'
        '<await event="go"/></process>'
    )
    state = step(definition, None, ev.Start("p", fields), 0).state
    assert state["scopes"][""] == {"n": 1}


# an operator's rerun of the whole process ------------------------------------------------------


def test_a_rerun_of_the_root_keeps_the_context_and_takes_the_answers_after_it() -> None:
    # rerun keeps the context (DESIGN.md section 8): the root's scope once went with its node
    instance = Instance(
        '<process><context><property name="y" type="int">1</property></context>'
        '<action participant="clerk"/></process>',
        {"f": 1},
    )
    instance.apply(ev.Rerun("pid"))
    (workitem,) = instance.dispatched()
    assert workitem.message["payload"] == {"y": 1, "f": 1, "status": "done"}
    records = [(c.kind, c.activity) for c in instance.commands if isinstance(c, cmd.Record)]
    assert records == [("rerun", "pid"), ("cancelled", "pid_0"), ("dispatched", "pid_0")]
    instance.answer(workitem, z=5)
    assert instance.current["status"] == "completed"
    assert instance.current["scopes"] == {"": {"y": 1, "f": 1, "z": 5}}


# what a participant changed -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "received", "changed"),
    [
        ({"l": [1, [2]], "d": {"a": 1}}, {"l": [1, [2]], "d": {"a": 1}}, {}),
        ({"l": [1, 2]}, {"l": [1, 2, 3]}, {"l": [1, 2, 3]}),
        ({"l": [1, 2, 3]}, {"l": [1, 2]}, {"l": [1, 2]}),
        ({"l": [1, 2]}, {"l": [1, 3]}, {"l": [1, 3]}),
        ({"d": {"a": 1}}, {"d": {"b": 1}}, {"d": {"b": 1}}),
        ({"d": {"a": 1}}, {"d": {"a": 1, "b": 2}}, {"d": {"a": 1, "b": 2}}),
        ({"d": {"a": 1}}, {"d": {"a": 2}}, {"d": {"a": 2}}),
        ({"n": 1}, {"n": 1.0, "t": True}, {"n": 1.0, "t": True}),  # JSON values, not Python's
        ({"n": 1}, {1: "x", "n": 1, "m": 2}, {"m": 2}),  # a name not a string is no property
    ],
)
def test_a_change_is_a_value_that_differs_as_json(
    sent: dict[str, Any], received: dict[Any, Any], changed: dict[str, Any]
) -> None:
    assert changes(sent, received) == changed
