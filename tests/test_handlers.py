"""Fault handlers that compete: the nearest enclosing block with a matching ``<faults>`` catches a
fault, a handler never catches a fault raised inside itself, and terminating (a ``<fault/>`` or
the operator's terminate) during an ``all`` cancels every branch.

DESIGN.md section 3: "the nearest enclosing block that owns a <context> with <faults> catches a
fault: it cancels its unfinished children, runs the first <case> matching the code, else
<default>; when the handler completes the block completes and execution continues after it."

On the pure core (``run_process`` and ``step``): no broker, no database, no clock.
"""

from __future__ import annotations

from typing import Any

from bureaucrat.definition import parse_definition
from bureaucrat.engine import commands as cmd
from bureaucrat.engine import events as ev
from bureaucrat.engine.state import root_context
from bureaucrat.engine.step import step
from bureaucrat.testing import run_process


def block(faults: str, body: str) -> str:
    """A ``<sequence>`` with a ``<context>`` holding ``faults``, then ``body``."""
    return f"<sequence><context><faults>{faults}</faults></context>{body}</sequence>"


def case(code: str, body: str) -> str:
    return f'<case code="{code}">{body}</case>'


def mark(name: str, value: str) -> str:
    """An ``assign`` of the string ``value`` to property ``name``."""
    return f'<assign property="{name}">"{value}"</assign>'


def run(body: str, **participants: Any) -> Any:
    return run_process(f"<process>{body}</process>", participants=participants)


# the nearest handler wins -----------------------------------------------------------------------


def test_the_nearest_of_two_matching_handlers_catches_the_fault() -> None:
    inner = block(case("Boom", mark("caught", "inner")), '<fault code="Boom"/>')
    outer = block(case("Boom", mark("caught", "outer")), inner + mark("after_inner", "yes"))
    result = run(outer + mark("after_outer", "yes"))
    assert result.status == "completed"
    assert result.context == {"caught": "inner", "after_inner": "yes", "after_outer": "yes"}


def test_the_nearest_handler_wins_with_its_default_over_an_outer_case_naming_the_code() -> None:
    inner = block(f"<default>{mark('caught', 'inner default')}</default>", '<fault code="Boom"/>')
    outer = block(case("Boom", mark("caught", "outer case")), inner + mark("after_inner", "yes"))
    result = run(outer)
    assert result.status == "completed"
    assert result.context == {"caught": "inner default", "after_inner": "yes"}


def test_a_fault_deep_inside_three_matching_blocks_is_caught_by_the_innermost() -> None:
    body: str = '<action participant="breaks"/>'
    for level in ("1", "2", "3"):  # 3 is the outermost
        body = block(case("ActionError", mark("caught", level)), body + mark(f"after{level}", "y"))
    result = run(body, breaks=_raises("no"))
    assert result.status == "completed"
    assert result.context == {"caught": "1", "after2": "y", "after3": "y"}


def test_an_inner_handler_that_does_not_match_lets_the_fault_reach_the_outer_one() -> None:
    inner = block(case("Other", mark("caught", "inner")), '<fault code="Boom"/>')
    outer = block(case("Boom", mark("caught", "outer")), inner + mark("after_inner", "yes"))
    result = run(outer + mark("after_outer", "yes"))
    assert result.status == "completed"
    assert result.context == {"caught": "outer", "after_outer": "yes"}


def test_a_caught_fault_cancels_the_catching_blocks_unfinished_siblings_only() -> None:
    inner = block(
        case("Boom", mark("caught", "inner")),
        '<all><await event="never"/><fault code="Boom"/></all>',
    )
    outer = block(case("Boom", mark("caught", "outer")), inner + '<action participant="next"/>')
    result = run(outer, next=lambda payload: {**payload, "next_ran": True})
    assert result.status == "completed"
    assert result.context == {"caught": "inner", "next_ran": True}
    assert not result.state["awaits"] and not result.state["timers"]


# a handler does not catch its own faults --------------------------------------------------------


def test_a_fault_raised_by_a_handler_goes_to_the_next_enclosing_handler() -> None:
    rethrow = mark("inner_ran", "yes") + '<fault code="Boom" message="again"/>'
    inner = block(case("Boom", rethrow), '<fault code="Boom" message="first"/>')
    outer = block(case("Boom", mark("caught", "outer")), inner + mark("after_inner", "yes"))
    result = run(outer + mark("after_outer", "yes"))
    assert result.status == "completed"
    assert result.context == {"inner_ran": "yes", "caught": "outer", "after_outer": "yes"}
    assert sum("handled" in line for line in result.trace) == 2


