"""An operator's operations in the pure engine (DESIGN.md section 8): pause, resume, incidents,
set, rerun, restart and terminate, and what a paused instance does with what arrives; and the
smaller rules that came with them (await conditions that fail on an event, fault codes with a
comma, ``inst:fault`` after a root handler, the loop blamed for too many starts)."""

from __future__ import annotations

from typing import Any

import pytest

from bureaucrat.definition import parse_definition
from bureaucrat.engine import Limits, commands, step
from bureaucrat.engine import events as ev
from bureaucrat.errors import DefinitionError
from bureaucrat.testing import run_process


def inc(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "n": payload.get("n", 0) + 1}


def slow(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "status": "in progress"}


def records(result: Any) -> list[commands.Record]:
    return [c for c in result.commands if isinstance(c, commands.Record)]


def kinds(trace: list[str]) -> list[str]:
    return [line.split(" ")[1] for line in trace]


TWO_STEPS = """<process><context><property name="n" type="int">0</property></context>
<action participant="inc"/><await event="go"/><action participant="inc"/></process>"""


def test_a_paused_instance_dispatches_nothing_and_applies_what_it_held_in_order() -> None:
    result = run_process(
        TWO_STEPS,
        participants={"inc": inc},
        events=[("go", {})],
        operations=[("answered process_0 ", ev.Pause()), (None, ev.Resume())],
        check_json=True,
    )
    assert result.status == "completed" and result.context["n"] == 2
    trace = kinds(result.trace)
    # paused after the first answer: the event is held, nothing is dispatched until resume
    assert trace.index("paused") < trace.index("held") < trace.index("resumed")
    assert trace[trace.index("paused") : trace.index("resumed")].count("dispatched") == 0
    assert trace.count("dispatched") == trace.count("answered") == 2


def test_held_messages_are_applied_in_the_order_they_arrived() -> None:
    definition = parse_definition(
        """<process><all><await event="a"/><await event="b"/></all>
        <assign property="x">1</assign></process>"""
    )
    state = step(definition, None, ev.Start("p"), 0).state
    state = step(definition, state, ev.Pause(), 0).state
    for name in ("b", "a", "b"):
        state = step(definition, state, ev.EventReceived(name, {"event": name}), 0).state
    assert [h["name"] for h in state["held"]] == ["b", "a", "b"]
    resumed = step(definition, state, ev.Resume(), 1)
    assert resumed.state["status"] == "completed"
    events = [c.activity for c in records(resumed) if c.kind == "event"]
    assert events == ["p_0_1", "p_0_0"]  # b first, as it came; the second b has no taker


def test_what_nothing_waits_for_is_not_held() -> None:
    definition = parse_definition(TWO_STEPS)
    state = step(definition, None, ev.Start("p"), 0).state
    paused = step(definition, state, ev.Pause(), 0).state
    stray = step(definition, paused, ev.EventReceived("nobody", {}), 0)
    assert stray.state is paused  # ignored: the state is the one given
    forged = step(definition, paused, ev.ParticipantResponse({"workitem_id": "p_0.99"}), 0)
    assert forged.state is paused


def test_holding_stops_at_the_state_size_limit_and_says_so() -> None:
    definition = parse_definition(TWO_STEPS)
    limits = Limits(max_state_size=20_000)
    state = step(definition, None, ev.Start("p"), 0, limits).state
    state = step(definition, state, ev.Pause(), 0, limits).state
    [workitem] = state["workitems"]
    answer = {"workitem_id": workitem, "payload": {"status": "done", "big": "x" * 30_000}}
    refused = step(definition, state, ev.ParticipantResponse(answer), 0, limits)
    assert refused.state is state
    assert "max_state_size" in records(refused)[0].details["reason"]


def test_terminate_ends_a_paused_instance_and_drops_what_it_held() -> None:
    result = run_process(
        TWO_STEPS,
        participants={"inc": inc},
        operations=[("dispatched process_0 ", ev.Pause()), (None, ev.Terminate("stop"))],
    )
    assert result.status == "terminated"
    assert "held" not in result.state
    assert any('terminating process held=1 reason="stop"' in line for line in result.trace)


