"""The exact journal records of an operator's operations (README "Operating processes", DESIGN.md
section 8): ``bureaucratctl show`` and the web console print them, kind, activity and details,
so they are behaviour. Pause and resume with what was held (of every kind, kept whole and
replayed), what is dropped or held again when a resume stops short, terminate, set (old and new
values, how large ones are shown, where a name is written, the state's size limit), rerun and
restart; and the records of a subprocess result that cannot be taken."""

from __future__ import annotations

from typing import Any

import pytest

from bureaucrat.definition import parse_definition
from bureaucrat.definition.limits import json_size
from bureaucrat.definition.model import Definition
from bureaucrat.engine import DEFAULT_LIMITS, Limits, commands, step
from bureaucrat.engine import events as ev
from bureaucrat.engine.sizes import Sizes
from bureaucrat.engine.state import State
from tests.test_budgets import stored_size

Journal = list[tuple[str, str, dict[str, Any]]]


def journal(result: Any) -> Journal:
    """The records of one step as ``bureaucratctl show`` lists them: kind, activity, details."""
    return [
        (c.kind, c.activity, c.details) for c in result.commands if isinstance(c, commands.Record)
    ]


class _Any:
    """Equal to anything: a generated id in an expected record."""

    def __eq__(self, other: object) -> bool:
        return True


_any: Any = _Any()


def started(xml: str, fields: dict[str, Any] | None = None) -> tuple[Definition, State]:
    definition = parse_definition(xml)
    return definition, step(definition, None, ev.Start("p", fields or {}), 0).state


def assert_size_kept(state: State) -> None:
    """The size the state keeps of itself is never below its real size (the limit holds)."""
    assert Sizes(state, DEFAULT_LIMITS).estimate() >= stored_size(state)


AWAITING = """<process><context><property name="n" type="int">0</property></context>
<await event="go"/></process>"""


# pause, hold, resume ----------------------------------------------------------------------------


def test_pause_hold_and_resume_journal_the_reason_and_how_many_messages_were_held() -> None:
    definition, state = started(AWAITING)
    paused = step(definition, state, ev.Pause("maintenance"), 0)
    assert journal(paused) == [("paused", "p", {"reason": "maintenance"})]
    first = step(definition, paused.state, ev.EventReceived("go", {"event": "go"}), 0)
    assert journal(first) == [("held", "p", {"message": "event", "held": 1})]
    second = step(definition, first.state, ev.EventReceived("go", {"event": "go"}), 0)
    assert journal(second) == [("held", "p", {"message": "event", "held": 2})]
    resumed = step(definition, second.state, ev.Resume(), 0)
    assert journal(resumed) == [
        ("resumed", "p", {"was": "paused", "held": 2}),
        ("event", "p_0", {"event": "go", "taken": True}),
        ("completed", "p", {}),
        ("dropped", "p", {"held": 1, "reason": "the instance completed"}),
    ]
    assert resumed.state["status"] == "completed" and "held" not in resumed.state


@pytest.mark.parametrize(("length", "shown"), [(300, "r" * 300), (301, "r" * 297 + "...")])
def test_a_pause_reason_is_journalled_up_to_300_characters(length: int, shown: str) -> None:
    definition, state = started(AWAITING)
    paused = step(definition, state, ev.Pause("r" * length), 0)
    assert journal(paused) == [("paused", "p", {"reason": shown})]


def _ended(definition: Definition, state: State) -> State:
    return step(definition, state, ev.Terminate("done with it"), 0).state


