"""The limits of one step: its budget of work, the state's size, the messages it sends; and the
trust checks on what comes back (launch fields, answers, subprocess results).

Hostile definitions fault ``LimitExceeded`` with a message that names the limit; legitimate heavy
steps pass. No timings here: ``benchmarks/hostile_steps.py`` prints those.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bureaucrat import testing
from bureaucrat.definition import parse_definition
from bureaucrat.definition.limits import Budget, json_size
from bureaucrat.engine import DEFAULT_LIMITS, LIMIT_EXCEEDED, Limits, sizes, step
from bureaucrat.engine import commands as cmd
from bureaucrat.engine import events as ev
from bureaucrat.engine.budget import over_budget
from bureaucrat.engine.runtime import Runtime
from bureaucrat.engine.sizes import ENVELOPE, Sizes
from bureaucrat.engine.state import State
from bureaucrat.testing import ProcessResult, run_process

DOUBLING = """<process>
  <context><property name="x" type="json">["abcdefgh"]</property></context>
  <while><condition>True</condition>
    <assign property="x">[context["x"], context["x"]]</assign>
  </while>
</process>"""

BURNING = (
    "<process><while><condition>"
    + " and ".join(['sorted(list("ab"*50000))'] * 280)
    + '</condition><assign property="n">1</assign></while></process>'
)

SUMMING = """<process><while>
  <condition>len(sorted(list("ab"*50000))) + len(sorted(list("ab"*50000))) &gt; 0</condition>
  <assign property="n">1</assign>
</while></process>"""

FAN_OUT = (
    "<process>"
    + "".join(f'<assign property="p{i}">"a" * 100000</assign>' for i in range(20))
    + "<all>"
    + '<action participant="p"/>' * 200
    + "</all></process>"
)


def stored_size(state: State) -> int:
    """The bytes of ``state`` as the store keeps it: compact JSON in UTF-8."""
    text = json.dumps(state, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8", "surrogatepass"))


def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


def fault_of(result: ProcessResult) -> dict[str, Any]:
    assert result.status == "faulted", result.status
    assert result.fault is not None
    return result.fault


def journal(result: ProcessResult, kind: str) -> list[str]:
    return [line for line in result.trace if line.split(" ")[1] == kind]


# the hostile definitions -------------------------------------------------------------------------


@pytest.mark.slow  # spends the default limit on purpose (a second of CPU): left out of make mutate
def test_a_state_that_doubles_every_round_faults_on_the_state_size() -> None:
    result = run_process(DOUBLING)
    fault = fault_of(result)
    assert fault["code"] == LIMIT_EXCEEDED
    assert "max_state_size" in fault["message"]
    assert "1,000,000" in fault["message"]
    assert "[bureaucrat] max_state_size" in fault["message"]
    assert stored_size(result.state) < 1_000_000


def test_a_state_that_doubles_faults_on_the_budget_when_the_state_may_grow() -> None:
    result = run_process(DOUBLING, limits=Limits(max_state_size=10**9, step_budget=2_000_000))
    fault = fault_of(result)
    assert fault["code"] == LIMIT_EXCEEDED
    assert "step_budget" in fault["message"]
    assert "2,000,000" in fault["message"]
    assert "[bureaucrat] step_budget" in fault["message"]


@pytest.mark.slow  # spends the default limit on purpose (a second of CPU): left out of make mutate
@pytest.mark.parametrize("definition", [BURNING, SUMMING], ids=["and", "sum"])
def test_a_loop_of_costly_conditions_faults_on_the_budget(definition: str) -> None:
    fault = fault_of(run_process(definition))
    assert fault["code"] == LIMIT_EXCEEDED
    assert "step_budget exceeded" in fault["message"]


def test_large_properties_before_a_wide_all_fault_on_the_state_size() -> None:
    result = run_process(FAN_OUT, participants={"p": echo})
    fault = fault_of(result)
    assert fault["code"] == LIMIT_EXCEEDED
    assert "max_state_size" in fault["message"] and "setting p9" in fault["message"]
    assert result.calls == []


def test_a_wide_all_of_large_workitems_faults_on_the_output_at_the_action() -> None:
    limits = Limits(max_state_size=100_000_000)
    result = run_process(FAN_OUT, participants={"p": echo}, limits=limits)
    fault = fault_of(result)
    assert fault["code"] == LIMIT_EXCEEDED
    assert "max_step_output exceeded" in fault["message"]
    assert "[bureaucrat] max_step_output" in fault["message"]
    assert len(result.calls) < 10  # the first few workitems fit in 10 MB, not 200 of them
    faults = journal(result, "fault")
    assert faults[0].split(" ")[2].startswith("process_20_")  # an action of the all


# legitimate heavy steps --------------------------------------------------------------------------


@pytest.mark.slow  # spends the default limit on purpose (a second of CPU): left out of make mutate
def test_a_foreach_over_ten_thousand_elements_passes() -> None:
    result = run_process(
        """<process><foreach select="items">
             <switch>
               <case><condition>context["inst:current"] % 2 == 0</condition>
                 <assign property="even">context.get("even", 0) + 1</assign></case>
               <default><assign property="odd">context.get("odd", 0) + 1</assign></default>
             </switch>
           </foreach></process>""",
        {"items": list(range(10_000))},
    )
    assert result.status == "completed"
    assert (result.context["even"], result.context["odd"]) == (5_000, 5_000)


def test_building_a_hundred_thousand_element_list_once_passes() -> None:
    result = run_process(
        """<process>
             <assign property="big">[0] * 100000</assign>
             <assign property="n">len(sorted(context["big"]))</assign>
           </process>"""
    )
    assert result.status == "completed"
    assert result.context["n"] == 100_000


def test_string_formatting_with_percent_works() -> None:
    result = run_process(
        """<process><context><property name="who" type="str">Ada</property></context>
             <assign property="line">"%s owes %05.1f (%d%%)" % (context["who"], 3.14159, 7)</assign>
             <assign property="named">"%(who)s!" % context</assign>
           </process>"""
    )
    assert result.context["line"] == "Ada owes 003.1 (7%)"
    assert result.context["named"] == "Ada!"


def test_all_expressions_of_a_step_share_one_budget() -> None:
    source = """<process>
      <context><property name="i" type="int">0</property></context>
      <while><condition>context["i"] &lt; 50</condition>
        <assign property="i">context["i"] + len(sorted(list("ab" * 5000)))  * 0 + 1</assign>
      </while></process>"""
    assert run_process(source).status == "completed"
    fault = fault_of(run_process(source, limits=Limits(step_budget=500_000)))
    assert fault["code"] == LIMIT_EXCEEDED and "500,000" in fault["message"]
    alone = parse_definition(source).activities["0_0"]
    budget = Budget(500_000)
    alone.expression.evaluate({"context": {"i": 1}}, budget)  # type: ignore[attr-defined]
    assert not budget.spent  # one evaluation fits: fifty of them together do not


class Watched(Budget):
    """A budget that remembers the least it had left."""

    __slots__ = ("_left", "lowest")

    def __init__(self, units: int) -> None:
        self.lowest = units
        super().__init__(units)

    @property
    def left(self) -> int:
        return self._left

    @left.setter
    def left(self, units: int) -> None:
        self._left = units
        self.lowest = min(self.lowest, units)


@pytest.mark.parametrize(
    "last",
    ['<assign property="x">[1, 2, 3]</assign>', "<sequence/>"],
    ids=["a value measured", "an activity started"],
)
def test_a_step_may_spend_its_budget_to_the_last_unit(
    last: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What one step needs is found with a budget that remembers; with exactly that budget
    the step runs to its end, with one unit less it faults. The step's last spending is
    ``last``: a value measured (``Runtime.charge``) or an activity started (the agenda)."""
    source = f"""<process>
      <context><property name="i" type="int">0</property></context>
      <while><condition>context["i"] &lt; 5</condition>
        <assign property="i">context["i"] + 1</assign>
      </while>
      {last}
    </process>"""
    budgets: list[Watched] = []

    def watched(units: int) -> Watched:
        budgets.append(Watched(units))
        return budgets[-1]

    with monkeypatch.context() as patch:
        patch.setattr("bureaucrat.engine.runtime.Budget", watched)
        assert run_process(source).status == "completed"
    (budget,) = budgets
    needed = DEFAULT_LIMITS.step_budget - budget.lowest
    assert run_process(source, limits=Limits(step_budget=needed)).status == "completed"
    fault = fault_of(run_process(source, limits=Limits(step_budget=needed - 1)))
    assert fault["code"] == LIMIT_EXCEEDED and "step_budget" in fault["message"]


