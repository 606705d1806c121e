"""The semantics of DESIGN.md section 3, and none of the original's defects (section 4).

Each test runs a small definition through the local runner and asserts its outcome.
"""

from __future__ import annotations

from typing import Any

import pytest

from bureaucrat.errors import ParticipantNotFoundError
from bureaucrat.testing import run_process


def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


def inc(name: str) -> Any:
    def participant(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, name: payload.get(name, 0) + 1}

    return participant


def names(calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [participant for participant, _ in calls]


def test_sequence_of_25_actions_runs_all_in_order() -> None:
    actions = "".join(f'<action participant="p{i}"/>' for i in range(25))
    participants = {f"p{i}": echo for i in range(25)}
    result = run_process(f"<process>{actions}</process>", participants=participants)
    assert result.status == "completed"
    assert names(result.calls) == [f"p{i}" for i in range(25)]


def test_all_of_12_branches_runs_every_branch() -> None:
    branches = "".join(f'<action participant="p{i}"/>' for i in range(12))
    participants = {f"p{i}": echo for i in range(12)}
    result = run_process(f"<process><all>{branches}</all></process>", participants=participants)
    assert result.status == "completed"
    assert sorted(names(result.calls)) == sorted(f"p{i}" for i in range(12))


@pytest.mark.parametrize("items", [[], ["x"], ["x", "y", "z"]])
def test_foreach_runs_body_once_per_element(items: list[str]) -> None:
    seen: list[tuple[Any, Any]] = []

    def visit(payload: dict[str, Any]) -> None:
        seen.append((payload["inst:current"], payload["inst:iteration"]))

    result = run_process(
        '<process><foreach select="items"><action participant="visit"/></foreach></process>',
        {"items": items},
        participants={"visit": visit},
    )
    assert result.status == "completed"
    assert seen == [(item, index) for index, item in enumerate(items, start=1)]


def test_foreach_dotted_select_and_selection_visible() -> None:
    result = run_process(
        """<process><foreach select="order.lines">
             <assign property="last">
               context["inst:selection"][context["inst:iteration"] - 1]
             </assign>
           </foreach></process>""",
        {"order": {"lines": [1, 2, 3]}},
    )
    assert result.status == "completed"
    assert result.context["last"] == 3


def test_foreach_selects_from_the_scope_around_it() -> None:
    # As the original's test: the foreach declares its own prop2, and selects the outer one's.
    seen: list[tuple[Any, Any]] = []

    def visit(payload: dict[str, Any]) -> None:
        seen.append((payload["inst:current"], payload["prop2"]))

    result = run_process(
        """<process>
             <context>
               <property name="prop2" type="json">{"subkey": ["one", "two"]}</property>
             </context>
             <foreach select="prop2.subkey">
               <context><property name="prop2" type="int">2</property></context>
               <action participant="visit"/>
             </foreach>
           </process>""",
        participants={"visit": visit},
    )
    assert result.status == "completed"
    assert seen == [("one", 2), ("two", 2)]
    assert result.context["prop2"] == {"subkey": ["one", "two"]}


def test_foreach_selects_from_the_nearest_enclosing_scope_not_the_root() -> None:
    seen: list[Any] = []
    result = run_process(
        """<process>
             <context><property name="items" type="json">["root"]</property></context>
             <sequence>
               <context><property name="items" type="json">["inner", "scope"]</property></context>
               <foreach select="items"><action participant="visit"/></foreach>
             </sequence>
           </process>""",
        participants={"visit": lambda payload: seen.append(payload["inst:current"])},
    )
    assert result.status == "completed"
    assert seen == ["inner", "scope"]


def test_foreach_context_is_fresh_for_every_element() -> None:
    seen: list[tuple[Any, Any]] = []

    def visit(payload: dict[str, Any]) -> dict[str, Any]:
        seen.append((payload["inst:iteration"], payload["count"]))
        return {**payload, "count": payload["count"] + 10}

    result = run_process(
        """<process><foreach select="items">
             <context><property name="count" type="int">0</property></context>
             <action participant="visit"/>
             <assign property="count">context["count"] + 1</assign>
             <action participant="visit"/>
           </foreach></process>""",
        {"items": ["a", "b", "c"]},
        participants={"visit": visit},
    )
    assert result.status == "completed"
    assert seen == [(1, 0), (1, 11), (2, 0), (2, 11), (3, 0), (3, 11)]
    assert "count" not in result.context


def test_a_fault_without_code_is_terminate_and_handlers_catch_it() -> None:
    result = run_process("<process><fault/></process>")
    assert result.status == "faulted"
    assert result.fault is not None
    assert (result.fault["code"], result.fault["message"]) == ("terminate", "")
    caught = run_process(
        """<process><sequence>
             <context><faults>
               <case code="terminate">
                 <assign property="caught">context["inst:fault"]</assign>
               </case>
             </faults></context>
             <fault/>
           </sequence></process>"""
    )
    assert caught.status == "completed"
    assert caught.context["caught"] == {"code": "terminate", "message": ""}


def test_foreach_over_a_non_list_faults() -> None:
    result = run_process(
        '<process><foreach select="n"><assign property="x">1</assign></foreach></process>', {"n": 4}
    )
    assert result.status == "faulted"
    assert result.fault is not None and result.fault["code"] == "ExpressionError"
    assert "expected a list" in result.fault["message"]


def test_while_counting_with_its_own_context_stops() -> None:
    result = run_process(
        """<process>
             <while>
               <context><property name="counter" type="int">0</property></context>
               <condition>context["counter"] &lt; 3</condition>
               <action participant="count"/>
             </while>
             <action participant="after"/>
           </process>""",
        participants={"count": inc("counter"), "after": echo},
    )
    assert result.status == "completed"
    assert names(result.calls) == ["count", "count", "count", "after"]
    assert "counter" not in result.context  # it lived in the loop's own context


def test_while_with_false_condition_runs_nothing() -> None:
    result = run_process(
        '<process><while><condition>False</condition><action participant="p"/></while></process>',
        participants={"p": echo},
    )
    assert result.status == "completed" and result.calls == []


@pytest.mark.slow  # a hundred thousand starts: the default cap, left out of `make mutate`
def test_endless_instant_loop_faults_instead_of_hanging() -> None:
    result = run_process(
        """<process><while><condition>True</condition>
             <assign property="n">context.get("n", 0) + 1</assign></while></process>"""
    )
    assert result.status == "faulted"
    assert result.fault is not None and result.fault["code"] == "StepLimitError"


SWITCH = """<process>
  <switch>
    <case><condition>context["n"] &gt; 10</condition><action participant="big"/></case>
    <case><condition>context["n"] &gt; 5</condition>
          <condition>context["n"] == 0</condition><action participant="medium"/></case>
    {default}
  </switch>
  <action participant="after"/>
</process>"""


@pytest.mark.parametrize(
    ("n", "default", "expected"),
    [
        (20, "", ["big", "after"]),
        (7, "", ["medium", "after"]),
        (0, "", ["medium", "after"]),
        (3, "", ["after"]),
        (3, '<default><action participant="small"/></default>', ["small", "after"]),
    ],
)
def test_switch_first_matching_case_default_or_nothing(
    n: int, default: str, expected: list[str]
) -> None:
    participants = dict.fromkeys(("big", "medium", "small", "after"), echo)
    result = run_process(SWITCH.format(default=default), {"n": n}, participants=participants)
    assert result.status == "completed"
    assert names(result.calls) == expected


def handled(inner: str) -> str:
    return f"""<process>
      <sequence>
        <context><faults>
          <case code="Other"><action participant="wrong"/></case>
          <case code="Boom, Bang"><action participant="cure"/></case>
          <default><action participant="general"/></default>
        </faults></context>
        {inner}
        <action participant="skipped"/>
      </sequence>
      <action participant="after"/>
    </process>"""


CURE = dict.fromkeys(("wrong", "cure", "general", "skipped", "after", "work"), echo)


@pytest.mark.parametrize(
    "inner",
    [
        '<fault code="Boom" message="m"/>',
        '<switch><case><condition>True</condition><fault code="Boom" message="m"/></case></switch>',
        '<foreach select="items"><fault code="Boom" message="m"/></foreach>',
        '<all><action participant="work"/><fault code="Boom" message="m"/></all>',
        '<while><condition>True</condition><sequence><fault code="Boom" message="m"/>'
        "</sequence></while>",
    ],
    ids=["direct", "switch-case", "foreach", "all-branch", "while"],
)
def test_fault_reaches_nearest_handler(inner: str) -> None:
    seen: list[Any] = []
    participants = {**CURE, "cure": lambda p: seen.append(p["inst:fault"])}
    result = run_process(handled(inner), {"items": [1]}, participants=participants)
    assert result.status == "completed"
    assert "cure" in names(result.calls)
    assert "skipped" not in names(result.calls) and "wrong" not in names(result.calls)
    assert names(result.calls)[-2:] == ["cure", "after"]
    assert seen == [{"code": "Boom", "message": "m"}]


def test_default_handler_catches_other_codes() -> None:
    result = run_process(handled('<fault code="Odd"/>'), participants=CURE)
    assert names(result.calls) == ["general", "after"]


def test_handler_runs_when_last_child_faults() -> None:
    result = run_process(
        """<process><sequence>
             <context><faults><default><action participant="cure"/></default></faults></context>
             <action participant="work"/>
             <fault code="Late"/>
           </sequence></process>""",
        participants={"work": echo, "cure": echo},
    )
    assert result.status == "completed"
    assert names(result.calls) == ["work", "cure"]


def test_fault_in_subprocess_reaches_callers_handler() -> None:
    child = (
        '<process><action participant="child_work"/>'
        '<fault code="ChildBroke" message="oops"/></process>'
    )
    result = run_process(
        """<process><sequence>
             <context><faults>
               <case code="ChildBroke"><action participant="cure"/></case>
             </faults></context>
             <call process="$proc"/>
           </sequence></process>""",
        {"proc": child},
        participants={"child_work": echo, "cure": echo},
    )
    assert result.status == "completed"
    assert names(result.calls) == ["child_work", "cure"]
    assert result.calls[1][1]["inst:fault"] == {"code": "ChildBroke", "message": "oops"}


def test_unmatched_fault_at_root_faults_the_instance() -> None:
    result = run_process(
        '<process><action participant="a"/><fault code="Custom" message="why"/>'
        '<action participant="b"/></process>',
        participants={"a": echo, "b": echo},
    )
    assert result.status == "faulted"
    assert result.fault == {"code": "Custom", "message": "why"}
    assert names(result.calls) == ["a"]


def test_critical_without_error_faults_action_error_with_empty_message() -> None:
    result = run_process(
        '<process><action participant="p"/></process>',
        participants={"p": lambda payload: {"status": "critical"}},
    )
    assert result.status == "faulted"
    assert result.fault == {"code": "ActionError", "message": ""}


def test_participant_that_raises_answers_critical_with_its_text() -> None:
    def broken(payload: dict[str, Any]) -> None:
        raise RuntimeError("disk on fire")

    result = run_process('<process><action participant="p"/></process>', participants={"p": broken})
    assert result.fault == {"code": "ActionError", "message": "disk on fire"}


def test_missing_participant_is_reported_clearly() -> None:
    with pytest.raises(ParticipantNotFoundError, match=r"'ghost'.*process_0"):
        run_process('<process><action participant="ghost"/></process>', participants={"p": echo})


def flaky(failures: int) -> Any:
    attempts: list[int] = []

    def participant(payload: dict[str, Any]) -> dict[str, Any]:
        attempts.append(1)
        if len(attempts) <= failures:
            return {**payload, "status": "error", "error": f"try {len(attempts)}"}
        return {**payload, "ok": True}

    return participant


def test_error_is_retried_per_retries_and_retry_delay() -> None:
    result = run_process(
        '<process><action participant="p" retries="2" retry-delay="5"/></process>',
        participants={"p": flaky(2)},
    )
    assert result.status == "completed"
    assert result.context["ok"] is True
    assert len(result.calls) == 3
    timers = [line for line in result.trace if " timer " in line]
    assert [line.split()[0] for line in timers] == ["5", "10"]


def test_spent_retries_wait_for_a_retry_event() -> None:
    definition = '<process><action participant="p" retries="1"/><action participant="q"/></process>'
    participants = {"p": flaky(5), "q": echo}
    result = run_process(definition, participants=participants)
    assert result.status == "waiting"
    assert names(result.calls) == ["p", "p"]
    assert result.state["nodes"]["0"]["failed"] is True

    from bureaucrat.definition import parse_definition
    from bureaucrat.engine import events, step

    definition_ = parse_definition(definition)
    retried = step(definition_, result.state, events.Retry(), 100.0)
    dispatched = [c for c in retried.commands if type(c).__name__ == "DispatchWorkitem"]
    assert len(dispatched) == 1 and retried.state["nodes"]["0"].get("failed") is None


def test_terminate_cancels_workitems_timers_subscriptions_and_children() -> None:
    from bureaucrat.definition import parse_definition
    from bureaucrat.engine import commands as cmd
    from bureaucrat.engine import events, step

    definition = parse_definition(
        """<process><all>
             <action participant="p" timeout="30"/>
             <delay duration="60"/>
             <await event="go"/>
             <call process="$proc"/>
           </all></process>"""
    )
    started = step(definition, None, events.Start("pid", {"proc": "<process/>"}), 0.0)
    ended = step(definition, started.state, events.Terminate("operator"), 1.0)
    kinds = [type(c) for c in ended.commands]
    for expected in (
        cmd.CancelWorkitem,
        cmd.CancelTimer,
        cmd.Unsubscribe,
        cmd.TerminateChild,
        cmd.ProcessFinished,
    ):
        assert expected in kinds
    assert sum(kind is cmd.CancelTimer for kind in kinds) == 2  # delay and action timeout
    assert ended.state["status"] == "terminated"
    for index in ("workitems", "timers", "awaits", "children", "nodes"):
        assert ended.state[index] == {}
    again = step(definition, ended.state, events.Terminate(), 2.0)
    assert again.state["status"] == "terminated"
    assert not any(isinstance(c, cmd.ProcessFinished) for c in again.commands)


def test_two_all_branches_keep_both_changes() -> None:
    result = run_process(
        '<process><all><action participant="a"/><action participant="b"/></all></process>',
        {"x": 0, "y": 0},
        participants={"a": inc("x"), "b": inc("y")},
    )
    assert result.context == {"x": 1, "y": 1}


def test_property_first_written_in_nested_block_is_visible_after() -> None:
    result = run_process(
        """<process><sequence>
             <context><property name="local" type="int">1</property></context>
             <sequence><action participant="p"/></sequence>
           </sequence>
           <assign property="copy">context["fresh"]</assign></process>""",
        participants={"p": lambda payload: {**payload, "fresh": "new", "local": 2}},
    )
    assert result.status == "completed"
    assert result.context == {"fresh": "new", "copy": "new"}


def test_await_with_false_condition_keeps_waiting_for_the_next_event() -> None:
    result = run_process(
        """<process><await event="go"><condition>event["ok"]</condition></await>
           <action participant="after"/></process>""",
        participants={"after": echo},
        events=[("go", {"ok": False}), ("other", {}), ("go", {"ok": True})],
    )
    assert result.status == "completed"
    assert names(result.calls) == ["after"]


def test_await_condition_reads_context_and_event() -> None:
    result = run_process(
        """<process><context><property name="want" type="str">b</property></context>
           <await event="pick"><condition>event["choice"] == context["want"]</condition></await>
           </process>""",
        events=[("pick", {"choice": "a"})],
    )
    assert result.status == "waiting"
    taken = run_process(
        """<process><context><property name="want" type="str">b</property></context>
           <await event="pick"><condition>event["choice"] == context["want"]</condition></await>
           <action participant="after"/></process>""",
        participants={"after": echo},
        events=[("pick", {"choice": "a"}), ("pick", {"choice": "b"})],
    )
    assert taken.status == "completed"
    assert names(taken.calls) == ["after"]
    assert [line for line in taken.trace if " event " in line] == [
        '0 event process_0 event="pick" taken=false',
        '0 event process_0 event="pick" taken=true',
    ]


def test_an_event_one_await_cannot_evaluate_still_reaches_the_other() -> None:
    """The first await's condition fails on the event (a missing key): it is not taken there,
    the budget that evaluation spent is given back, and the second await takes it."""
    taken = run_process(
        """<process><all>
             <await event="go"><condition>event["a"] == 1</condition></await>
             <sequence>
               <await event="go"><condition>event["b"] == 2</condition></await>
               <assign property="second">True</assign>
             </sequence>
           </all></process>""",
        events=[("go", {"b": 2})],
    )
    assert taken.status == "waiting"
    assert taken.context["second"] is True


def test_await_condition_reads_the_context_of_the_blocks_around_it() -> None:
    taken = run_process(
        """<process><sequence>
             <context><property name="want" type="str">b</property></context>
             <await event="pick"><condition>event["choice"] == context["want"]</condition></await>
           </sequence></process>""",
        events=[("pick", {"choice": "b"})],
    )
    assert taken.status == "completed"


def test_delay_of_half_a_second_is_a_half_second_timer() -> None:
    from bureaucrat.definition import parse_definition
    from bureaucrat.engine import commands as cmd
    from bureaucrat.engine import events, step

    definition = parse_definition('<process><delay duration="0.5"/></process>')
    started = step(definition, None, events.Start("pid"), 1000.0)
    (timer,) = [c for c in started.commands if isinstance(c, cmd.StartTimer)]
    assert timer.due == 1000.5 and timer.kind == cmd.TimerKind.DELAY
    fired = step(definition, started.state, events.TimerFired(timer.timer_id), 1000.5)
    assert fired.state["status"] == "completed"


@pytest.mark.parametrize(
    "activity",
    ['<action participant="slow" timeout="2"/>', '<await event="never" timeout="2"/>'],
)
def test_action_and_await_timeouts_fault_timeout_error(activity: str) -> None:
    result = run_process(
        f"<process>{activity}</process>",
        participants={"slow": lambda payload: {**payload, "status": "working"}},
    )
    assert result.status == "faulted"
    assert result.fault is not None and result.fault["code"] == "TimeoutError"
    assert result.trace[-1].startswith("2 faulted")


def test_call_runs_subprocess_with_callers_context_and_takes_its_changes() -> None:
    child = """<process><action participant="double"/></process>"""
    result = run_process(
        '<process><call process="$proc"/><action participant="after"/></process>',
        {"proc": child, "n": 21},
        participants={"double": lambda p: {**p, "n": p["n"] * 2}, "after": echo},
    )
    assert result.status == "completed"
    assert result.context["n"] == 42
    assert names(result.calls) == ["double", "after"]


def test_call_with_invalid_child_definition_faults_at_the_call() -> None:
    result = run_process(
        '<process><call process="$proc"/></process>', {"proc": "<process><bogus/></process>"}
    )
    assert result.status == "faulted"
    assert result.fault is not None and result.fault["code"] == "DefinitionError"


@pytest.mark.parametrize(
    ("body", "source", "key"),
    [
        (
            '<assign property="x">context["missing"] + 1</assign>',
            'context["missing"] + 1',
            "missing",
        ),
        (
            '<while><condition>context["gone"]</condition><assign property="x">1</assign></while>',
            'context["gone"]',
            "gone",
        ),
        (
            '<switch><case><condition>context["lost"] &gt; 1</condition><assign property="x">1'
            "</assign></case></switch>",
            'context["lost"] > 1',
            "lost",
        ),
    ],
    ids=["assign", "while", "switch"],
)
def test_expression_error_is_a_fault_that_says_why_at_its_activity(
    body: str, source: str, key: str
) -> None:
    result = run_process(f"<process>{body}</process>")
    assert result.status == "faulted"
    assert result.fault == {
        "code": "ExpressionError",
        "message": f"expression {source!r} failed: key {key!r} not found",
    }
    assert result.state["fault"]["activity"] == "process_0"


def test_eleventh_child_is_reachable_by_its_exact_id() -> None:
    actions = "".join(f'<action participant="p{i}"/>' for i in range(12))
    result = run_process(
        f"<process>{actions}</process>", participants={f"p{i}": echo for i in range(12)}
    )
    dispatched = [line.split()[2] for line in result.trace if " dispatched " in line]
    assert dispatched[1] == "process_1" and dispatched[10] == "process_10"
    assert result.status == "completed"


def test_changes_are_the_keys_added_or_changed_only() -> None:
    # Branch b answers with the old value of x: that is not a change and must not undo a's.
    def slow_b(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "y": 1}

    result = run_process(
        '<process><all><action participant="a"/><action participant="b"/></all></process>',
        {"x": 0, "y": 0},
        participants={"a": inc("x"), "b": slow_b},
    )
    assert result.context == {"x": 1, "y": 1}