@pytest.mark.parametrize(
    ("before", "operation", "reason"),
    [
        ("paused", ev.Pause(), "the instance is paused, not running"),
        ("running", ev.Resume(), "the instance is running, not paused or suspended"),
        ("terminated", ev.Resume(), "the instance is terminated, not paused or suspended"),
        ("terminated", ev.Terminate(), "the instance is terminated"),
        (
            "terminated",
            ev.SetContext({"n": 1}),
            "the instance is terminated: its context can no longer change",
        ),
        ("running", ev.SetContext([1]), "the values are not an object"),  # type: ignore[arg-type]
        (
            "running",
            ev.SetContext({"inst:current": 1}),
            "'inst:current' cannot be set: not a property name of the process's own",
        ),
        (
            "running",
            ev.SetContext({"inst:" + "n" * 400: 1}),
            repr("inst:" + "n" * 292 + "...")
            + " cannot be set: not a property name of the process's own",
        ),
    ],
)
def test_an_operation_that_makes_no_sense_is_journalled_as_ignored_with_its_reason(
    before: str, operation: ev.Operation, reason: str
) -> None:
    definition, state = started(AWAITING)
    if before == "paused":
        state = step(definition, state, ev.Pause(), 0).state
    elif before == "terminated":
        state = _ended(definition, state)
    result = step(definition, state, operation, 0)
    assert result.state is state
    assert journal(result) == [("ignored", "p", {"reason": reason})]


def test_a_name_that_is_not_a_string_cannot_be_set_and_is_named_in_the_reason() -> None:
    definition, state = started(AWAITING)
    result = step(definition, state, ev.SetContext({7: 1}), 0)  # type: ignore[dict-item]
    assert journal(result) == [
        ("ignored", "p", {"reason": "'7' cannot be set: not a property name of the process's own"})
    ]


def test_a_paused_instance_journals_what_it_ignores_and_what_it_has_no_room_for() -> None:
    definition = parse_definition('<process><action participant="a"/></process>')
    limits = Limits(max_state_size=20_000)
    state = step(definition, None, ev.Start("p"), 0, limits).state
    paused = step(definition, state, ev.Pause(), 0, limits).state
    stray = step(definition, paused, ev.EventReceived("nobody", {}), 0, limits)
    assert journal(stray) == [
        ("ignored", "p", {"reason": "nothing in the instance waits for this", "status": "paused"})
    ]
    [workitem] = paused["workitems"]
    answer = {"workitem_id": workitem, "payload": {"status": "done", "big": "x" * 30_000}}
    too_big = step(definition, paused, ev.ParticipantResponse(answer), 0, limits)
    assert too_big.state is paused
    assert journal(too_big) == [
        (
            "ignored",
            "p",
            {"reason": "not held: the state would pass max_state_size", "held": "response"},
        )
    ]


CALLING = """<process><context><property name="child" type="str">&lt;process/&gt;</property>
</context><call process="$child"/></process>"""


@pytest.mark.parametrize(
    ("status", "fault", "outcome"),
    [
        ("completed", None, "completed"),
        ("faulted", {"code": "Boom", "message": "it broke"}, "faulted"),
    ],
)
def test_a_held_subprocess_result_is_kept_whole_and_taken_on_resume(
    status: str, fault: dict[str, str] | None, outcome: str
) -> None:
    definition, state = started(CALLING)
    [child] = state["children"]
    paused = step(definition, state, ev.Pause(), 0).state
    result = ev.ChildFinished(child, status, {"x": 1}, fault)
    held = step(definition, paused, result, 0).state
    assert held["held"] == [
        {"type": "child", "child_id": child, "status": status, "context": {"x": 1}, "fault": fault}
    ]
    resumed = step(definition, held, ev.Resume(), 0)
    assert journal(resumed)[:2] == [
        ("resumed", "p", {"was": "paused", "held": 1}),
        ("child", "p_0", {"child": child, "status": status}),
    ]
    assert resumed.state["status"] == outcome
    if fault is None:
        assert resumed.state["scopes"][""]["x"] == 1
    else:
        assert resumed.state["fault"] == {**fault, "activity": "p_0"}


