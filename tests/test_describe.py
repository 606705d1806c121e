"""``describe``: real definitions driven by the engine into each state, and the tree read back.

``Run`` steps the pure engine one event at a time, as the daemon would, keeping the journal as
``(activity id, kind)`` pairs; each test reads the tree with and, where it matters, without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bureaucrat import ctl
from bureaucrat.definition import parse_definition
from bureaucrat.definition.model import Block, Switch
from bureaucrat.engine import commands as cmd
from bureaucrat.engine import events as ev
from bureaucrat.engine import step
from bureaucrat.engine.describe import ActivityState, ActivityView, Role, WaitingOn, describe
from bureaucrat.engine.state import State
from bureaucrat.store import Store, upgrade
from bureaucrat.testing import run_process
from bureaucrat.tree import render, wants_colour

S = ActivityState
PID = "p"


class Run:
    """One instance stepped by hand: launch it, then answer, fire, send, finish children."""

    def __init__(self, xml: str, fields: dict[str, Any] | None = None) -> None:
        self.definition = parse_definition(xml)
        self.state: State | None = None
        self.journal: list[tuple[str, str]] = []
        self.commands: list[cmd.Command] = []
        self.now = 0.0
        self.apply(ev.Start(PID, fields or {}))

    def apply(self, event: ev.Event) -> None:
        self.now += 1
        result = step(self.definition, self.state, event, self.now)
        self.state = result.state
        self.commands.extend(result.commands)
        self.journal += [(c.activity, c.kind) for c in result.commands if isinstance(c, cmd.Record)]

    def workitem(self, participant: str) -> dict[str, Any]:
        """The latest workitem sent to ``participant``."""
        sent = [c for c in self.commands if isinstance(c, cmd.DispatchWorkitem)]
        return next(c.message for c in reversed(sent) if c.participant == participant)

    def answer(self, participant: str, status: str = "done", **changes: Any) -> None:
        message = self.workitem(participant)
        payload = {**message["payload"], **changes, "status": status}
        self.apply(ev.ParticipantResponse({**message, "payload": payload}))

    def fire(self) -> None:
        """Fire the timer started last."""
        timer = [c for c in self.commands if isinstance(c, cmd.StartTimer)][-1]
        self.apply(ev.TimerFired(timer.timer_id))

    def tree(self, journal: bool = True) -> ActivityView:
        assert self.state is not None
        return describe(self.definition, self.state, self.journal if journal else None)


def states(view: ActivityView) -> dict[str, str]:
    """Every view's state by path (``""`` is the root)."""
    return {v.path: v.state.value for v in view.walk()}


def at(view: ActivityView, path: str) -> ActivityView:
    found = view.find(path)
    assert found is not None, path
    return found


# waiting ----------------------------------------------------------------------------------------


def test_an_action_waits_on_its_workitem_and_what_follows_has_not_started() -> None:
    run = Run('<process name="shop"><action participant="a"/><action participant="b"/></process>')
    tree = run.tree()
    assert (tree.id, tree.element, tree.label, tree.state) == (PID, "process", "shop", S.ACTIVE)
    first = at(tree, "0")
    assert (first.id, first.element, first.label) == ("p_0", "action", "a")
    assert (first.state, first.waiting_on) == (S.WAITING, WaitingOn.WORKITEM)
    assert first.detail == run.workitem("a")["workitem_id"]
    assert at(tree, "1").state is S.NOT_STARTED
    run.answer("a")
    assert states(run.tree()) == {"": "active", "0": "done", "1": "waiting"}


def test_a_delay_waits_on_its_timer_and_an_await_on_its_event() -> None:
    run = Run(
        """<process><all>
             <delay duration="30"/>
             <await event="go"><condition>event["n"] &gt; 1</condition></await>
           </all></process>"""
    )
    tree = run.tree()
    delay, wait = at(tree, "0_0"), at(tree, "0_1")
    assert (delay.label, delay.state, delay.waiting_on) == ("30 s", S.WAITING, WaitingOn.TIMER)
    assert delay.detail is not None and delay.detail.startswith("p_0_0.")
    assert wait.label == 'go if event["n"] > 1'
    assert (wait.state, wait.waiting_on, wait.detail) == (S.WAITING, WaitingOn.EVENT, "go")
    run.apply(ev.EventReceived("go", {"event": "go", "n": 2}))
    assert states(run.tree())["0_1"] == "done"  # an all's child without a node is done
    assert states(run.tree())["0_0"] == "waiting"


def test_a_call_waits_on_its_subprocess() -> None:
    run = Run('<process><call process="$sub"/></process>', {"sub": "<process/>"})
    call = at(run.tree(), "0")
    launched = next(c for c in run.commands if isinstance(c, cmd.LaunchChild))
    assert (call.label, call.state, call.waiting_on) == ("$sub", S.WAITING, WaitingOn.SUBPROCESS)
    assert call.detail == launched.process_id