def test_terminate_ends_a_suspended_instance_and_keeps_no_incident() -> None:
    """What ``show`` and the console print as the incident of a suspended instance is gone
    once it ends: the journal keeps it."""
    definition = parse_definition('<process on-fault="suspend"><fault code="A"/></process>')
    state = step(definition, None, ev.Start("p"), 0).state
    assert state["status"] == "suspended" and state["incident"]["code"] == "A"
    ended = step(definition, state, ev.Terminate("stop"), 1).state
    assert ended["status"] == "terminated"
    assert "incident" not in ended and "held" not in ended


@pytest.mark.parametrize(
    ("operation", "status"),
    [
        (ev.Resume(), "running"),
        (ev.Pause(), "completed"),
        (ev.Resume(), "completed"),
        (ev.SetContext({"n": 1}), "completed"),
        (ev.Terminate(), "completed"),
    ],
)
def test_an_operation_that_makes_no_sense_now_is_ignored_with_the_reason(
    operation: ev.Operation, status: str
) -> None:
    definition = parse_definition(TWO_STEPS)
    state = step(definition, None, ev.Start("p"), 0).state
    if status == "completed":
        state = {**state, "status": "completed", "nodes": {}, "workitems": {}}
    result = step(definition, state, operation, 0)
    assert result.state is state
    assert records(result)[0].kind == "ignored"
    assert status in records(result)[0].details["reason"]


def test_set_writes_where_a_property_is_declared_and_journals_old_and_new() -> None:
    definition = parse_definition(
        """<process><context><property name="a" type="int">1</property></context>
        <sequence><context><property name="b" type="int">2</property></context>
        <await event="go"/></sequence></process>"""
    )
    state = step(definition, None, ev.Start("p"), 0).state
    result = step(definition, state, ev.SetContext({"a": 10, "b": 20, "c": 30}), 0)
    scopes = result.state["scopes"]
    assert scopes[""] == {"a": 10, "c": 30} and scopes["0"] == {"b": 20}
    by_name = {c.details["name"]: c for c in records(result)}
    assert by_name["a"].details["old"] == 1 and by_name["a"].details["new"] == 10
    assert by_name["b"].activity == "p_0"
    assert by_name["c"].details["created"] is True


@pytest.mark.parametrize("name", ["inst:current", ""])
def test_set_refuses_names_of_the_engine(name: str) -> None:
    definition = parse_definition(TWO_STEPS)
    state = step(definition, None, ev.Start("p"), 0).state
    result = step(definition, state, ev.SetContext({name: 1}), 0)
    assert result.state is state


SUSPENDING = """<process on-fault="suspend">
<all><assign property="x">context['m'] + 1</assign><action participant="a"/>
<action participant="b"/></all></process>"""


def test_an_incident_keeps_what_was_still_to_start_and_resume_starts_it() -> None:
    result = run_process(
        SUSPENDING,
        participants={"a": inc, "b": inc},
        operations=[(None, ev.SetContext({"m": 1})), (None, ev.Resume())],
        check_json=True,
    )
    assert result.status == "completed"
    assert result.context == {"m": 1, "x": 2, "n": 1}
    trace = kinds(result.trace)
    assert trace.index("incident") < trace.index("dispatched")  # a and b waited for resume
    assert trace.count("dispatched") == 2


def test_without_resume_an_incident_stays_suspended_with_the_fault() -> None:
    result = run_process(SUSPENDING, participants={"a": inc, "b": inc})
    assert result.status == "suspended"
    incident = result.state["incident"]
    assert incident["code"] == "ExpressionError" and incident["activity"] == "process_0_0"
    assert result.fault is None


def test_the_configuration_decides_where_the_definition_does_not() -> None:
    definition = '<process><fault code="X"/></process>'
    suspended = run_process(definition, limits=Limits(on_fault="suspend"))
    assert suspended.status == "suspended"
    faulted = run_process(
        definition.replace("<process>", '<process on-fault="fault">'),
        limits=Limits(on_fault="suspend"),
    )
    assert faulted.status == "faulted"
    assert run_process(definition).status == "faulted"


def test_a_bad_on_fault_is_refused_with_its_line() -> None:
    with pytest.raises(DefinitionError) as error:
        parse_definition('<process on-fault="pause"/>')
    assert "on-fault" in str(error.value) and error.value.line == 1


RERUN_IN_HANDLER = """<process><context><faults><default><action participant="a"/></default>
</faults></context><fault code="X"/></process>"""