def test_a_held_retry_is_kept_and_dispatches_the_failed_action_it_names_on_resume() -> None:
    definition, state = started(
        '<process><all><action participant="a"/><action participant="b"/></all></process>'
    )
    for workitem in list(state["workitems"]):
        error = {"workitem_id": workitem, "payload": {"status": "error", "error": "no"}}
        state = step(definition, state, ev.ParticipantResponse(error), 0).state
    assert state["workitems"] == {}  # both failed
    paused = step(definition, state, ev.Pause(), 0).state
    held = step(definition, paused, ev.Retry("p_0_1"), 0).state
    assert held["held"] == [{"type": "retry", "activity": "p_0_1"}]
    resumed = step(definition, held, ev.Resume(), 0)
    assert [(kind, activity) for kind, activity, _ in journal(resumed)] == [
        ("resumed", "p"),
        ("retry", "p_0_1"),
        ("dispatched", "p_0_1"),
    ]
    [dispatch] = [c for c in resumed.commands if isinstance(c, commands.DispatchWorkitem)]
    assert dispatch.activity == "p_0_1" and dispatch.participant == "b"


def test_held_messages_of_no_known_shape_are_journalled_and_the_rest_applied() -> None:
    # a state edited by hand, or from a version that held other kinds
    definition, state = started(AWAITING)
    paused = step(definition, state, ev.Pause(), 0).state
    held = step(definition, paused, ev.EventReceived("go", {"event": "go"}), 0).state
    odd: list[Any] = [{"type": "signal"}, 5, {"type": "event", "name": "go"}]
    edited = {**held, "held": [*odd, *held["held"]]}
    resumed = step(definition, edited, ev.Resume(), 0)
    unknown = ("ignored", "p", {"reason": "a held message of no known shape"})
    assert journal(resumed) == [
        ("resumed", "p", {"was": "paused", "held": 4}),
        unknown,
        unknown,
        unknown,
        ("event", "p_0", {"event": "go", "taken": True}),
        ("completed", "p", {}),
    ]


INCIDENT_MIDWAY = """<process on-fault="suspend"><all>
<sequence><await event="a"/><assign property="x">context['m'] + 1</assign></sequence>
<await event="b"/><action participant="w"/></all></process>"""


def test_what_is_still_held_when_a_resume_meets_an_incident_stays_held_for_the_next() -> None:
    # the action keeps a copy of the large context it sent: the state's size counts it
    definition, state = started(INCIDENT_MIDWAY, {"pad": "p" * 5_000})
    paused = step(definition, state, ev.Pause(), 0).state
    paused = step(definition, paused, ev.EventReceived("a", {}), 0).state
    paused = step(definition, paused, ev.EventReceived("b", {"big": "z" * 3_000}), 0).state
    resumed = step(definition, paused, ev.Resume(), 0)
    assert resumed.state["status"] == "suspended"
    assert [kind for kind, _, _ in journal(resumed)] == ["resumed", "event", "fault", "incident"]
    assert resumed.state["held"] == [{"type": "event", "name": "b", "data": {"big": "z" * 3_000}}]
    assert_size_kept(resumed.state)
    fixed = step(definition, resumed.state, ev.SetContext({"m": 1}), 0).state
    assert_size_kept(fixed)
    again = step(definition, fixed, ev.Resume(), 0)
    assert journal(again)[:2] == [
        ("resumed", "p", {"was": "suspended", "held": 1}),
        ("event", "p_0_1", {"event": "b", "taken": True}),
    ]
    assert "held" not in again.state
    assert_size_kept(again.state)


# terminate --------------------------------------------------------------------------------------


def test_terminate_journals_its_reason_and_only_then_how_many_held_messages_it_dropped() -> None:
    definition, state = started(AWAITING)
    ended = step(definition, state, ev.Terminate("no longer needed"), 0)
    assert journal(ended)[0] == ("terminating", "p", {"reason": "no longer needed"})
    assert journal(ended)[-1] == ("terminated", "p", {})
    paused = step(definition, state, ev.Pause(), 0).state
    held = step(definition, paused, ev.EventReceived("go", {}), 0).state
    dropped = step(definition, held, ev.Terminate("stop"), 0)
    assert journal(dropped)[0] == ("terminating", "p", {"reason": "stop", "held": 1})