def test_a_fault_raised_by_the_only_handler_faults_the_process() -> None:
    inner = block(case("Boom", '<fault code="Boom" message="again"/>'), '<fault code="Boom"/>')
    result = run(inner + mark("after", "yes"))
    assert result.status == "faulted"
    assert result.fault is not None and result.fault["code"] == "Boom"
    assert result.fault["message"] == "again"
    assert "after" not in result.context


def test_a_fault_of_another_code_inside_a_handler_is_caught_further_out() -> None:
    inner = block(case("terminate", '<fault code="Worse" message="in the handler"/>'), "<fault/>")
    middle = block(case("Boom", mark("caught", "middle")), inner)
    outer = block(case("Worse", mark("caught", "outer")), middle + mark("after_middle", "no"))
    result = run(outer + mark("after_outer", "yes"))
    assert result.status == "completed"
    assert result.context == {"caught": "outer", "after_outer": "yes"}


def test_a_handler_in_a_loop_catches_the_fault_of_every_round() -> None:
    body = block(
        case("Boom", '<assign property="caught">context["caught"] + 1</assign>'),
        '<fault code="Boom"/>',
    )
    source = f"""<process>
      <context>
        <property name="n" type="int">0</property>
        <property name="caught" type="int">0</property>
      </context>
      <while>
        <condition>context["n"] &lt; 3</condition>
        <assign property="n">context["n"] + 1</assign>
        {body}
      </while>
    </process>"""
    result = run_process(source)
    assert result.status == "completed"
    assert result.context == {"n": 3, "caught": 3}


def test_an_action_failing_inside_a_handler_faults_past_that_handler() -> None:
    cure = '<action participant="cure"/>'
    inner = block(case("Boom", cure), '<fault code="Boom"/>')
    outer = block(case("ActionError", mark("caught", "outer")), inner)
    result = run(outer, cure=_raises("the cure failed"))
    assert result.status == "completed"
    assert result.context == {"caught": "outer"}
    assert [name for name, _ in result.calls] == ["cure"]


# terminating during an all ----------------------------------------------------------------------

ALL_WAITING = """<all>
  <action participant="slow"/>
  <await event="never"/>
  <delay duration="3600"/>
  <sequence><await event="go"/>{ending}</sequence>
</all>"""


def test_the_originals_terminate_during_an_all_cancels_every_branch() -> None:
    source = f"<process>{ALL_WAITING.format(ending='<fault/>')}</process>"
    result = run_process(source, participants={"slow": lambda _: None}, events=[("go", {})])
    assert result.status == "faulted"
    assert result.fault is not None and result.fault["code"] == "terminate"
    assert not result.state["awaits"] and not result.state["timers"]
    assert not result.state["workitems"]


def test_a_terminate_fault_in_an_all_is_caught_by_the_block_around_it() -> None:
    waiting = ALL_WAITING.format(ending="<fault/>")
    body = block(case("terminate", mark("caught", "yes")), waiting) + mark("after", "yes")
    result = run_process(
        f"<process>{body}</process>", participants={"slow": lambda _: None}, events=[("go", {})]
    )
    assert result.status == "completed"
    assert result.context == {"caught": "yes", "after": "yes"}
    assert not result.state["awaits"] and not result.state["timers"]


def test_an_operators_terminate_during_an_all_cancels_every_branch() -> None:
    handled = block(case("Boom", mark("caught", "yes")), ALL_WAITING.format(ending=""))
    definition = parse_definition(f"<process>{handled}</process>")
    started = step(definition, None, ev.Start("p", {}, None), 0.0)
    waits = started.state
    assert waits["workitems"] and waits["awaits"] and waits["timers"]
    ended = step(definition, waits, ev.Terminate("operator"), 1.0)
    assert ended.state["status"] == "terminated"
    assert not ended.state["workitems"] and not ended.state["awaits"]
    assert not ended.state["timers"] and not ended.state["nodes"]
    commands = ended.commands
    assert {c.workitem_id for c in commands if isinstance(c, cmd.CancelWorkitem)} == set(
        waits["workitems"]
    )
    assert {c.timer_id for c in commands if isinstance(c, cmd.CancelTimer)} == set(waits["timers"])
    assert sorted(c.event for c in commands if isinstance(c, cmd.Unsubscribe)) == ["go", "never"]
    assert "caught" not in root_context(ended.state)  # terminate is not a fault: no handler runs
    late = step(definition, ended.state, ev.ParticipantResponse(_answer(waits)), 2.0)
    assert late.state["status"] == "terminated"
    assert not [c for c in late.commands if isinstance(c, cmd.DispatchWorkitem)]


def _answer(state: dict[str, Any]) -> dict[str, Any]:
    [workitem] = state["workitems"]
    return {
        "name": "response",
        "workitem_id": workitem,
        "process_id": "p",
        "payload": {"status": "done"},
    }


def _raises(message: str) -> Any:
    def participant(payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError(message)

    return participant