def test_a_rerun_inside_a_handler_or_of_an_unknown_activity_is_refused() -> None:
    definition = parse_definition(RERUN_IN_HANDLER)
    state = step(definition, None, ev.Start("p"), 0).state
    for activity in ("p_f0_0", "p_7", "q_0", "p"[:0]):
        result = step(definition, state, ev.Rerun(activity), 0)
        assert result.state is state, activity


def test_a_rerun_of_a_finished_instance_enters_its_blocks_again() -> None:
    definition = """<process><context><property name="n" type="int">0</property></context>
    <sequence><action participant="inc"/><action participant="inc"/></sequence>
    <action participant="inc"/></process>"""
    result = run_process(
        definition, participants={"inc": inc}, operations=[(None, ev.Rerun("process_0_1"))]
    )
    # three, then from the second action of the sequence: two more
    assert result.status == "completed" and result.context["n"] == 5
    assert kinds(result.trace).count("completed") == 2


def test_a_rerun_inside_a_foreach_that_ended_starts_the_foreach_again() -> None:
    definition = """<process><context><property name="items" type="json">[1, 2]</property>
    </context><foreach select="items"><action participant="inc"/></foreach></process>"""
    result = run_process(
        definition, participants={"inc": inc}, operations=[(None, ev.Rerun("process_0_0"))]
    )
    assert result.status == "completed" and result.context["n"] == 4


def test_restart_uses_the_launch_fields_and_ignores_late_answers() -> None:
    definition = parse_definition(TWO_STEPS)
    state = step(definition, None, ev.Start("p", {"n": 5}), 0).state
    [old_workitem] = state["workitems"]
    state = step(definition, state, ev.SetContext({"n": 50}), 0).state
    restarted = step(definition, state, ev.Restart({"n": 5}), 0).state
    assert restarted["scopes"][""] == {"n": 5}
    [new_workitem] = restarted["workitems"]
    assert new_workitem != old_workitem
    late = {"workitem_id": old_workitem, "payload": {"status": "done"}}
    assert step(definition, restarted, ev.ParticipantResponse(late), 0).state is restarted


def test_an_event_that_breaks_an_await_condition_is_not_taken_and_the_await_waits_on() -> None:
    definition = parse_definition(
        """<process><await event="order"><condition>event['amount'] > 10</condition></await>
        </process>"""
    )
    state = step(definition, None, ev.Start("p"), 0).state
    broken = step(definition, state, ev.EventReceived("order", {"event": "order"}), 0)
    assert broken.state["status"] == "running" and broken.state["awaits"]
    [record] = records(broken)
    assert record.details["taken"] is False
    assert "amount" in record.details["reason"]
    good = step(definition, broken.state, ev.EventReceived("order", {"amount": 11}), 0)
    assert good.state["status"] == "completed"


def test_a_fault_code_with_a_comma_is_refused_with_its_line() -> None:
    with pytest.raises(DefinitionError) as error:
        parse_definition('<process>\n<fault code="A, B"/></process>')
    assert error.value.line == 2 and "comma" in str(error.value)


def test_a_root_handler_leaves_no_inst_fault_in_the_final_context() -> None:
    result = run_process(
        """<process><context><faults><default><assign property="handled">1</assign>
        </default></faults></context><fault code="X"/></process>"""
    )
    assert result.status == "completed"
    assert result.context == {"handled": 1}


def test_too_many_starts_are_blamed_on_the_endless_loop_not_on_a_finite_one_inside() -> None:
    result = run_process(
        """<process><context><property name="items" type="json">[1, 2, 3]</property>
        </context><while><condition>True</condition>
        <foreach select="items"><assign property="x">1</assign></foreach></while></process>""",
        limits=Limits(max_starts=2_000),
    )
    assert result.fault is not None and result.fault["code"] == "StepLimitError"
    assert result.state["fault"]["activity"] == "process_0"


def test_too_many_starts_inside_a_finite_loop_blame_the_endless_one_inside() -> None:
    result = run_process(
        """<process><context><property name="items" type="json">[1, 2, 3]</property>
        </context><foreach select="items"><while><condition>True</condition>
        <assign property="x">1</assign></while></foreach></process>""",
        limits=Limits(max_starts=2_000),
    )
    assert result.state["fault"]["activity"] == "process_0_0"