# set --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (5, 5),
        ("x" * 998, "x" * 998),  # 1,000 bytes of JSON: shown as it is
        ("x" * 999, "(a str of 1001+ bytes)"),
        (["y" * 2_000], "(a list of 2004+ bytes)"),
    ],
)
def test_set_journals_a_value_up_to_1000_bytes_and_a_larger_one_by_its_type_and_size(
    value: Any, shown: Any
) -> None:
    definition, state = started(AWAITING)
    created = step(definition, state, ev.SetContext({"v": value}), 0)
    assert journal(created) == [
        ("set", "p", {"name": "v", "old": None, "new": shown, "created": True})
    ]
    replaced = step(definition, created.state, ev.SetContext({"v": 1}), 0)
    assert journal(replaced) == [("set", "p", {"name": "v", "old": shown, "new": 1})]


def test_set_writes_a_name_declared_twice_in_the_innermost_scope_in_progress() -> None:
    definition, state = started(
        """<process><context><property name="a" type="int">1</property></context>
        <sequence><context><property name="a" type="int">2</property></context>
        <await event="go"/></sequence></process>"""
    )
    result = step(definition, state, ev.SetContext({"a": 20}), 0)
    assert journal(result) == [("set", "p_0", {"name": "a", "old": 2, "new": 20})]
    assert result.state["scopes"] == {"": {"a": 1}, "0": {"a": 20}}


BIG = """<process><context><property name="doc" type="str">""</property></context>
<await event="go"/></process>"""


def test_set_refuses_a_value_that_would_take_the_state_past_its_limit() -> None:
    limits = Limits(max_state_size=20_000)
    definition = parse_definition(BIG)
    state = step(definition, None, ev.Start("p"), 0, limits).state
    together = {"doc": "d" * 12_000, "other": "o" * 12_000}  # each would fit alone
    for values in ({"doc": "d" * 30_000}, {"other": "o" * 30_000}, together):
        refused = step(definition, state, ev.SetContext(values), 0, limits)
        assert refused.state is state
        reason = "the values would take the state past max_state_size"
        assert journal(refused) == [("ignored", "p", {"reason": reason})]


def test_set_replaces_a_large_value_by_one_as_large_near_the_limit() -> None:
    limits = Limits(max_state_size=20_000)
    definition = parse_definition(BIG)
    state = step(definition, None, ev.Start("p", {"doc": "a" * 12_000}), 0, limits).state
    replaced = step(definition, state, ev.SetContext({"doc": "b" * 12_000}), 0, limits)
    assert replaced.state["scopes"][""]["doc"] == "b" * 12_000
    assert_size_kept(replaced.state)


def test_set_may_fill_the_state_up_to_its_limit_exactly() -> None:
    definition, state = started(AWAITING)
    # a new property "zz" holding "v" * 100 adds its name, quotes, colon, comma and value
    size = json_size(state, DEFAULT_LIMITS.max_state_size)[0]
    growth = len("zz") + 4 + 100 + 2
    values = ev.SetContext({"zz": "v" * 100})
    filled = step(definition, state, values, 0, Limits(max_state_size=size + growth))
    assert filled.state["scopes"][""]["zz"] == "v" * 100
    over = step(definition, state, values, 0, Limits(max_state_size=size + growth - 1))
    assert over.state is state