def test_an_action_that_answers_error_waits_on_a_retry_then_on_an_operator() -> None:
    run = Run('<process><action participant="a" retries="1" retry-delay="10"/></process>')
    run.answer("a", "error", error="busy")
    action = at(run.tree(), "0")
    assert (action.state, action.waiting_on) == (S.WAITING, WaitingOn.RETRY)
    run.fire()
    assert at(run.tree(), "0").waiting_on is WaitingOn.WORKITEM
    run.answer("a", "error", error="still busy")
    action = at(run.tree(), "0")
    assert (action.state, action.waiting_on, action.detail) == (
        S.WAITING,
        WaitingOn.FAILED,
        "still busy",
    )
    run.apply(ev.Retry())
    assert at(run.tree(), "0").waiting_on is WaitingOn.WORKITEM


# blocks and loops -------------------------------------------------------------------------------


def test_an_all_with_one_branch_done() -> None:
    run = Run(
        """<process><all>
             <sequence><action participant="a"/></sequence>
             <action participant="b"/>
           </all><action participant="c"/></process>"""
    )
    run.answer("a")
    tree = run.tree()
    assert states(tree) == {
        "": "active",
        "0": "active",
        "0_0": "done",
        "0_0_0": "done",
        "0_1": "waiting",
        "1": "not_started",
    }
    assert [c.role for c in at(tree, "0").children] == [Role.ACTIVITY, Role.ACTIVITY]


def test_a_foreach_in_its_second_of_three_iterations() -> None:
    run = Run(
        '<process><foreach select="items"><action participant="a"/><assign property="x">1'
        "</assign></foreach></process>",
        {"items": ["x", "y", "z"]},
    )
    loop = at(run.tree(), "0")
    assert (loop.label, loop.round, loop.of) == ("items", 1, 3)
    run.answer("a")
    loop = at(run.tree(), "0")
    assert (loop.state, loop.round, loop.of) == (S.ACTIVE, 2, 3)
    assert [c.state for c in loop.children] == [S.WAITING, S.NOT_STARTED]


def test_a_while_in_its_third_round() -> None:
    run = Run(
        """<process><while>
             <context><property name="i" type="int">0</property></context>
             <condition>context["i"] &lt; 5</condition>
             <action participant="inc"/>
           </while></process>"""
    )
    for i in range(2):
        run.answer("inc", i=i + 1)
    loop = at(run.tree(), "0")
    assert (loop.label, loop.state, loop.round, loop.of) == ('context["i"] < 5', S.ACTIVE, 3, None)
    assert loop.children[0].state is S.WAITING


def test_a_switch_in_progress_runs_one_case_and_skips_the_others() -> None:
    run = Run(
        """<process><switch>
             <case><condition>context["n"] &gt; 10</condition><action participant="big"/></case>
             <case><condition>context["n"] &gt; 0</condition><action participant="small"/></case>
             <default><action participant="none"/></default>
           </switch></process>""",
        {"n": 5},
    )
    switch = at(run.tree(), "0")
    assert [(c.role, c.element, c.label, c.state) for c in switch.children] == [
        (Role.CASE, "case", 'context["n"] > 10', S.SKIPPED),
        (Role.CASE, "case", 'context["n"] > 0', S.ACTIVE),
        (Role.CASE, "default", "default", S.SKIPPED),
    ]
    assert at(switch, "0_1_0").state is S.WAITING and at(switch, "0_0_0").state is S.SKIPPED


HANDLED = """<process><sequence>
  <context><faults>
    <case code="Other"><action participant="other"/></case>
    <default><action participant="cure"/><action participant="after"/></default>
  </faults></context>
  <action participant="first"/>
  <action participant="boom"/>
  <action participant="never"/>
</sequence></process>"""


def test_a_handler_running() -> None:
    run = Run(HANDLED)
    run.answer("first")
    block = at(run.tree(), "0")
    assert [(c.role, c.state) for c in block.children[3:]] == [
        (Role.HANDLER, S.NOT_STARTED),  # a fault may still come
        (Role.HANDLER, S.NOT_STARTED),
    ]
    run.answer("boom", "critical", error="exploded")
    tree = run.tree()
    assert states(tree) == {
        "": "active",
        "0": "active",
        "0_0": "done",
        "0_1": "faulted",
        "0_2": "not_started",
        "0_f0": "skipped",
        "0_f0_0": "skipped",
        "0_f1": "active",
        "0_f1_0": "waiting",
        "0_f1_1": "not_started",
    }
    handler = at(tree, "0_f1")
    assert (handler.id, handler.element, handler.label) == ("p_0_f1", "default", "default")
    assert at(tree, "0_f0").label == "Other"
    # Without the journal, what the handler cut short is cancelled: the state cannot tell more.
    assert {states(run.tree(journal=False))[p] for p in ("0_0", "0_1", "0_2")} == {"cancelled"}
    run.answer("cure")
    run.answer("after")
    done = states(run.tree())
    assert done["0"] == done["0_f1"] == done["0_f1_1"] == done["0_0"] == "done"
    assert (done["0_1"], done["0_2"], done["0_f0"], done[""]) == (
        "faulted",
        "not_started",
        "skipped",
        "done",
    )