WAITING_ON_EVERYTHING = """<process><context>
<property name="child" type="str">&lt;process/&gt;</property></context>
<all><action participant="a"/><delay duration="60"/><await event="go"/>
<call process="$child"/></all></process>"""


def _paused_waiting_on_everything() -> tuple[Any, dict[str, Any]]:
    definition = parse_definition(WAITING_ON_EVERYTHING)
    state = step(definition, None, ev.Start("p"), 0).state
    return definition, step(definition, state, ev.Pause(), 0).state


def _messages(state: dict[str, Any]) -> dict[str, tuple[ev.Event, ev.Event]]:
    """For each kind of message, one that the paused instance waits for and one it does not."""
    [workitem] = state["workitems"]
    [timer] = state["timers"]
    [child] = state["children"]
    action = "p_0_0"
    return {
        "answer": (
            ev.ParticipantResponse({"workitem_id": workitem}),
            ev.ParticipantResponse({"workitem_id": workitem + "9"}),
        ),
        "answer by target": (
            ev.ParticipantResponse({"target": action}),
            ev.ParticipantResponse({"target": "p_0_2"}),  # the await: no workitem
        ),
        "answer by a stranger's target": (
            ev.ParticipantResponse({"workitem_id": workitem, "target": "q_0_0"}),
            ev.ParticipantResponse({"target": "q_0_0"}),
        ),
        "answer that is no mapping": (
            ev.ParticipantResponse({"target": action}),
            ev.ParticipantResponse([workitem]),  # type: ignore[arg-type]
        ),
        "timer": (ev.TimerFired(timer), ev.TimerFired(timer + "9")),
        "event": (ev.EventReceived("go", {}), ev.EventReceived("went", {})),
        "child": (
            ev.ChildFinished(child, "completed"),
            ev.ChildFinished(child + "9", "completed"),
        ),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "answer",
        "answer by target",
        "answer by a stranger's target",
        "answer that is no mapping",
        "timer",
        "event",
        "child",
    ],
)
def test_a_paused_instance_holds_what_it_waits_for_and_ignores_the_rest(kind: str) -> None:
    definition, paused = _paused_waiting_on_everything()
    awaited, stray = _messages(paused)[kind]
    held = step(definition, paused, awaited, 0)
    assert [h["type"] for h in held.state["held"]] == [_freeze_type(awaited)]
    assert [r.kind for r in records(held)] == ["held"]
    ignored = step(definition, paused, stray, 0)
    assert ignored.state is paused
    assert [r.kind for r in records(ignored)] == ["ignored"]


@pytest.mark.parametrize(
    ("kind", "path"), [("answer", "0_0"), ("timer", "0_1"), ("event", "0_2"), ("child", "0_3")]
)
def test_what_a_paused_instance_held_is_applied_on_resume(kind: str, path: str) -> None:
    """Nothing is lost: the answer, timer, event or subprocess result that came while the
    instance was paused ends its activity once it resumes, and only that one."""
    definition, paused = _paused_waiting_on_everything()
    awaited, _ = _messages(paused)[kind]
    if kind == "answer":  # as a participant sends it
        [workitem] = paused["workitems"]
        answer = {"workitem_id": workitem, "target": "p_0_0", "payload": {"status": "done"}}
        awaited = ev.ParticipantResponse({**answer, "name": "response", "process_id": "p"})
    held = step(definition, paused, awaited, 0).state
    assert set(held["nodes"]) == set(paused["nodes"])  # held: nothing applied yet
    resumed = step(definition, held, ev.Resume(), 0)
    assert resumed.state["status"] == "running" and not resumed.state.get("held")
    assert set(paused["nodes"]) - set(resumed.state["nodes"]) == {path}
    assert "ignored" not in [r.kind for r in records(resumed)]


@pytest.mark.parametrize("activity", [None, "p_0_0"])
def test_a_paused_instance_holds_an_operators_retry(activity: str | None) -> None:
    definition, paused = _paused_waiting_on_everything()
    held = step(definition, paused, ev.Retry(activity), 0)
    assert [h["type"] for h in held.state["held"]] == ["retry"]


def _freeze_type(event: ev.Event) -> str:
    return {
        ev.ParticipantResponse: "response",
        ev.TimerFired: "timer",
        ev.EventReceived: "event",
        ev.ChildFinished: "child",
    }[type(event)]