def test_a_state_at_its_limit_may_have_a_value_replaced_by_one_as_large() -> None:
    definition, state = started(AWAITING)
    full = Limits(max_state_size=json_size(state, DEFAULT_LIMITS.max_state_size)[0])
    replaced = step(definition, state, ev.SetContext({"n": 7}), 0, full)
    assert journal(replaced) == [("set", "p", {"name": "n", "old": 0, "new": 7})]
    grown = step(definition, state, ev.SetContext({"n": 10}), 0, full)  # one byte more
    assert grown.state is state
    assert journal(grown) == [
        ("ignored", "p", {"reason": "the values would take the state past max_state_size"})
    ]


def test_set_counts_what_it_writes_in_the_size_the_state_keeps() -> None:
    definition, state = started(AWAITING)
    written = step(definition, state, ev.SetContext({"v": "w" * 500}), 0).state
    assert written["size"] == started(AWAITING, {"v": "w" * 500})[1]["size"]


# rerun ------------------------------------------------------------------------------------------


def _finished(xml: str) -> tuple[Definition, State]:
    """An instance of ``xml`` run to its end, its actions answered ``done`` in turn."""
    definition, state = started(xml)
    while state["workitems"]:
        workitem = next(iter(state["workitems"]))
        answer = {"workitem_id": workitem, "payload": {"status": "done"}}
        state = step(definition, state, ev.ParticipantResponse(answer), 0).state
    return definition, state


SEQUENCE = """<process><sequence><action participant="a"/><action participant="b"/>
<action participant="c"/></sequence></process>"""


def test_rerun_journals_the_activity_and_the_status_it_left() -> None:
    definition, state = _finished(SEQUENCE)
    assert state["status"] == "completed"
    rerun = step(definition, state, ev.Rerun("p_0_1"), 0)
    assert journal(rerun)[0] == ("rerun", "p_0_1", {"was": "completed"})
    assert journal(rerun)[-1] == ("dispatched", "p_0_1", {"participant": "b", "workitem": _any})


def test_rerun_of_a_paused_instance_journals_how_many_held_messages_it_dropped() -> None:
    definition, state = started(AWAITING)
    paused = step(definition, state, ev.Pause(), 0).state
    held = step(definition, paused, ev.EventReceived("go", {}), 0).state
    rerun = step(definition, held, ev.Rerun("p_0"), 0)
    assert journal(rerun)[0] == ("rerun", "p_0", {"was": "paused", "held": 1})
    assert rerun.state["status"] == "running" and "held" not in rerun.state


def test_rerun_of_a_faulted_instance_clears_its_fault() -> None:
    definition, state = _finished(
        '<process><action participant="a"/><fault code="Late"/></process>'
    )
    assert state["status"] == "faulted"
    rerun = step(definition, state, ev.Rerun("p_0"), 0)
    assert rerun.state["status"] == "running" and rerun.state["fault"] is None
    assert journal(rerun)[0] == ("rerun", "p_0", {"was": "faulted"})


def test_rerun_with_values_that_cannot_be_set_runs_again_and_journals_why_they_were_not() -> None:
    definition, state = _finished(SEQUENCE)
    rerun = step(definition, state, ev.Rerun("p_0_2", [1]), 0)  # type: ignore[arg-type]
    assert rerun.state["status"] == "running"
    assert journal(rerun)[:2] == [
        ("rerun", "p_0_2", {"was": "completed"}),
        ("ignored", "p", {"reason": "the values are not an object"}),
    ]


@pytest.mark.parametrize(
    ("activity", "shown"),
    [("q_0", "q_0"), ("p_9", "p_9"), (5, "5"), (None, "None"), ("q" * 400, "q" * 297 + "...")],
)
def test_rerun_of_no_activity_of_the_process_is_journalled_with_the_name_given(
    activity: Any, shown: str
) -> None:
    definition, state = _finished(SEQUENCE)
    result = step(definition, state, ev.Rerun(activity), 0)
    assert result.state is state
    assert journal(result) == [
        ("ignored", "p", {"reason": "no such activity in this process", "activity": shown})
    ]