# finished instances -----------------------------------------------------------------------------


def test_a_faulted_instance_names_the_activity_and_the_blocks_the_fault_went_up_through() -> None:
    run = Run(
        """<process><sequence><assign property="a">1</assign>
             <fault code="Oops" message="it broke"/><action participant="never"/>
           </sequence><action participant="later"/></process>"""
    )
    assert run.state is not None and run.state["status"] == "faulted"
    tree = run.tree()
    assert states(tree) == {
        "": "faulted",
        "0": "faulted",
        "0_0": "done",
        "0_1": "faulted",
        "0_2": "not_started",
        "1": "not_started",
    }
    assert at(tree, "0_1").detail == "Oops: it broke"
    blind = states(run.tree(journal=False))  # what ran before it is not known: cut short
    assert (blind[""], blind["0"], blind["0_1"], blind["0_0"]) == (
        "faulted",
        "faulted",
        "faulted",
        "cancelled",
    )
    assert (at(tree, "0_1").label, at(tree, "0_1").element) == ("Oops", "fault")


def test_a_fault_raised_in_a_handler_goes_up_through_its_block() -> None:
    """tests/golden/fault_in_handler.xml: a handler raises a fault an outer block catches;
    later a handler's action answers critical and nothing catches it."""
    xml = (Path(__file__).parent / "golden" / "fault_in_handler.xml").read_text()
    participants = {"echo": lambda p: p, "fail": lambda p: {**p, "status": "critical"}}
    result = run_process(xml, participants=participants, process_id=PID)
    assert result.status == "faulted"
    journal = [_record(line) for line in result.trace]
    assert states(describe(parse_definition(xml), result.state, journal)) == {
        "": "faulted",
        "0": "done",  # it caught what its inner block's handler raised
        "0_0": "faulted",
        "0_0_0": "done",
        "0_0_1": "faulted",
        "0_0_f0": "faulted",
        "0_0_f0_0": "done",
        "0_0_f0_1": "faulted",
        "0_0_f0_2": "not_started",
        "0_0_f1": "skipped",
        "0_0_f1_0": "skipped",
        "0_1": "not_started",
        "0_f0": "done",  # the journal's details name the handler: it ran
        "0_f0_0": "done",
        "1": "done",
        "2": "faulted",
        "2_0": "faulted",
        "2_f0": "faulted",
        "2_f0_0": "faulted",
        "3": "not_started",
    }


def _record(line: str) -> tuple[str, str, dict[str, Any]]:
    """(activity id, kind, details) of a ``run_process`` trace line."""
    _, kind, activity, *details = line.split(" ")
    pairs = (detail.split("=", 1) for detail in details if "=" in detail)
    return activity, kind, {key: value.strip('"') for key, value in pairs}


def test_a_terminated_instance_has_what_was_pending_cancelled() -> None:
    run = Run(
        """<process><action participant="a"/><all>
             <action participant="b"/><delay duration="60"/><assign property="x">1</assign>
           </all><action participant="c"/></process>"""
    )
    run.answer("a")
    run.apply(ev.Terminate("enough"))
    assert states(run.tree()) == {
        "": "cancelled",
        "0": "done",
        "1": "cancelled",
        "1_0": "cancelled",
        "1_1": "cancelled",
        "1_2": "done",
        "2": "not_started",
    }
    early = Run('<process><assign property="a">1</assign><delay duration="5"/></process>')
    early.apply(ev.Terminate())
    assert states(early.tree()) == {"": "cancelled", "0": "done", "1": "cancelled"}
    assert states(early.tree(journal=False))[""] == "cancelled"


def test_a_completed_instance_has_what_ran_done_and_the_cases_not_taken_skipped() -> None:
    xml = """<process>
      <switch>
        <case><condition>context["n"] &gt; 10</condition><action participant="big"/></case>
        <default><action participant="small"/></default>
      </switch>
      <foreach select="empty"><action participant="each"/></foreach>
      <while><condition>False</condition><assign property="y">1</assign></while>
    </process>"""
    result = run_process(
        xml, {"n": 1, "empty": []}, participants={"small": lambda p: p}, process_id=PID
    )
    assert result.status == "completed"
    journal = [_pair(line) for line in result.trace]
    definition = parse_definition(xml)
    assert states(describe(definition, result.state, journal)) == {
        "": "done",
        "0": "done",
        "0_0": "skipped",
        "0_0_0": "skipped",
        "0_1": "done",
        "0_1_0": "done",
        "1": "done",
        "1_0": "skipped",  # its body would have left a record
        "2": "done",
        "2_0": "done",  # nothing in it leaves a record: the journal cannot tell
    }
    # An ignored message says nothing of what ran.
    ignored = [*journal, ("p_0_0_0", "ignored"), ("p_1_0", "ignored")]
    assert states(describe(definition, result.state, ignored))["0_0"] == "skipped"
    assert states(describe(definition, result.state, ignored))["1_0"] == "skipped"
    # Without the journal, which case ran is not known: none is claimed to have.
    blind = states(describe(definition, result.state))
    assert (blind["0_0"], blind["0_1"], blind["1_0"]) == ("skipped", "skipped", "done")