# handlers ----------------------------------------------------------------------------------------


def handled(body: str, cure: str = "") -> str:
    return f"""<sequence>
      <context><faults><case code="LimitExceeded">
        <assign property="caught">context["inst:fault"]["message"][:20]</assign>
        {cure}
        <action participant="cure"/>
      </case></faults></context>
      {body}
    </sequence>"""


LOOPS = DOUBLING[DOUBLING.index("<while>") : -len("</process>")]
BURNS = BURNING[len("<process>") : -len("</process>")]
FEWER_UNITS = Limits(step_budget=2_000_000)
"""A tenth of the default budget: the handlers' tests run out of it ten times sooner."""


def test_a_handler_that_catches_limit_exceeded_runs() -> None:
    result = run_process(
        f"""<process><context><property name="x" type="json">["abcdefgh"]</property></context>
              {handled(LOOPS, cure='<assign property="x">0</assign>')}
              <action participant="after"/>
            </process>""",
        participants={"cure": echo, "after": echo},
        limits=Limits(max_state_size=50_000),
    )
    assert result.status == "completed"
    assert result.context["caught"] == "max_state_size excee"
    assert [name for name, _ in result.calls] == ["cure", "after"]


def test_a_handler_that_catches_the_budget_gets_a_budget_to_run_in() -> None:
    result = run_process(
        f"<process>{handled(BURNS)}</process>", participants={"cure": echo}, limits=FEWER_UNITS
    )
    assert result.status == "completed"
    assert result.context["caught"] == "step_budget exceeded"


CATCHING_IN_A_LOOP = f"""<while><condition>True</condition><sequence>
    <context><faults><default><assign property="caught">1</assign></default></faults></context>
    {BURNS}
  </sequence></while>"""


def test_a_loop_around_a_handler_that_catches_limit_exceeded_still_ends() -> None:
    source = f"<process>{CATCHING_IN_A_LOOP}</process>"
    result = run_process(source, max_steps=10, limits=FEWER_UNITS)
    fault = fault_of(result)
    assert fault["code"] == LIMIT_EXCEEDED and "step_budget" in fault["message"]
    assert result.context["caught"] == 1


@pytest.mark.parametrize("on_fault", ["fault", "suspend"])
def test_a_budget_spent_again_in_its_handler_faults_where_it_ran_out(on_fault: str) -> None:
    """The second time, no handler is tried: the fault (or the incident) names the activity
    whose work spent the budget, and the journal shows it there both times."""
    result = run_process(
        f'<process on-fault="{on_fault}">{CATCHING_IN_A_LOOP}</process>',
        max_steps=10,
        limits=FEWER_UNITS,
    )
    message = over_budget(FEWER_UNITS)
    raised = f'0 fault process_0_0_0 code="{LIMIT_EXCEEDED}" message={json.dumps(message)}'
    assert journal(result, "fault") == [raised, raised]
    assert journal(result, "handled") == [
        '0 handled process_0_0 code="LimitExceeded" handler="process_0_0_f0"'
    ]
    where = {"code": LIMIT_EXCEEDED, "message": message, "activity": "process_0_0_0"}
    if on_fault == "suspend":
        assert result.status == "suspended"
        assert result.state["incident"] == {**where, "path": "0_0_0", "agenda": []}
    else:
        assert result.state["fault"] == where