@pytest.mark.parametrize(
    ("xml", "activity"),
    [
        (
            """<process><context><faults><default><action participant="a"/></default>
            </faults></context><fault code="X"/></process>""",
            "p_f0_0",
        ),
        (
            """<process><sequence><context><faults><default><action participant="a"/>
            </default></faults></context><fault code="X"/></sequence></process>""",
            "p_0_f0_0",
        ),
    ],
)
def test_rerun_inside_a_fault_handler_is_refused_at_that_activity(xml: str, activity: str) -> None:
    definition, state = started(xml)
    assert [f"p_{path}" for path in state["workitems"].values()] == [activity]
    result = step(definition, state, ev.Rerun(activity), 0)
    assert result.state is state
    reason = "cannot rerun inside a fault handler: rerun its block instead"
    assert journal(result) == [("ignored", activity, {"reason": reason})]


def test_rerun_in_a_running_sequence_goes_on_with_the_activities_after_it() -> None:
    definition, state = started(SEQUENCE)
    for _ in range(2):  # a and b answered: c waits
        workitem = next(iter(state["workitems"]))
        answer = {"workitem_id": workitem, "payload": {"status": "done"}}
        state = step(definition, state, ev.ParticipantResponse(answer), 0).state
    assert list(state["workitems"].values()) == ["0_2"]
    state = step(definition, state, ev.Rerun("p_0_0"), 0).state
    order = []
    while state["workitems"]:
        [(workitem, path)] = state["workitems"].items()
        order.append(path)
        answer = {"workitem_id": workitem, "payload": {"status": "done"}}
        state = step(definition, state, ev.ParticipantResponse(answer), 0).state
    assert order == ["0_0", "0_1", "0_2"]
    assert state["status"] == "completed"


def test_rerun_in_an_all_that_ended_waits_for_that_branch_only_then_goes_on() -> None:
    definition, state = started(
        '<process><all><action participant="a"/><action participant="b"/></all>'
        '<action participant="c"/></process>'
    )

    def answer(path: str) -> State:
        [workitem] = [w for w, p in state["workitems"].items() if p == path]
        done = {"workitem_id": workitem, "payload": {"status": "done"}}
        return step(definition, state, ev.ParticipantResponse(done), 0).state

    state = answer("0_0")
    state = answer("0_1")
    assert list(state["workitems"].values()) == ["1"]  # the all ended: c waits
    state = step(definition, state, ev.Rerun("p_0_1"), 0).state
    assert list(state["workitems"].values()) == ["0_1"]
    state = answer("0_1")
    assert list(state["workitems"].values()) == ["1"]
    state = answer("1")
    assert state["status"] == "completed"


def test_rerun_in_a_block_running_its_fault_handler_leaves_the_handler() -> None:
    definition, state = started(
        """<process><sequence><context><faults><default><await event="fixed"/></default>
        </faults></context><action participant="a"/><fault code="X"/></sequence>
        <action participant="b"/></process>"""
    )
    [workitem] = state["workitems"]
    answer = {"workitem_id": workitem, "payload": {"status": "done"}}
    handling = step(definition, state, ev.ParticipantResponse(answer), 0).state
    assert list(handling["awaits"].values()) == ["fixed"]  # the handler waits
    assert handling["scopes"]["0"] == {"inst:fault": {"code": "X", "message": ""}}
    rerun = step(definition, handling, ev.Rerun("p_0_0"), 0)
    assert journal(rerun) == [
        ("rerun", "p_0_0", {"was": "running"}),
        ("cancelled", "p_0_f0_0", {}),
        ("dispatched", "p_0_0", {"participant": "a", "workitem": _any}),
    ]
    state = rerun.state
    assert state["awaits"] == {} and state["scopes"]["0"] == {}  # the caught fault is forgotten
    assert state["nodes"]["0"] == {"n": handling["nodes"]["0"]["n"], "i": 0}
    [dispatch] = [c for c in rerun.commands if isinstance(c, commands.DispatchWorkitem)]
    assert dispatch.message["payload"] == {"status": "done"}
    workitem = dispatch.workitem_id
    answer = {"workitem_id": workitem, "payload": {"status": "done"}}
    state = step(definition, state, ev.ParticipantResponse(answer), 0).state
    # the fault again: caught by the handler afresh, which waits again
    assert list(state["awaits"].values()) == ["fixed"]
    state = step(definition, state, ev.EventReceived("fixed", {}), 0).state
    assert list(state["workitems"].values()) == ["1"]