def _pair(line: str) -> tuple[str, str]:
    """(activity id, kind) of a ``run_process`` trace line: ``<time> <kind> <activity> ...``."""
    _, kind, activity = line.split(" ")[:3]
    return activity, kind


GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.xml"))
ROOT_STATE = {
    "completed": S.DONE,
    "faulted": S.FAULTED,
    "terminated": S.CANCELLED,
    "waiting": S.ACTIVE,
}


@pytest.mark.parametrize("case", GOLDEN, ids=[case.stem for case in GOLDEN])
def test_every_golden_run_ends_in_a_tree_that_agrees_with_its_state(case: Path) -> None:
    """Each golden definition, run as its trace was made: the tree of its last state has the
    root as the instance ends, waits exactly where the state waits, and ``active`` only on
    blocks in progress."""
    from tests.test_golden import Participants, operation, terminated

    extra = case.with_suffix(".json")
    options = json.loads(extra.read_text()) if extra.exists() else {}
    result = run_process(
        case,
        options.get("fields"),
        participants=Participants(),
        events=[(name, data) for name, data in options.get("events", [])],
        operations=[(when, operation(spec)) for when, spec in options.get("operations", [])],
    )
    if "terminate" in options:
        result = terminated(case, result, options["terminate"])
    journal = [_record(line) for line in result.trace if line.split(" ")[1]]
    definition = parse_definition(case.read_bytes())
    for tree in (describe(definition, result.state, journal), describe(definition, result.state)):
        assert tree.state is ROOT_STATE[result.status]
        views = list(tree.walk())
        waiting = {v.path for v in views if v.state is S.WAITING}
        nodes = result.state["nodes"]
        assert waiting == {
            p for p in nodes if not isinstance(definition.activities[p], Block | Switch)
        }
        assert all(v.path in nodes for v in views if v.state is S.ACTIVE)
        json.dumps(tree.to_json())


# switches, handlers and loops cut short or finished ---------------------------------------------

SWITCH = """<process><action participant="a"/><switch>
  <case><condition>context["n"] &gt; 10</condition><action participant="big"/></case>
  <case><condition>context["n"] &gt; 0</condition><action participant="small"/></case>
  <default><action participant="none"/></default>
</switch></process>"""


def test_a_switch_not_started_then_terminated_while_its_case_runs() -> None:
    run = Run(SWITCH, {"n": 5})
    for tree in (run.tree(), run.tree(journal=False)):
        assert [c.state for c in at(tree, "1").children] == [S.NOT_STARTED] * 3
    run.answer("a")
    run.apply(ev.Terminate())
    assert states(run.tree()) == {
        "": "cancelled",
        "0": "done",
        "1": "cancelled",
        "1_0": "skipped",
        "1_0_0": "skipped",
        "1_1": "cancelled",  # the case chosen, cut short
        "1_1_0": "cancelled",
        "1_2": "skipped",
        "1_2_0": "skipped",
    }
    # Without the journal, which case was chosen is not known: each is cut short.
    blind = states(run.tree(journal=False))
    assert {blind[p] for p in ("1", "1_0", "1_1", "1_2", "1_2_0")} == {"cancelled"}


def test_a_switch_whose_condition_fails_has_chosen_no_case() -> None:
    definition = SWITCH.replace('context["n"] &gt; 0', 'context["missing"]')
    suspended = Run(definition.replace("<process>", '<process on-fault="suspend">'), {"n": 5})
    suspended.answer("a")
    assert suspended.state is not None and suspended.state["status"] == "suspended"
    cases = {"1_0": "not_started", "1_1": "not_started", "1_2": "not_started"}
    assert states(suspended.tree()) == {
        "": "active",
        "0": "done",
        "1": "faulted",
        **cases,
        "1_0_0": "not_started",
        "1_1_0": "not_started",
        "1_2_0": "not_started",
    }
    faulted = Run(definition, {"n": 5})
    faulted.answer("a")
    assert faulted.state is not None and faulted.state["status"] == "faulted"
    tree = faulted.tree()
    assert states(tree) == {**states(suspended.tree()), "": "faulted"}
    assert str(at(tree, "1").detail).startswith("ExpressionError: ")
    blind = states(faulted.tree(journal=False))
    assert (blind["1"], blind["1_0"], blind["1_1_0"], blind["1_2"]) == (
        "faulted",
        "cancelled",
        "cancelled",
        "cancelled",
    )


def test_a_loop_whose_condition_fails_has_its_body_not_started() -> None:
    run = Run(
        """<process on-fault="suspend"><action participant="a"/>
             <while><condition>context["missing"] &gt; 1</condition>
               <action participant="b"/><action participant="c"/>
             </while></process>"""
    )
    run.answer("a")
    assert run.state is not None and run.state["status"] == "suspended"
    expected = {
        "": "active",
        "0": "done",
        "1": "faulted",
        "1_0": "not_started",
        "1_1": "not_started",
    }
    assert states(run.tree()) == states(run.tree(journal=False)) == expected