ELEVEN = "[" + ", ".join(['context["s"]'] * 11) + "]"
"""Eleven references to one string of 2,000 characters: 22 kB once written."""
SMALL = Limits(max_state_size=20_000)


def test_a_handler_that_writes_too_much_itself_ends_the_instance() -> None:
    result = run_process(
        f"""<process><while><condition>True</condition>
              <sequence>
                <context><faults><default>
                  <assign property="again">{ELEVEN}</assign>
                </default></faults></context>
                <assign property="s">"a" * 2000</assign>
                <assign property="y">{ELEVEN}</assign>
              </sequence>
            </while></process>""",
        limits=SMALL,
    )
    fault = fault_of(result)
    assert fault["code"] == LIMIT_EXCEEDED and "setting again" in fault["message"]


def test_a_loop_around_a_handler_of_the_state_size_still_ends() -> None:
    result = run_process(
        f"""<process><while><condition>True</condition>
              <sequence>
                <context><faults><default><assign property="caught">1</assign></default>
                </faults></context>
                <assign property="s">"a" * 2000</assign>
                <assign property="y">{ELEVEN}</assign>
              </sequence>
            </while></process>""",
        max_steps=10,
        limits=Limits(max_state_size=SMALL.max_state_size, max_starts=2_000),
    )
    assert fault_of(result)["code"] in (LIMIT_EXCEEDED, "StepLimitError")
    assert result.context["caught"] == 1


# answers, results and fields past the state's size -----------------------------------------------