def test_rerun_inside_a_sequence_inside_a_foreach_that_ended_starts_the_foreach_again() -> None:
    definition, state = _finished(
        """<process><context><property name="items" type="json">[1, 2]</property>
        </context><foreach select="items"><sequence><action participant="a"/>
        <action participant="b"/></sequence></foreach></process>"""
    )
    assert state["status"] == "completed"
    state = step(definition, state, ev.Rerun("p_0_0_1"), 0).state
    order = []
    while state["workitems"]:
        [(workitem, path)] = state["workitems"].items()
        order.append(path)
        answer = {"workitem_id": workitem, "payload": {"status": "done"}}
        state = step(definition, state, ev.ParticipantResponse(answer), 0).state
    assert order == ["0_0_0", "0_0_1", "0_0_0", "0_0_1"]
    assert state["status"] == "completed"


# restart ----------------------------------------------------------------------------------------


def test_restart_journals_the_status_it_left_and_how_many_held_messages_it_dropped() -> None:
    definition, state = started(AWAITING)
    restarted = step(definition, state, ev.Restart(), 0)
    assert journal(restarted)[0] == ("restarted", "p", {"was": "running"})
    paused = step(definition, state, ev.Pause(), 0).state
    held = step(definition, paused, ev.EventReceived("go", {}), 0).state
    restarted = step(definition, held, ev.Restart(), 0)
    assert journal(restarted)[0] == ("restarted", "p", {"was": "paused", "held": 1})
    assert restarted.state["status"] == "running" and "held" not in restarted.state
    assert_size_kept(restarted.state)


def test_restart_of_a_faulted_instance_runs_it_again_without_its_fault() -> None:
    definition, state = _finished(
        '<process><action participant="a"/><fault code="Late"/></process>'
    )
    assert state["status"] == "faulted"
    restarted = step(definition, state, ev.Restart(), 0)
    assert journal(restarted)[0] == ("restarted", "p", {"was": "faulted"})
    assert restarted.state["status"] == "running" and restarted.state["fault"] is None
    assert list(restarted.state["workitems"].values()) == ["0"]
    assert_size_kept(restarted.state)


# subprocess results that cannot be taken (step) -------------------------------------------------


@pytest.mark.parametrize(
    ("child", "shown"),
    [
        ("p.99", "p.99"),
        (None, None),
        (5, 5),
        (True, True),
        (2.5, 2.5),
        (["p.3"], "(a list)"),
        ("c" * 300, "c" * 300),
        ("c" * 301, "c" * 297 + "..."),
    ],
)
def test_a_result_of_a_subprocess_no_call_waits_for_is_journalled_with_its_id(
    child: Any, shown: Any
) -> None:
    definition, state = started(CALLING)
    result = step(definition, state, ev.ChildFinished(child, "completed"), 0)
    assert result.state is state
    assert journal(result) == [
        ("ignored", "p", {"reason": "no call waits for this subprocess", "child": shown})
    ]