def test_an_all_running_its_handler_runs_the_handler_in_sequence() -> None:
    run = Run(
        """<process><all>
             <context><faults><default>
               <action participant="x"/><action participant="y"/>
             </default></faults></context>
             <action participant="w"/><fault code="Stop"/>
           </all></process>"""
    )
    assert states(run.tree()) == {
        "": "active",
        "0": "active",
        "0_0": "cancelled",
        "0_1": "faulted",
        "0_f0": "active",
        "0_f0_0": "waiting",
        "0_f0_1": "not_started",
    }
    run.answer("x")
    assert [c.state for c in at(run.tree(), "0_f0").children] == [S.DONE, S.WAITING]


def test_a_handler_shows_its_codes_and_line_and_what_termination_cut_short() -> None:
    run = Run(
        """<process><sequence>
             <context><faults>
               <case code="A, B"><action participant="x"/><action participant="y"/></case>
               <default><assign property="z">1</assign></default>
             </faults></context>
             <fault code="A"/>
           </sequence></process>"""
    )
    handler = at(run.tree(), "0_f0")
    assert (handler.element, handler.label, handler.line, handler.role) == (
        "case",
        "A, B",
        3,
        Role.HANDLER,
    )
    default = at(run.tree(), "0_f1")
    assert (default.element, default.label, default.line) == ("default", "default", 4)
    run.answer("x")
    run.apply(ev.Terminate())
    assert states(run.tree()) == {
        "": "cancelled",
        "0": "cancelled",
        "0_0": "faulted",
        "0_f0": "cancelled",  # it ran, and was cut short
        "0_f0_0": "done",
        "0_f0_1": "cancelled",
        "0_f1": "skipped",
        "0_f1_0": "skipped",
    }


def test_a_block_that_caught_a_fault_is_done_when_a_sibling_faults_the_instance_later() -> None:
    run = Run(
        """<process><all>
             <sequence>
               <context><faults><default><action participant="cure"/></default></faults>
               </context>
               <sequence><fault code="Inner"/></sequence>
             </sequence>
             <sequence><action participant="w"/><fault code="Outer"/></sequence>
           </all></process>"""
    )
    run.answer("cure")
    run.answer("w")
    assert run.state is not None and run.state["status"] == "faulted"
    assert states(run.tree()) == {
        "": "faulted",
        "0": "faulted",
        "0_0": "done",  # it caught Inner: Outer did not go up through it
        "0_0_0": "faulted",  # Inner went up through it
        "0_0_0_0": "faulted",
        "0_0_f0": "done",
        "0_0_f0_0": "done",
        "0_1": "faulted",
        "0_1_0": "done",
        "0_1_1": "faulted",
    }
    assert at(run.tree(), "0_1_1").detail == "Outer"  # a fault without a message: its code


def test_an_all_that_caught_a_fault_has_the_children_that_finished_at_once_done() -> None:
    run = Run(
        """<process><all>
             <context><faults><default><assign property="cured">1</assign></default></faults>
             </context>
             <sequence><action participant="w"/><fault code="A"/></sequence>
             <assign property="x">1</assign>
           </all></process>"""
    )
    run.answer("w")
    assert run.state is not None and run.state["status"] == "completed"
    journal = [(c.activity, c.kind, c.details) for c in run.commands if isinstance(c, cmd.Record)]
    assert states(describe(run.definition, run.state, journal)) == {
        "": "done",
        "0": "done",
        "0_0": "faulted",
        "0_0_0": "done",
        "0_0_1": "faulted",
        "0_1": "done",  # it ran when the all started, before the fault
        "0_f0": "done",  # the handled record names the handler that ran
        "0_f0_0": "done",
    }


def test_the_branches_of_an_all_after_one_that_faults_as_it_starts_never_started() -> None:
    run = Run(
        """<process><all>
             <action participant="a"/><assign property="x">1</assign>
             <fault code="A"/><action participant="b"/><assign property="y">1</assign>
           </all></process>"""
    )
    assert run.state is not None and run.state["status"] == "faulted"
    assert [activity for activity, kind in run.journal if kind == "skipped"] == ["p_0_3", "p_0_4"]
    assert states(run.tree()) == {
        "": "faulted",
        "0": "faulted",
        "0_0": "cancelled",
        "0_1": "done",  # it started (and finished) before the fault
        "0_2": "faulted",
        "0_3": "not_started",
        "0_4": "not_started",
    }


def test_an_all_that_caught_a_fault_as_a_branch_started_has_the_later_branches_not_started() -> (
    None
):
    run = Run(
        """<process><all>
             <context><faults><default><action participant="cure"/></default></faults></context>
             <assign property="x">1</assign><fault code="A"/><assign property="y">1</assign>
           </all></process>"""
    )
    running = states(run.tree())  # the handler runs
    assert (running["0_0"], running["0_1"], running["0_2"], running["0_f0"]) == (
        "done",
        "faulted",
        "not_started",
        "active",
    )
    run.answer("cure")
    assert run.state is not None and run.state["status"] == "completed"
    done = states(run.tree())
    assert (done["0"], done["0_0"], done["0_2"], done["0_f0"]) == (
        "done",
        "done",
        "not_started",
        "done",
    )