class Instance:
    """One instance driven step by step; its state makes a JSON round trip after every step."""

    def __init__(
        self, xml: str, fields: dict[str, Any] | None = None, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self.definition = parse_definition(xml)
        self.limits = limits
        self.state: State | None = None
        self.commands: tuple[cmd.Command, ...] = ()
        self.apply(ev.Start("pid", fields or {}))

    def apply(self, event: ev.Event, now: float = 0.0) -> None:
        result = step(self.definition, self.state, event, now, self.limits)
        self.state = json.loads(json.dumps(result.state))
        assert self.state == result.state
        self.commands = result.commands

    @property
    def current(self) -> State:
        assert self.state is not None
        return self.state

    def dispatched(self) -> list[cmd.DispatchWorkitem]:
        return [c for c in self.commands if isinstance(c, cmd.DispatchWorkitem)]

    def records(self, kind: str) -> list[cmd.Record]:
        return [c for c in self.commands if isinstance(c, cmd.Record) and c.kind == kind]

    def answer(self, workitem: cmd.DispatchWorkitem, **changes: Any) -> None:
        payload = {**workitem.message["payload"], **changes}
        self.apply(ev.ParticipantResponse({**workitem.message, "payload": payload}))


def test_an_answer_past_the_state_size_faults_at_the_action_and_is_not_written() -> None:
    instance = Instance(
        '<process><action participant="p"/><action participant="q"/></process>', limits=SMALL
    )
    (workitem,) = instance.dispatched()
    instance.answer(workitem, big="x" * 30_000, small=1)
    assert instance.current["status"] == "faulted"
    fault = instance.current["fault"]
    assert fault["code"] == LIMIT_EXCEEDED and fault["activity"] == "pid_0"
    assert "max_state_size" in fault["message"] and "20,000" in fault["message"]
    assert "big" not in instance.current["scopes"][""]
    assert "small" not in instance.current["scopes"][""]
    assert instance.dispatched() == []


def test_a_subprocess_result_past_the_state_size_faults_at_the_call() -> None:
    instance = Instance(
        '<process><call process="$sub"/></process>', {"sub": "<process/>"}, limits=SMALL
    )
    (launch,) = [c for c in instance.commands if isinstance(c, cmd.LaunchChild)]
    result = {"sub": "<process/>", "r": "y" * 30_000}
    instance.apply(ev.ChildFinished(launch.process_id, "completed", result))
    fault = instance.current["fault"]
    assert fault["code"] == LIMIT_EXCEEDED and fault["activity"] == "pid_0"
    assert "the changes to r" in fault["message"]
    assert "r" not in instance.current["scopes"][""]


def test_launch_fields_past_the_state_size_fault_the_instance_at_once() -> None:
    instance = Instance(
        '<process><action participant="p"/></process>', {"big": "z" * 30_000}, limits=SMALL
    )
    assert instance.current["status"] == "faulted"
    assert instance.current["fault"]["code"] == LIMIT_EXCEEDED
    assert "the launch's fields" in instance.current["fault"]["message"]
    assert instance.current["scopes"][""] == {}
    assert instance.dispatched() == []
    assert stored_size(instance.current) < 20_000


# the journal of a state past its size: `bureaucratctl show` prints these records
OVER = re.compile(
    r"max_state_size exceeded: (.+) would make the instance's state at least [\d,]+ bytes, "
    r"over the limit of 20,000\. The limit is the configuration key \[bureaucrat\] max_state_size"
)


def journalled(commands: tuple[cmd.Command, ...]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(c.kind, c.activity, dict(c.details)) for c in commands if isinstance(c, cmd.Record)]


def finished(commands: tuple[cmd.Command, ...]) -> list[tuple[str, Any, Any]]:
    """(status, context, fault) of the end's messages: to the world, then to the caller."""
    return [
        (c.status, c.context, c.fault)
        for c in commands
        if isinstance(c, cmd.ProcessFinished | cmd.NotifyParent)
    ]


def test_launch_fields_past_the_state_size_journal_the_fault_at_the_instance() -> None:
    instance = Instance(
        '<process name="n"><action participant="p"/></process>', {"big": "z" * 30_000}, SMALL
    )
    fault = instance.current["fault"]
    assert OVER.fullmatch(fault["message"])[1] == "the launch's fields"  # type: ignore[index]
    assert fault == {"code": LIMIT_EXCEEDED, "message": fault["message"], "activity": "pid"}
    assert journalled(instance.commands) == [
        ("launched", "pid", {"name": "n", "fields": ["big"]}),
        ("fault", "pid", {"code": LIMIT_EXCEEDED, "message": fault["message"]}),
        ("faulted", "pid", {"fault": {"code": LIMIT_EXCEEDED, "message": fault["message"]}}),
    ]


def test_a_running_state_past_a_lowered_limit_is_emptied_and_faults_at_the_step_end() -> None:
    instance = Instance(
        '<process><action participant="p"/><delay duration="5"/></process>', {"big": "z" * 30_000}
    )
    (workitem,) = instance.dispatched()
    instance.limits = SMALL  # the operator lowered max_state_size meanwhile
    instance.answer(workitem)  # it writes nothing; the delay starts; the state is too big
    fault = instance.current["fault"]
    assert OVER.fullmatch(fault["message"])[1] == "this step"  # type: ignore[index]
    assert fault == {"code": LIMIT_EXCEEDED, "message": fault["message"], "activity": "pid"}
    assert (instance.current["status"], instance.current["scopes"]) == ("faulted", {"": {}})
    assert journalled(instance.commands) == [
        ("answered", "pid_0", {"status": "done", "workitem": workitem.message["workitem_id"]}),
        ("fault", "pid", {"code": LIMIT_EXCEEDED, "message": fault["message"]}),
        ("cancelled", "pid_1", {}),
        ("faulted", "pid", {"fault": {"code": LIMIT_EXCEEDED, "message": fault["message"]}}),
    ]
    assert Sizes(instance.current, SMALL).estimate() >= stored_size(instance.current)


@pytest.mark.parametrize("operation", [ev.Terminate("enough"), ev.Pause("lunch")])
def test_a_stopped_state_past_a_lowered_limit_is_emptied_without_a_fault(
    operation: ev.Event,
) -> None:
    instance = Instance('<process><action participant="p"/></process>', {"big": "z" * 30_000})
    instance.limits = SMALL
    instance.apply(operation)
    assert instance.current["fault"] is None
    assert instance.current["scopes"] == {"": {}}
    (kind, activity, details) = journalled(instance.commands)[-1]
    assert (kind, activity, list(details)) == ("emptied", "pid", ["reason"])
    assert OVER.fullmatch(details["reason"])[1] == "this step"  # type: ignore[index]
    if instance.current["status"] == "terminated":  # a paused one keeps what its action sent
        assert stored_size(instance.current) < 20_000
    assert Sizes(instance.current, SMALL).estimate() >= stored_size(instance.current)


def test_a_write_is_refused_exactly_when_the_measured_state_would_pass_the_limit() -> None:
    """The estimate decides only when it is far from the limit; near it the state is measured
    (``json_size``: strings exactly, never below the stored size) and the write is refused only
    if the measured state with the write would pass the limit."""
    definition = parse_definition('<process><action participant="p"/></process>')
    launched = step(definition, None, ev.Start("pid", {"a": "ü" * 3_000, "n": 12}), 0.0)
    before: State = json.loads(json.dumps(launched.state))
    value = "x" * 5_000 + "é\n"
    after = json.loads(json.dumps(before))
    after["scopes"][""]["k"] = value
    need = json_size(after, 10**9)[0]
    assert stored_size(after) <= need <= stored_size(after) + 64  # over only by ints and nulls
    for limit, fits in [(need, True), (need + 1, True), (need - 1, False)]:
        state = json.loads(json.dumps(before))
        runtime = Runtime(definition, state, 1.0, Limits(max_state_size=limit))
        assert sizes.store(runtime, [("", "k", value)], "0", "setting k") is fits
        if fits:
            assert runtime.scopes[""]["k"] == value and runtime.state["fault"] is None
            assert runtime.sizes.estimate() >= stored_size(runtime.state)
        else:
            assert "k" not in runtime.scopes[""]
            fault = runtime.state["fault"]
            assert (fault["code"], fault["activity"]) == (LIMIT_EXCEEDED, "pid_0")
            assert fault["message"] == (
                f"max_state_size exceeded: setting k would make the instance's state at least "
                f"{need:,} bytes, over the limit of {limit:,}. The limit is the configuration "
                "key [bureaucrat] max_state_size"
            )


def test_the_final_context_is_sent_while_it_fits_in_the_output_and_else_faults() -> None:
    """What a finished instance sends (to its caller too, if it has one) carries the context:
    an envelope and the context's JSON per copy, against ``max_step_output``."""
    xml = '<process><assign property="n">12</assign></process>'
    fields = {"big": "z" * 15_000, "u": "ü"}
    context = {**fields, "n": 12}
    need = ENVELOPE + json_size(context, 10**9)[0]  # its integer counted at 3 bytes, not 2
    parent = ev.ParentLink("caller", "caller_0")
    for copies, link in [(1, None), (2, parent)]:
        limits = Limits(max_step_output=copies * need)
        sent = step(parse_definition(xml), None, ev.Start("pid", fields, link), 0.0, limits)
        assert sent.state["status"] == "completed"
        assert finished(sent.commands) == [("completed", context, None)] * copies

        limits = Limits(max_step_output=copies * need - 1)
        cut = step(parse_definition(xml), None, ev.Start("pid", fields, link), 0.0, limits)
        message = (
            "max_step_output exceeded: the final context would bring the messages of this step "
            f"to at least {copies * need:,} bytes, over the limit of {copies * need - 1:,}. The "
            "limit is the configuration key [bureaucrat] max_step_output"
        )
        public = {"code": LIMIT_EXCEEDED, "message": message}
        assert cut.state["fault"] == {**public, "activity": "pid"}
        assert journalled(cut.commands)[1:] == [
            ("fault", "pid", public),
            ("faulted", "pid", {"fault": public}),
        ]
        assert finished(cut.commands) == [("faulted", {}, public)] * copies


@pytest.mark.parametrize(("output", "sent"), [(9_000, False), (10_500, True)])
def test_the_final_context_fits_in_what_the_step_has_not_sent_already(
    output: int, sent: bool
) -> None:
    """A workitem sent in the step that ends the instance counts: the final context (4 kB)
    goes only in what is left of the output after it (about 5 kB)."""
    xml = '<process><all><action participant="p"/><fault code="Stop"/></all></process>'
    instance = Instance(xml, {"t": "t" * 4_000}, limits=Limits(max_step_output=output))
    assert len(instance.dispatched()) == 1
    (finished,) = [c for c in instance.commands if isinstance(c, cmd.ProcessFinished)]
    assert finished.context == ({"t": "t" * 4_000} if sent else {})
    emptied = [(r.kind, r.activity) for r in instance.records("emptied")]
    assert emptied == ([] if sent else [("emptied", "pid")])


def test_a_terminated_instance_whose_context_would_pass_the_output_is_sent_without_it() -> None:
    fields = {"big": "z" * 15_000, "u": "ü"}
    need = ENVELOPE + json_size(fields, 10**9)[0]
    for limit, context in [(need, fields), (need - 1, {})]:
        instance = Instance('<process><action participant="p"/></process>', fields)
        instance.limits = Limits(max_step_output=limit)
        instance.apply(ev.Terminate("enough"))
        assert (instance.current["status"], instance.current["fault"]) == ("terminated", None)
        assert finished(instance.commands) == [("terminated", context, None)]
        kinds = [kind for kind, _, _ in journalled(instance.commands)]
        assert kinds == [
            "terminating",
            "cancelled",
            *(["emptied"] if not context else []),
            "terminated",
        ]
    (emptied,) = [
        details for kind, _, details in journalled(instance.commands) if kind == "emptied"
    ]
    assert emptied == {
        "reason": "max_step_output exceeded: the final context would bring the messages of this "
        f"step to at least {need:,} bytes, over the limit of {need - 1:,}. The limit is the "
        "configuration key [bureaucrat] max_step_output"
    }


def test_the_output_limit_faults_at_the_action_that_would_pass_it() -> None:
    limits = Limits(max_step_output=20_000)
    instance = Instance(
        "<process><all>" + '<action participant="p"/>' * 10 + "</all></process>",
        {"text": "t" * 5_000},
        limits=limits,
    )
    sent = instance.dispatched()
    assert 1 <= len(sent) < 10
    assert sum(len(json.dumps(w.message)) for w in sent) <= 20_000
    fault = instance.current["fault"]
    assert fault["code"] == LIMIT_EXCEEDED and "max_step_output" in fault["message"]
    assert fault["activity"] == f"pid_0_{len(sent)}"


def test_a_workitem_is_sent_exactly_while_it_fits_in_the_output() -> None:
    """A workitem counts its context's measured JSON, its ids (three times the activity id) and
    an envelope against ``max_step_output``; what is sent stays within the limit."""
    fields = {"text": "t" * 5_000, "ü": "ü" * 100, "n": 7}
    need = json_size(fields, 10**9)[0] + 3 * len("pid_0") + ENVELOPE
    xml = '<process><action participant="p"/></process>'
    fits = Instance(xml, fields, Limits(max_step_output=need))
    (workitem,) = fits.dispatched()
    assert len(json.dumps(workitem.message, ensure_ascii=False).encode()) <= need
    cut = Instance(xml, fields, Limits(max_step_output=need - 1))
    assert cut.dispatched() == []
    message = (
        "max_step_output exceeded: the workitem would bring the messages of this step to at "
        f"least {need:,} bytes, over the limit of {need - 1:,}. The limit is the configuration "
        "key [bureaucrat] max_step_output"
    )
    assert cut.current["fault"] == {"code": LIMIT_EXCEEDED, "message": message, "activity": "pid_0"}


@pytest.mark.parametrize(
    ("output", "limit", "count", "at"),
    [(5_000, "max_step_output", 3, "pid_0_4"), (10_000_000, "max_state_size", 10, "pid_0_11")],
)
def test_workitems_measured_one_by_one_add_up_against_both_limits(
    output: int, limit: str, count: int, at: str
) -> None:
    """Near the state's limit each workitem's context is measured (a sibling's large context,
    which the actions do not see, keeps the quick bound from deciding): what they send and what
    their nodes keep add up, and the action that would pass a limit faults."""
    local = "l" * 8_000
    xml = (
        f'<process><all><sequence><context><property name="local" type="str">{local}</property>'
        '</context><await event="x"/></sequence>'
        + '<action participant="b"/>' * 20
        + "</all></process>"
    )
    limits = Limits(max_state_size=15_000, max_step_output=output)
    instance = Instance(xml, {"t": "t" * 500}, limits=limits)
    sent = instance.dispatched()
    assert len(sent) == count
    assert sum(len(json.dumps(w.message)) + ENVELOPE for w in sent) <= output
    fault = instance.current["fault"]
    assert (fault["code"], fault["activity"]) == (LIMIT_EXCEEDED, at)
    assert fault["message"].startswith(f"{limit} exceeded: the workitem would")


def test_the_state_stays_within_its_size_when_the_estimate_is_checked_exactly() -> None:
    # Many small answers: the running estimate grows with every copy sent, the exact measure
    # brings it back, and nothing legitimate is refused.
    instance = Instance(
        """<process><context><property name="n" type="int">0</property></context>
             <while><condition>context["n"] &lt; 300</condition>
               <action participant="p"/></while></process>""",
        {"text": "t" * 5_000},
        limits=SMALL,
    )
    for n in range(300):
        (workitem,) = instance.dispatched()
        instance.answer(workitem, n=n + 1)
    assert instance.current["status"] == "completed"
    assert instance.current["scopes"][""]["n"] == 300


# trust -------------------------------------------------------------------------------------------


def test_launch_fields_named_like_the_engines_own_are_ignored_and_journalled() -> None:
    result = run_process(
        """<process><context><faults><default>
             <assign property="seen">context["inst:fault"]["code"]</assign>
           </default></faults></context>
           <fault code="Real"/></process>""",
        {"inst:fault": {"code": "Forged", "message": "x"}, "inst:current": 1, "ok": 2},
    )
    assert result.context.get("seen") == "Real"
    assert "inst:current" not in result.context and result.context["ok"] == 2
    (launched,) = journal(result, "launched")
    assert 'ignored=["inst:current", "inst:fault"]' in launched
    assert 'fields=["ok"]' in launched


def test_an_answer_whose_target_is_not_its_workitems_activity_is_ignored() -> None:
    instance = Instance('<process><action participant="p"/><action participant="q"/></process>')
    (first,) = instance.dispatched()
    before = instance.current
    forged = {**first.message, "target": "pid_1", "payload": {"status": "done", "x": 1}}
    instance.apply(ev.ParticipantResponse(forged))
    assert instance.current == before
    (ignored,) = instance.records("ignored")
    assert "target" in ignored.details["reason"]
    for workitem_id in ("pid_0.99", 7, ["pid_0.1"], {"a": 1}):
        stray = {**first.message, "workitem_id": workitem_id, "payload": {"status": "done"}}
        instance.apply(ev.ParticipantResponse(stray))
        assert instance.current == before
        assert [r.kind for r in instance.commands if isinstance(r, cmd.Record)] == ["ignored"]
    instance.answer(first, x=2)
    assert instance.current["scopes"][""]["x"] == 2


@pytest.mark.parametrize(
    "forged",
    [
        ev.ChildFinished(["not", "a", "string"], "completed"),  # type: ignore[arg-type]
        ev.ChildFinished("CHILD", "finished"),
        ev.ChildFinished("CHILD", 3),  # type: ignore[arg-type]
        ev.ChildFinished("CHILD", ["completed"]),  # type: ignore[arg-type]
        ev.ChildFinished("CHILD", "completed", context=["a"]),  # type: ignore[arg-type]
        ev.ChildFinished("CHILD", "completed", context={1: "a"}),  # type: ignore[dict-item]
        ev.ChildFinished("CHILD", "faulted", fault="boom"),  # type: ignore[arg-type]
        ev.ChildFinished("CHILD", "faulted", fault={"code": 1, "message": "m"}),
        ev.ChildFinished("CHILD", "faulted", fault={"code": "C"}),
        ev.ChildFinished("CHILD", "faulted", fault={"message": ["m"], "code": "C"}),
    ],
)
def test_a_forged_subprocess_result_is_ignored_without_raising(forged: ev.ChildFinished) -> None:
    instance = Instance('<process><call process="$sub"/></process>', {"sub": "<process/>"})
    (launch,) = [c for c in instance.commands if isinstance(c, cmd.LaunchChild)]
    before = instance.current
    if forged.child_id == "CHILD":
        forged = ev.ChildFinished(launch.process_id, forged.status, forged.context, forged.fault)
    instance.apply(forged)
    assert instance.current == before
    assert [r.kind for r in instance.commands if isinstance(r, cmd.Record)] == ["ignored"]
    instance.apply(
        ev.ChildFinished(launch.process_id, "faulted", {}, {"code": "C", "message": "m"})
    )
    assert instance.current["fault"]["code"] == "C"


@pytest.mark.parametrize(
    "forged",
    [
        ev.ParticipantResponse(["not", "an", "object"]),  # type: ignore[arg-type]
        ev.ParticipantResponse({"workitem_id": {"a": 1}, "payload": {}}),
        ev.ParticipantResponse({"target": ["pid_0"], "payload": {}}),
        ev.TimerFired(["t"]),  # type: ignore[arg-type]
        ev.Retry(["pid_0"]),  # type: ignore[arg-type]
    ],
)
def test_events_of_an_unexpected_shape_are_ignored_without_raising(forged: ev.Event) -> None:
    instance = Instance('<process><action participant="p"/></process>')
    before = instance.current
    instance.apply(forged)
    assert instance.current == before
    assert [r.kind for r in instance.commands if isinstance(r, cmd.Record)] == ["ignored"]


def test_the_conditions_an_event_is_offered_to_draw_on_one_steps_budget() -> None:
    """Each await's condition costs its evaluation from the step's budget: once it is spent,
    the awaits not reached yet do not take the event (the journal says why) and wait on."""
    instance = Instance(
        "<process><all>"
        + '<await event="go"><condition>event["n"] == 1</condition></await>' * 1_000
        + "</all></process>"
    )
    instance.limits = Limits(step_budget=20_000)
    instance.apply(ev.EventReceived("go", {"n": 1}))
    offers = [record.details for record in instance.records("event")]
    taken = [offer for offer in offers if offer["taken"]]
    refused = [offer for offer in offers if not offer["taken"]]
    assert len(offers) == 1_000 and 0 < len(taken) < 1_000
    assert {offer["reason"] for offer in refused} == {
        "expression 'event[\"n\"] == 1' failed: the step's budget of work is spent"
    }
    assert len(instance.current["awaits"]) == len(refused)
    assert instance.current["status"] == "running"


def test_an_event_whose_data_is_not_an_object_comes_without_data() -> None:
    instance = Instance('<process><await event="e"/></process>')
    instance.apply(ev.EventReceived("e", ["x"]))  # type: ignore[arg-type]
    assert instance.current["status"] == "completed"


def test_a_progress_report_journals_a_bounded_status() -> None:
    instance = Instance('<process><action participant="p"/></process>')
    (workitem,) = instance.dispatched()
    instance.answer(workitem, status="x" * 100_000)
    (reported,) = instance.records("reported")
    assert len(reported.details["status"]) <= 2_000


@pytest.mark.parametrize("text", ["\x00", "\ud800", "a\udfffb", "\x00\ud83d"])
def test_nul_and_lone_surrogates_never_make_a_step_raise(text: str) -> None:
    instance = Instance(
        '<process><action participant="p"/><assign property="n">len(context[context["k"]])'
        "</assign></process>",
        {text: text, "k": text, "inst:" + text: 1},
    )
    (workitem,) = instance.dispatched()
    instance.answer(workitem, **{text + "2": text, "error": text})
    assert instance.current["status"] == "completed"
    assert instance.current["scopes"][""]["n"] == len(text)
    instance = Instance('<process><action participant="p"/></process>')
    (workitem,) = instance.dispatched()
    payload = {**workitem.message["payload"], "status": "critical", "error": text * 5_000}
    instance.apply(ev.ParticipantResponse({**workitem.message, "payload": payload}))
    assert instance.current["fault"]["code"] == "ActionError"
    assert len(instance.current["fault"]["message"]) <= 2_000


def test_limits_is_a_frozen_value_with_documented_defaults() -> None:
    assert Limits() == DEFAULT_LIMITS
    assert (Limits().max_state_size, Limits().max_step_output) == (1_000_000, 10_000_000)
    assert Limits().step_budget == 20_000_000
    with pytest.raises(AttributeError):
        Limits().step_budget = 1  # type: ignore[misc]


# the size kept in the state ----------------------------------------------------------------------

GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.xml"))


@pytest.mark.parametrize("case", GOLDEN, ids=[case.stem for case in GOLDEN])
def test_the_size_kept_in_the_state_is_never_below_its_real_size(
    case: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_golden import Participants, operation

    checked = []

    def checking_step(*args: Any) -> Any:
        result = step(*args)
        state = json.loads(json.dumps(result.state))
        assert Sizes(state, DEFAULT_LIMITS).estimate() >= stored_size(state)
        checked.append(state["size"])
        return result

    monkeypatch.setattr(testing, "step", checking_step)
    extra = case.with_suffix(".json")
    options = json.loads(extra.read_text()) if extra.exists() else {}
    fields = {**options.get("fields", {}), "pad": "p" * 3_000, "ünïcode": "ü" * 500}
    events = [(name, data) for name, data in options.get("events", [])]
    operations = [(when, operation(spec)) for when, spec in options.get("operations", [])]
    run_process(case, fields, participants=Participants(), events=events, operations=operations)
    assert checked


@pytest.mark.parametrize("kept", [None, "x", {}, {"scopes": "1", "held": 0, "nodes": 0}])
def test_a_state_whose_kept_size_is_unreadable_is_measured_anew(kept: Any) -> None:
    """States from before sizes were kept, or edited by hand, are measured when read."""
    instance = Instance(
        """<process><sequence><context><property name="q">"w"</property></context>
             <all><action participant="p"/><action participant="f"/><delay duration="5"/></all>
           </sequence></process>""",
        {"a": "ü" * 3_000, "n": 5},
    )
    workitem, failing = sorted(instance.dispatched(), key=lambda w: w.participant != "p")
    instance.answer(failing, status="error", error="e" * 5_000)  # its node keeps the error
    state = {**instance.current, "size": kept}
    if kept is None:
        del state["size"]
    fresh = Sizes(state, DEFAULT_LIMITS).estimate()
    assert stored_size(state) <= fresh <= Sizes(instance.current, DEFAULT_LIMITS).estimate()
    instance.state = state
    instance.answer(workitem, big="b" * 2_000)
    assert instance.current["scopes"][""]["big"] == "b" * 2_000
    assert set(instance.current["size"]) == {"scopes", "held", "nodes"}
    assert Sizes(instance.current, DEFAULT_LIMITS).estimate() >= stored_size(instance.current)


@pytest.mark.parametrize("error", ["e" * 2_000, "\x00" * 2_000, "\U0001f600" * 2_000, "\ud800" * 9])
def test_a_failed_actions_error_is_never_counted_below_its_size(error: str) -> None:
    """The node of an action failed past its retries keeps its error; what that adds to the
    kept size bounds the error's JSON, whose escapes take six bytes a character."""
    instance = Instance('<process><action participant="p"/></process>')
    (workitem,) = instance.dispatched()
    instance.answer(workitem, status="error", error=error)
    assert instance.current["nodes"]["0"]["error"] == error
    assert Sizes(instance.current, DEFAULT_LIMITS).estimate() >= stored_size(instance.current)


def test_a_state_measured_anew_bounds_its_deep_nodes() -> None:
    """Measured anew, each node in progress is bounded by what its path's length allows:
    deep paths take more bytes, in the node's key, its ids and the indexes."""
    deep = "<sequence>" * 20 + "<all>" + '<action participant="p"/>' * 50 + "</all>"
    instance = Instance(f"<process>{deep}{'</sequence>' * 20}</process>")
    assert len(instance.dispatched()) == 50
    state = {key: value for key, value in instance.current.items() if key != "size"}
    assert Sizes(state, DEFAULT_LIMITS).estimate() >= stored_size(state)


def test_the_kept_size_counts_every_node_when_an_await_starts_after_them() -> None:
    instance = Instance(
        "<process><all>" + '<action participant="p"/>' * 50 + '<await event="e"/></all></process>'
    )
    assert Sizes(instance.current, DEFAULT_LIMITS).estimate() >= stored_size(instance.current)


def test_the_kept_size_follows_a_step_that_only_adds_nodes() -> None:
    """A timer starts a hundred awaits: only the nodes grow, and the size kept for the next
    step grows with them."""
    awaits = "".join(f'<await event="{"e" * 40}{n}"/>' for n in range(100))
    instance = Instance(f'<process><delay duration="1"/><all>{awaits}</all></process>')
    (timer,) = [c for c in instance.commands if isinstance(c, cmd.StartTimer)]
    instance.apply(ev.TimerFired(timer.timer_id), now=1)
    assert len(instance.current["awaits"]) == 100
    assert Sizes(instance.current, DEFAULT_LIMITS).estimate() >= stored_size(instance.current)


def test_a_budget_spent_measuring_the_whole_state_faults_at_the_activity_that_writes() -> None:
    """Near its limit the state is measured whole before a write: when that measure spends
    the rest of the budget, the writing activity faults, and nothing is written."""
    xml = (
        '<process><await event="go"/><assign property="y">1</assign><await event="end"/></process>'
    )
    fields = {"big": ["abcdefgh"] * 20_000}
    instance = Instance(xml, fields)
    near = Limits(max_state_size=stored_size(instance.current) + 400)  # the estimate says no
    instance.limits = near
    instance.apply(ev.EventReceived("go", {}))
    assert instance.current["status"] == "running" and instance.current["scopes"][""]["y"] == 1
    instance = Instance(xml, fields)
    instance.limits = replace(near, step_budget=50_000)
    instance.apply(ev.EventReceived("go", {}))
    fault = instance.current["fault"]
    assert (fault["code"], fault["activity"]) == (LIMIT_EXCEEDED, "pid_1")
    assert fault["message"] == over_budget(instance.limits)
    assert "y" not in instance.current["scopes"][""]


def test_a_wide_all_of_small_workitems_passes() -> None:
    instance = Instance("<process><all>" + '<action participant="p"/>' * 3_000 + "</all></process>")
    assert instance.current["status"] == "running"
    assert len(instance.dispatched()) == 3_000
    assert Sizes(instance.current, DEFAULT_LIMITS).estimate() >= stored_size(instance.current)


@pytest.mark.parametrize("size", [19_150, 19_300])
def test_an_incident_that_carries_the_state_past_its_limit_empties_its_contexts(
    size: int,
) -> None:
    """As a fault's, an incident's own bytes count: suspended over the limit, the instance
    keeps its incident and loses its contexts."""
    limits = Limits(max_state_size=20_000)
    message = "m" * 600
    instance = Instance(
        f'<process on-fault="suspend"><action participant="p"/>'
        f'<fault code="Stop" message="{message}"/></process>',
        limits=limits,
    )
    instance.answer(instance.dispatched()[0], big="x" * size)
    assert instance.current["status"] == "suspended"
    assert stored_size(instance.current) <= limits.max_state_size
    assert instance.current["incident"]["message"] == message
    assert instance.current["scopes"] == {"": {}}
    assert [record.kind for record in instance.records("emptied")] == ["emptied"]


@pytest.mark.parametrize("size", [19_150, 19_300])
def test_a_fault_that_carries_the_state_past_its_limit_empties_its_contexts(size: int) -> None:
    """The answer fits; the fault raised after it in the same step, whose 600 characters are
    kept in the state, would carry the state over max_state_size: its contexts are emptied,
    and the fault is kept."""
    limits = Limits(max_state_size=20_000)
    message = "m" * 600
    instance = Instance(
        f'<process><action participant="p"/><fault code="Stop" message="{message}"/></process>',
        limits=limits,
    )
    instance.answer(instance.dispatched()[0], big="x" * size)
    assert stored_size(instance.current) <= limits.max_state_size
    assert (instance.current["fault"]["code"], instance.current["fault"]["message"]) == (
        "Stop",
        message,
    )
    assert [record.kind for record in instance.records("emptied")] == ["emptied"]


@pytest.mark.parametrize(
    ("body", "budget", "output"),
    [
        ('<assign property="copy">context["big"]</assign>', 150_000, 10_000_000),  # measure it
        ('<assign property="big">1</assign>', 50_000, 10_000_000),  # measure what it replaces
        ('<action participant="p"/>', 40_000, 100_000),  # measure the workitem's context
    ],
    ids=["written", "replaced", "sent"],
)
def test_a_budget_spent_measuring_a_value_faults_at_the_activity_that_measures(
    body: str, budget: int, output: int
) -> None:
    """Measuring a large context value costs its walk: the budget runs out there, at the
    activity writing or sending it, which nothing else in the step could spend."""
    limits = Limits(step_budget=budget, max_step_output=output)
    result = run_process(
        f"<process><sequence>{body}</sequence></process>",
        {"big": list(range(20_000))},
        participants={"p": echo},
        limits=limits,
    )
    message = json.dumps(over_budget(limits))
    assert journal(result, "fault") == [
        f'0 fault process_0_0 code="{LIMIT_EXCEEDED}" message={message}'
    ]
    assert result.state["fault"]["activity"] == "process_0_0"
    assert result.context["big"] == list(range(20_000)) and "copy" not in result.context
    assert result.calls == []