@pytest.mark.parametrize(
    ("status", "context", "fault", "problem"),
    [
        ("finished", {}, None, "has an unknown status 'finished'"),
        (3, {}, None, "has an unknown status 3"),
        ("completed", [1], None, "has a context that is not an object"),
        ("completed", {1: 2}, None, "has a context that is not an object"),
        ("faulted", {}, ["X"], "has a fault that is not an object"),
        ("faulted", {}, {"code": "X"}, "has a fault without a code and a message"),
    ],
)
def test_a_subprocess_result_of_another_shape_is_journalled_at_the_call(
    status: Any, context: Any, fault: Any, problem: str
) -> None:
    definition, state = started(CALLING)
    [child] = state["children"]
    result = step(definition, state, ev.ChildFinished(child, status, context, fault), 0)
    assert result.state is state
    reason = f"the subprocess's result {problem}"
    assert journal(result) == [("ignored", "p_0", {"reason": reason, "child": child})]


# the size the state keeps of itself -------------------------------------------------------------

FAULTING = """<process on-fault="suspend"><sequence><action participant="w"/>
<assign property="x">context['m'] + 1</assign></sequence></process>"""


def test_rerun_and_restart_of_an_incident_keep_the_size_a_fresh_launch_keeps() -> None:
    # what the incident added to the kept size goes with it: nothing drifts
    fields = {"m": "one", "pad": "p" * 300}
    definition, launched = started(FAULTING, fields)
    [workitem] = launched["workitems"]
    done = {"workitem_id": workitem, "payload": {"status": "done"}}
    suspended = step(definition, launched, ev.ParticipantResponse(done), 0).state
    assert suspended["status"] == "suspended" and "incident" in suspended
    for operation in (ev.Rerun("p_0_0"), ev.Restart(fields)):
        again = step(definition, suspended, operation, 0).state
        assert "incident" not in again
        assert again["size"] == launched["size"], operation


TWO_AWAITS = """<process><await event="one"/><await event="two"/></process>"""


def test_held_messages_leave_nothing_in_the_kept_size_once_applied_or_dropped() -> None:
    definition, launched = started(TWO_AWAITS, {"pad": "q" * 100})
    direct = step(definition, launched, ev.EventReceived("one", {"x": "y" * 50}), 0).state
    paused = step(definition, launched, ev.Pause(), 0).state
    held = step(definition, paused, ev.EventReceived("one", {"x": "y" * 50}), 0).state
    resumed = step(definition, held, ev.Resume(), 0).state
    assert resumed["size"] == direct["size"]
    rerun = step(definition, held, ev.Rerun("p_0"), 0).state
    assert rerun["size"] == launched["size"]
    restarted = step(definition, held, ev.Restart({"pad": "q" * 100}), 0).state
    assert restarted["size"] == launched["size"]


def test_many_held_messages_keep_the_size_estimate_above_the_real_size() -> None:
    definition, state = started(AWAITING)
    state = step(definition, state, ev.Pause(), 0).state
    for _ in range(150):
        state = step(definition, state, ev.EventReceived("go", {}), 0).state
    assert len(state["held"]) == 150
    assert_size_kept(state)


# stray timers and retries (step) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("timer", "shown"), [("p_9.9", "p_9.9"), (5, 5), (["p_0.3"], "(a list)"), (None, None)]
)
def test_a_timer_no_activity_waits_for_is_journalled_with_its_id(timer: Any, shown: Any) -> None:
    definition, state = started(AWAITING)
    result = step(definition, state, ev.TimerFired(timer), 0)
    assert result.state is state
    assert journal(result) == [
        ("ignored", "p", {"reason": "no activity waits for this timer", "timer": shown})
    ]


@pytest.mark.parametrize(
    ("activity", "shown"), [("p_0", "p_0"), (None, None), (5, 5), (["p_0"], "(a list)")]
)
def test_a_retry_with_no_failed_action_is_journalled_with_the_activity_named(
    activity: Any, shown: Any
) -> None:
    definition, state = started('<process><action participant="a"/></process>')
    result = step(definition, state, ev.Retry(activity), 0)
    assert result.state is state
    assert journal(result) == [
        ("ignored", "p", {"reason": "no failed action to retry", "activity": shown})
    ]