def test_a_branch_skipped_in_one_round_of_a_loop_is_done_when_a_later_round_runs_it() -> None:
    run = Run(
        """<process><foreach select="rounds"><all>
             <context><faults><default><assign property="c">1</assign></default></faults>
             </context>
             <action participant="a"/><foreach select="inst:current"><assign property="z">1
             </assign></foreach><sequence><assign property="x">1</assign></sequence>
           </all></foreach></process>""",
        {"rounds": ["not a list", [1]]},
    )
    # round 1: the inner foreach faulted as it started, the all's handler ran; round 2 runs
    assert ("p_0_0_2", "skipped") in run.journal
    second = states(run.tree())
    assert (second["0_0_0"], second["0_0_1"], second["0_0_2"]) == ("waiting", "done", "done")
    run.answer("a")
    assert run.state is not None and run.state["status"] == "completed"
    assert states(run.tree())["0_0_2"] == "done"


def test_a_suspended_instance_shows_the_branches_it_has_still_to_start_not_started() -> None:
    run = Run(
        """<process on-fault="suspend"><all>
             <action participant="a"/><call process="$sub"/><action participant="b"/>
           </all></process>"""
    )
    assert run.state is not None and run.state["status"] == "suspended"
    assert [e[0] for e in run.state["incident"]["agenda"]] == ["0_2"]
    suspended = states(run.tree())
    assert (suspended["0_0"], suspended["0_1"], suspended["0_2"]) == (
        "waiting",
        "faulted",
        "not_started",
    )
    assert not any(kind == "skipped" for _, kind in run.journal)  # they start on resume
    run.apply(ev.SetContext({"sub": "<process><assign property='s'>1</assign></process>"}))
    run.apply(ev.Resume())
    resumed = states(run.tree())
    assert (resumed["0_1"], resumed["0_2"]) == ("waiting", "waiting")


def test_a_block_that_caught_a_fault_in_one_round_is_faulted_by_one_it_lets_through() -> None:
    run = Run(
        """<process><context><property name="i" type="int">0</property></context>
           <while><condition>True</condition><sequence>
             <context><faults><case code="A"><assign property="caught">1</assign></case></faults>
             </context>
             <assign property="i">context["i"] + 1</assign>
             <action participant="w"/>
             <switch>
               <case><condition>context["i"] == 1</condition><fault code="A"/></case>
               <default><fault code="B" message="again"/></default>
             </switch>
           </sequence></while></process>"""
    )
    run.answer("w")
    run.answer("w")
    assert run.state is not None and run.state["status"] == "faulted"
    faulted = ("", "0", "0_0", "0_0_2", "0_0_2_1", "0_0_2_1_0")  # 0_0 caught A in round 1
    for tree in (run.tree(), run.tree(journal=False)):
        assert {at(tree, p).state for p in faulted} == {S.FAULTED}
        assert at(tree, "0_0_2_1_0").detail == "B: again"


def test_labels_name_what_tells_each_activity_apart() -> None:
    run = Run(
        """<process><sequence><await event="go"/><assign property="total">1</assign>
           </sequence></process>"""
    )
    tree = run.tree()
    assert [(v.element, v.label) for v in tree.walk()] == [
        ("process", ""),  # a process without a name
        ("sequence", ""),
        ("await", "go"),  # without conditions
        ("assign", "total"),
    ]


def test_a_terminated_instance_that_was_suspended_keeps_its_incident_faulted() -> None:
    run = Run(
        '<process on-fault="suspend"><assign property="a">1</assign><fault code="X"/></process>'
    )
    assert states(run.tree()) == {"": "active", "0": "done", "1": "faulted"}
    assert at(run.tree(), "1").detail == "X"
    run.apply(ev.Terminate())
    assert states(run.tree()) == {"": "cancelled", "0": "done", "1": "faulted"}


def test_a_finished_loop_body_is_skipped_only_when_it_would_have_left_a_record() -> None:
    recorded = '<action participant="a"/>'
    bodies = [
        f"<sequence>{recorded}</sequence>",
        f"""<switch><case><condition>True</condition>{recorded}</case>
              <default><delay duration="1"/></default></switch>""",
        f"""<switch><case><condition>True</condition>{recorded}</case>
              <default><assign property="q">1</assign></default></switch>""",
        f"<while><condition>False</condition>{recorded}</while>",
        recorded,
    ]
    loops = "".join(
        f'<foreach select="{s}">{b}</foreach>' for s, b in zip("eeeef", bodies, strict=True)
    )
    run = Run(f"<process>{loops}</process>", {"e": [], "f": [1]})
    run.answer("a")
    assert run.state is not None and run.state["status"] == "completed"
    tree = run.tree()
    assert [at(tree, f"{k}_0").state for k in range(5)] == [
        S.SKIPPED,  # a sequence holding an action: it would have left a record
        S.SKIPPED,  # a switch whose every case would have
        S.DONE,  # a switch with a case that leaves none: the journal cannot tell
        S.DONE,  # a loop may run no round: the journal cannot tell
        S.DONE,  # the last loop ran its round
    ]


def test_loop_conditions_and_cases_are_labelled_by_their_conditions_joined_with_or() -> None:
    run = Run(
        """<process><while><condition>context["a"]</condition><condition>context["b"]</condition>
             <switch><case><condition>1 &gt; 2</condition><condition>True</condition>
               <action participant="x"/></case></switch>
           </while></process>""",
        {"a": True, "b": False},
    )
    tree = run.tree()
    assert at(tree, "0").label == 'context["a"] or context["b"]'
    assert at(tree, "0_0_0").label == "1 > 2 or True"
    assert tree.find("9") is None


def test_a_state_with_unreadable_waits_and_counters_is_described_as_far_as_it_reads() -> None:
    run = Run(
        """<process><all>
             <delay duration="5"/><await event="e"/><call process="$sub"/>
             <action participant="a"/>
             <while><condition>True</condition><action participant="b"/></while>
             <foreach select="items"><action participant="c"/></foreach>
           </all></process>""",
        {"sub": "<process/>", "items": [1, 2]},
    )
    assert run.state is not None
    nodes = {
        **run.state["nodes"],
        "0_0": {"n": 2},  # no timer
        "0_2": {"n": 4},  # no subprocess
        "0_3": {"n": 5, "failed": True},  # no error
        "0_4": {**run.state["nodes"]["0_4"], "r": True},
    }
    scopes = {**run.state["scopes"], "0_5": {"inst:iteration": "2", "inst:selection": "ab"}}
    damaged = {**run.state, "nodes": nodes, "scopes": scopes, "awaits": {}}
    tree = describe(run.definition, damaged, run.journal)
    views = [at(tree, f"0_{k}") for k in range(6)]
    assert [(v.state, v.waiting_on, v.detail) for v in views[:4]] == [
        (S.ACTIVE, None, None),
        (S.ACTIVE, None, None),
        (S.ACTIVE, None, None),
        (S.WAITING, WaitingOn.FAILED, None),
    ]
    assert [(v.round, v.of) for v in views[4:]] == [(None, None), (None, None)]
    assert (at(run.tree(), "0_4").round, at(run.tree(), "0_5").round) == (1, 1)
    assert at(run.tree(), "0_5").of == 2


def test_a_retry_names_its_timer() -> None:
    run = Run('<process><action participant="a" retries="1" retry-delay="10"/></process>')
    run.answer("a", "error", error="busy")
    (timer,) = [c for c in run.commands if isinstance(c, cmd.StartTimer)]
    action = at(run.tree(), "0")
    assert (action.waiting_on, action.detail) == (WaitingOn.RETRY, timer.timer_id)


# statuses from operations -----------------------------------------------------------------------


def test_a_paused_instance_keeps_every_state() -> None:
    run = Run('<process><all><action participant="a"/><action participant="b"/></all></process>')
    running = states(run.tree())
    run.apply(ev.Pause("lunch"))
    run.answer("a")  # held until resume
    assert run.state is not None and run.state["status"] == "paused" and run.state["held"]
    assert states(run.tree()) == running
    run.apply(ev.Resume())
    assert states(run.tree()) == {**running, "0_0": "done"}


def test_a_suspended_instance_has_its_incident_faulted_and_the_rest_as_it_stands() -> None:
    run = Run(
        """<process on-fault="suspend"><all>
             <action participant="a"/><action participant="b"/>
           </all><action participant="c"/></process>"""
    )
    run.answer("b", "critical", error="no")
    assert run.state is not None and run.state["status"] == "suspended"
    tree = run.tree()
    assert states(tree) == {
        "": "active",
        "0": "active",
        "0_0": "waiting",
        "0_1": "faulted",
        "1": "not_started",
    }
    assert at(tree, "0_1").detail == "ActionError: no"
    run.apply(ev.Resume())  # the action that faulted runs again
    assert at(run.tree(), "0_1").waiting_on is WaitingOn.WORKITEM


@pytest.mark.parametrize(
    "damage",
    [
        {"nodes": "x"},
        {"nodes": {"0": 5, "zz": {}}},
        {"nodes": {"0": {"i": "x", "h": 9}}},
        {"scopes": None, "awaits": [], "fault": "x"},
        {"status": "faulted", "fault": {"activity": 3}},
        {"status": "suspended", "incident": {"activity": "q_0"}},
        {"status": "faulted", "fault": "x"},
        {"status": "suspended", "incident": ["x"]},
        {"status": "suspended", "incident": {"activity": "p_0", "agenda": [[], [5], "x", None]}},
    ],
)
def test_a_damaged_state_is_described_without_raising(damage: dict[str, Any]) -> None:
    run = Run("<process><sequence><action participant='a'/></sequence></process>")
    assert run.state is not None
    journal: Any = [("p_0", "x"), ("q", "fault"), ("p_0", "handled", "not details")]
    tree = describe(run.definition, {**run.state, **damage}, journal)
    assert len(list(tree.walk())) == 3
    json.dumps(tree.to_json())


def test_a_state_without_readable_nodes_claims_nothing() -> None:
    run = Run("<process><sequence><action participant='a'/></sequence></process>")
    assert run.state is not None
    for status in ("running", "paused", "suspended"):
        tree = describe(run.definition, {**run.state, "status": status, "nodes": "x"})
        assert states(tree) == {"": "not_started", "0": "not_started", "0_0": "not_started"}


def test_the_json_form_keeps_every_field() -> None:
    run = Run("<process><while><condition>True</condition><delay duration='5'/></while></process>")
    data = run.tree().to_json()
    loop = data["children"][0]
    assert {k: loop[k] for k in ("id", "element", "state", "round", "of", "role")} == {
        "id": "p_0",
        "element": "while",
        "state": "active",
        "round": 1,
        "of": None,
        "role": "activity",
    }
    assert loop["children"][0]["waiting_on"] == "timer"
    assert json.loads(json.dumps(data)) == data
    # `show --tree --json` prints this form and the console draws it: every field, by name
    assert run.state is not None
    assert loop["children"][0] == {
        "id": "p_0_0",
        "path": "0_0",
        "element": "delay",
        "label": "5 s",
        "role": "activity",
        "line": 1,
        "state": "waiting",
        "waiting_on": "timer",
        "detail": run.state["nodes"]["0_0"]["timer"],
        "round": None,
        "of": None,
        "children": [],
    }


# bureaucratctl show --tree ----------------------------------------------------------------------

ESC = "\x1b[31m"
HOSTILE = "\x9b2J\u202e"
"""What a definition may hold (XML refuses ESC itself): CSI, the one-character ESC [, and a
right-to-left override."""


def test_show_tree_prints_the_tree_escaped_and_in_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tree of an instance in a real store, its hostile participant name escaped."""
    url = f"sqlite:///{tmp_path / 'b.db'}"
    upgrade(url)
    config = tmp_path / "b.conf"
    config.write_text(f"[bureaucrat]\ndatabase_url = {url}\n")
    xml = (
        f'<process name="shop"><action participant="ok"/>'
        f'<action participant="evil{HOSTILE}"/><delay duration="9"/></process>'
    )
    run = Run(xml)
    with Store(url) as store:
        digest = store.add_definition(xml)
        with store.transaction() as tx:
            tx.create_instance(PID, digest, "shop", None, None, 0.0)
            first = step(run.definition, None, ev.Start(PID), 1.0)
            tx.apply(PID, first, 1.0)
            sent = next(c for c in first.commands if isinstance(c, cmd.DispatchWorkitem)).message
            done = {**sent, "payload": {**sent["payload"], "status": "done"}}
            answer = ev.ParticipantResponse(done)
            tx.apply(PID, step(run.definition, first.state, answer, 2.0), 2.0)

    monkeypatch.setenv("NO_COLOR", "")
    assert ctl.main(["-c", str(config), "show", PID, "--tree"]) == 0
    printed = capsys.readouterr().out
    tree = printed.split("\ntree\n", 1)[1].splitlines()
    assert tree[0] == "  p  process shop  active"
    assert tree[1] == "    p_0  action ok  done"
    assert tree[2].startswith("    p_1  action evil\\x9b2J\\u202e  waiting on workitem p_1.")
    assert tree[3] == "    p_2  delay 9 s  not started"
    assert not any(c in printed for c in "\x1b\x9b\u202e")  # no colour, nothing injected

    assert ctl.main(["-c", str(config), "show", PID, "--tree", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["state"] for c in report["tree"]["children"]] == ["done", "waiting", "not_started"]
    assert report["tree"]["children"][1]["label"] == f"evil{HOSTILE}"  # JSON keeps the value

    assert ctl.main(["-c", str(config), "show", PID]) == 0
    assert "\ntree\n" not in capsys.readouterr().out  # only when asked for

    with Store(url) as store, store.transaction() as tx:  # a row without a state
        tx.create_instance("empty", digest, "shop", None, None, 0.0)
    assert ctl.main(["-c", str(config), "show", "empty", "--tree"]) == 0
    assert "tree     unavailable: the instance has no readable state" in capsys.readouterr().out


def test_the_tree_is_coloured_on_a_terminal_unless_no_color() -> None:
    run = Run(f'<process><action participant="x{HOSTILE}"/></process>')
    lines = list(render(run.tree(), colour=True))
    assert lines[1].startswith("  p_0  action x\\x9b2J\\u202e  \x1b[33mwaiting on workitem p_0.")
    assert lines[1].endswith("\x1b[0m") and lines[1].count("\x1b") == 2

    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    terminal: Any = Stream(tty=True)
    pipe: Any = Stream(tty=False)
    assert wants_colour(terminal, {}) is True
    assert wants_colour(terminal, {"NO_COLOR": "1"}) is False
    assert wants_colour(pipe, {}) is False
