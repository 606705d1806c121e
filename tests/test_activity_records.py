"""What each activity writes to the journal, the faults it raises and the commands it sends, when
it waits on the outside world (``action``, ``call``, ``await``) and when an operator makes it run
again. The journal is what ``bureaucratctl show`` and the console print, and fault codes and
messages are what users see, so these tests compare them whole.

Tests drive the pure ``step`` one event at a time, so that a subprocess can end any way a real
one could and a timer can fire when the test says.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from bureaucrat.bounds import MAX_PROCESS_ID, utf8_length
from bureaucrat.definition import parse_definition
from bureaucrat.engine import DEFAULT_LIMITS, Limits, step
from bureaucrat.engine import commands as cmd
from bureaucrat.engine import events as ev
from bureaucrat.engine.activities.waiting import child_id
from bureaucrat.engine.describe import describe
from bureaucrat.engine.sizes import Sizes
from bureaucrat.engine.state import activity_id, is_finished, path_of
from tests.test_budgets import Instance as Stepped
from tests.test_budgets import stored_size

Entry = tuple[str, str, dict[str, Any]]


class Instance(Stepped):
    """``test_budgets``' instance driven step by step, with the last step's journal as tuples and
    its one workitem answered."""

    def journal(self) -> list[Entry]:
        """The journal records of the last step: (kind, activity, details)."""
        return [(c.kind, c.activity, c.details) for c in self.commands if isinstance(c, cmd.Record)]

    def one(self, kind: type[Any]) -> Any:
        (found,) = [c for c in self.commands if isinstance(c, kind)]
        return found

    def reply(self, **changes: Any) -> None:
        workitem: cmd.DispatchWorkitem = self.one(cmd.DispatchWorkitem)
        payload = {**workitem.message["payload"], **changes}
        self.apply(ev.ParticipantResponse({**workitem.message, "payload": payload}))


def faulted(code: str, message: str) -> Entry:
    return ("faulted", "pid", {"fault": {"code": code, "message": message}})


# call --------------------------------------------------------------------------------------------

CALL = '<process><call process="$sub"/></process>'
CHILD = "<process>" + "<sequence/>" * 40 + "</process>"


def test_a_terminated_subprocess_faults_its_call_with_terminated_error() -> None:
    instance = Instance(CALL, {"sub": CHILD})
    launch: cmd.LaunchChild = instance.one(cmd.LaunchChild)
    instance.apply(ev.ChildFinished(launch.process_id, "terminated"))
    message = f"subprocess {launch.process_id} was terminated"
    assert instance.journal() == [
        ("child", "pid_0", {"child": launch.process_id, "status": "terminated"}),
        ("fault", "pid_0", {"code": "TerminatedError", "message": message}),
        ("cancelled", "pid_0", {}),
        faulted("TerminatedError", message),
    ]


def test_a_subprocess_that_faulted_without_saying_how_faults_its_call_with_fault() -> None:
    instance = Instance(CALL, {"sub": CHILD})
    launch: cmd.LaunchChild = instance.one(cmd.LaunchChild)
    instance.apply(ev.ChildFinished(launch.process_id, "faulted", {}, None))
    assert instance.journal()[1:] == [
        ("fault", "pid_0", {"code": "Fault", "message": ""}),
        ("cancelled", "pid_0", {}),
        faulted("Fault", ""),
    ]


@pytest.mark.parametrize(
    "fields",
    [{}, {"sub": ""}, {"sub": " \n "}, {"sub": 5}, {"sub": ["<process/>"]}, {"sub": None}],
    ids=["missing", "empty", "blank", "int", "list", "null"],
)
def test_a_call_whose_property_holds_no_definition_faults_call_error(
    fields: dict[str, Any],
) -> None:
    instance = Instance(CALL, fields)
    message = 'call process="$sub": the property holds no process definition'
    assert instance.journal()[1:] == [
        ("fault", "pid_0", {"code": "CallError", "message": message}),
        faulted("CallError", message),
    ]
    assert not [c for c in instance.commands if isinstance(c, cmd.LaunchChild)]


def launch_size(source: str) -> int:
    """The bytes a subprocess's launch counts against the step's output: its definition at
    up to 4 bytes a character, the caller's activity id twice, an envelope, and the context."""
    context = json.dumps({"sub": source}, separators=(",", ":"))
    return 4 * len(source) + 2 * len("pid_0") + 1_000 + len(context)


def test_a_launch_that_just_fits_the_step_output_is_sent() -> None:
    instance = Instance(CALL, {"sub": CHILD}, Limits(max_step_output=launch_size(CHILD)))
    assert instance.one(cmd.LaunchChild).definition == CHILD
    assert instance.journal()[1:] == [("launched", "pid_0", {"child": "pid.3"})]


def test_a_launch_one_byte_over_the_step_output_faults_naming_the_limit() -> None:
    limit = launch_size(CHILD) - 1
    instance = Instance(CALL, {"sub": CHILD}, Limits(max_step_output=limit))
    message = (
        "max_step_output exceeded: the subprocess's launch would bring the messages of this "
        f"step to at least {limit + 1:,} bytes, over the limit of {limit:,}. The limit is the "
        "configuration key [bureaucrat] max_step_output"
    )
    assert instance.journal()[1:] == [
        ("fault", "pid_0", {"code": "LimitExceeded", "message": message}),
        faulted("LimitExceeded", message),
    ]


def test_a_call_keeps_the_digest_of_the_definition_it_launched() -> None:
    # the daemon starts a subprocess only if its caller waits for it with this very definition
    instance = Instance(CALL, {"sub": CHILD})
    digest = hashlib.sha256(CHILD.encode("utf-8")).hexdigest()
    assert instance.current["nodes"]["0"]["definition"] == digest


def test_what_a_finished_call_held_no_longer_counts_in_the_size_of_the_state() -> None:
    instance = Instance(
        '<process><call process="$sub"/><action participant="clerk"/></process>', {"sub": CHILD}
    )
    launch: cmd.LaunchChild = instance.one(cmd.LaunchChild)
    assert instance.current["size"]["held"] == instance.current["nodes"]["0"]["sz"] > 0
    instance.apply(ev.ChildFinished(launch.process_id, "completed", {"sub": CHILD}))
    assert "0" not in instance.current["nodes"]
    assert instance.current["size"]["held"] == instance.current["nodes"]["1"]["sz"]


def test_a_subprocess_id_is_the_callers_id_and_a_number_up_to_the_longest_id() -> None:
    longest = "p" * (MAX_PROCESS_ID - 3)
    assert child_id("pid", 3) == "pid.3"
    assert child_id(longest, 12) == f"{longest}.12"
    assert utf8_length(child_id(longest, 12)) == MAX_PROCESS_ID


@pytest.mark.parametrize(
    ("caller", "prefix"),
    [("p" * (MAX_PROCESS_ID - 2), "p" * 48), ("a" + "é" * 70, "a" + "é" * 23)],
    ids=["ascii", "a character cut at 48 bytes is left out"],
)
def test_a_subprocess_id_too_long_is_a_prefix_and_a_digest_of_the_callers_id(
    caller: str, prefix: str
) -> None:
    digest = hashlib.sha256(caller.encode("utf-8")).hexdigest()[:32]
    assert child_id(caller, 12) == f"{prefix}~{digest}.12"
    assert utf8_length(child_id(caller, 12)) <= MAX_PROCESS_ID
    # two callers that differ only past the prefix still have different subprocesses
    assert child_id(caller + "x", 12) != child_id(caller, 12)


def test_a_subprocess_of_a_long_process_id_is_launched_under_the_shortened_id() -> None:
    definition = parse_definition(CALL)
    caller = "q" * MAX_PROCESS_ID
    result = step(definition, None, ev.Start(caller, {"sub": CHILD}), 0.0)
    (launch,) = [c for c in result.commands if isinstance(c, cmd.LaunchChild)]
    assert launch.process_id == child_id(caller, 3)
    assert result.state["children"] == {launch.process_id: "0"}


@pytest.mark.parametrize(("assigns", "status"), [(4, "completed"), (5, "faulted")])
def test_the_cap_on_starts_counts_every_activity_the_root_included(
    assigns: int, status: str
) -> None:
    body = '<assign property="x">1</assign>' * assigns
    instance = Instance(f"<process>{body}</process>", limits=Limits(max_starts=5))
    assert instance.current["status"] == status


@pytest.mark.parametrize(
    ("limits", "first"),
    [(Limits(max_starts=4), "pid_0_2"), (Limits(step_budget=350), "pid_0_1")],
    ids=["starts", "budget"],
)
def test_a_limit_met_inside_an_all_journals_the_branches_it_left_unstarted(
    limits: Limits, first: str
) -> None:
    body = '<assign property="x">1</assign>' * 6
    instance = Instance(f"<process><all>{body}</all></process>", limits=limits)
    assert instance.current["status"] == "faulted"
    skipped = [a for k, a, _ in instance.journal() if k == "skipped"]
    assert skipped == [f"pid_0_{n}" for n in range(int(first[-1]), 6)]  # none lost, none twice


def test_only_the_branches_of_an_all_are_journalled_as_skipped_not_its_handlers_activities() -> (
    None
):
    # the inner all catches A and schedules its handler; before the handler starts, B (from
    # the outer all's other branch) ends the instance: the handler's activity is not a branch
    instance = Instance(
        """<process><all>
             <all><context><faults><case code="A"><assign property="a">1</assign></case>
                  </faults></context>
               <fault code="A"/><assign property="x">1</assign></all>
             <sequence><fault code="B"/></sequence>
           </all></process>"""
    )
    assert instance.current["status"] == "faulted"
    assert [a for k, a, _ in instance.journal() if k == "skipped"] == ["pid_0_0_1"]
    tree = describe(
        instance.definition, instance.current, [(a, k) for k, a, _ in instance.journal()]
    )
    assert tree.find("0_0_1").state.value == "not_started"  # type: ignore[union-attr]
    assert tree.find("0_0_0").state.value == "faulted"  # type: ignore[union-attr]


def test_a_subprocess_that_ends_tells_its_caller_which_call_it_answers() -> None:
    definition = parse_definition('<process><assign property="r">1</assign></process>')
    start = ev.Start("child", {"n": 2}, ev.ParentLink("caller", "caller_0"))
    (told,) = [
        c for c in step(definition, None, start, 0.0).commands if type(c) is cmd.NotifyParent
    ]
    assert told == cmd.NotifyParent(
        "caller", "caller_0", "child", "completed", {"n": 2, "r": 1}, None
    )


def test_a_block_context_counts_in_the_size_the_state_keeps_of_itself() -> None:
    big = "x" * 50_000
    instance = Instance(
        f"""<process><sequence>
              <context><property name="big" type="str">{big}</property></context>
              <action participant="clerk"/>
            </sequence></process>"""
    )
    assert Sizes(instance.current, DEFAULT_LIMITS).estimate() >= stored_size(instance.current)


def test_a_workitem_has_the_wire_protocols_shape() -> None:
    """DESIGN.md's workitem: name, target, origin and payload (every visible property and the
    status ``done``), with the workitem's id and the process id added."""
    instance = Instance(
        '<process><sequence><action participant="clerk"/></sequence></process>', {"n": 1}
    )
    workitem: cmd.DispatchWorkitem = instance.one(cmd.DispatchWorkitem)
    assert workitem.message == {
        "name": "response",
        "target": "pid_0_0",
        "origin": "pid_0_0",
        "payload": {"n": 1, "status": "done"},
        "workitem_id": workitem.workitem_id,
        "process_id": "pid",
    }


@pytest.mark.parametrize(
    ("attributes", "kind", "queue"),
    [
        ("", None, None),
        (' kind="celery" queue="fast"', "celery", "fast"),
        (' kind="taskqueue"', "taskqueue", None),
    ],
)
def test_a_workitem_is_sent_the_way_its_action_says(
    attributes: str, kind: str | None, queue: str | None
) -> None:
    """An action's ``kind`` and ``queue`` go with its workitem; without them the configuration
    decides (None)."""
    instance = Instance(f'<process><action participant="clerk"{attributes}/></process>')
    workitem: cmd.DispatchWorkitem = instance.one(cmd.DispatchWorkitem)
    assert (workitem.participant, workitem.kind, workitem.queue) == ("clerk", kind, queue)


def test_an_answer_naming_only_its_target_reaches_its_action_as_the_originals_do() -> None:
    """The original's workers answer with the workitem as they got it, without our
    ``workitem_id``: the target names the action, whose workitem it answers."""
    instance = Instance('<process><sequence><action participant="clerk"/></sequence></process>')
    workitem: cmd.DispatchWorkitem = instance.one(cmd.DispatchWorkitem)
    answer = {"name": "response", "target": "pid_0_0", "origin": "pid_0_0"}
    instance.apply(ev.ParticipantResponse({**answer, "payload": {"status": "done", "x": 1}}))
    assert instance.journal()[0] == (
        "answered",
        "pid_0_0",
        {"status": "done", "workitem": workitem.workitem_id},
    )
    assert instance.current["status"] == "completed"
    assert instance.current["scopes"][""] == {"x": 1}


# messages that change nothing ---------------------------------------------------------------------


def test_a_second_start_of_a_running_instance_is_journalled_and_changes_nothing() -> None:
    instance = Instance('<process><action participant="clerk"/></process>')
    before = instance.current
    instance.apply(ev.Start("pid", {"again": 1}))
    assert instance.commands == (cmd.Record("ignored", "pid", {"reason": "already started"}),)
    assert instance.current == before


def test_an_event_no_await_waits_for_is_journalled_with_its_name() -> None:
    instance = Instance('<process><await event="signed"/></process>')
    before = instance.current
    instance.apply(ev.EventReceived("stamped", {"by": "clerk"}))
    details = {"reason": "no await waits for this event", "event": "stamped"}
    assert instance.commands == (cmd.Record("ignored", "pid", details),)
    assert instance.current == before


@pytest.mark.parametrize("data", [None, ["not", "an", "object"], "text"])
def test_an_event_whose_data_is_not_an_object_is_taken_as_empty(data: Any) -> None:
    instance = Instance('<process><await event="signed"/></process>')
    instance.apply(ev.EventReceived("signed", data))
    assert instance.current["status"] == "completed"


def test_a_message_for_an_ended_instance_is_journalled_with_its_status() -> None:
    instance = Instance("<process/>")
    instance.apply(ev.EventReceived("late", {}))
    reason = {"reason": "the instance is completed"}
    assert instance.commands == (cmd.Record("ignored", "pid", reason),)


@pytest.mark.parametrize("count", [2, 100, 101])
def test_a_launch_lists_the_fields_it_ignored_up_to_a_hundred(count: int) -> None:
    names = {f"inst:f{n:03}": n for n in range(count)}
    instance = Instance("<process/>", {"kept": 1, **names})
    (launched,) = instance.records("launched")
    shown = sorted(names)
    expected = shown if count <= 100 else [*shown[:100], f"... and {count - 100} more"]
    assert launched.details == {"name": None, "fields": ["kept"], "ignored": expected}


def test_terminating_a_caller_terminates_the_subprocess_its_call_waits_for() -> None:
    instance = Instance(CALL, {"sub": CHILD})
    launch: cmd.LaunchChild = instance.one(cmd.LaunchChild)
    instance.apply(ev.Terminate("enough"))
    assert instance.one(cmd.TerminateChild) == cmd.TerminateChild(launch.process_id, "pid_0")


def test_a_call_launches_its_subprocess_as_its_own_with_its_context() -> None:
    instance = Instance(
        '<process><sequence><call process="$sub"/></sequence></process>', {"sub": CHILD}
    )
    launch: cmd.LaunchChild = instance.one(cmd.LaunchChild)
    assert launch == cmd.LaunchChild(launch.process_id, "pid_0_0", CHILD, {"sub": CHILD})


# timeouts ----------------------------------------------------------------------------------------


def test_an_await_timeout_starts_a_timeout_timer_then_faults_timeout_error() -> None:
    instance = Instance('<process><await event="signed" timeout="2.5"/></process>')
    timer: cmd.StartTimer = instance.one(cmd.StartTimer)
    assert timer == cmd.StartTimer(timer.timer_id, "pid_0", 2.5, cmd.TimerKind.TIMEOUT)
    instance.apply(ev.TimerFired(timer.timer_id), now=2.5)
    message = "event signed did not arrive within 2.5 s"
    assert ("fault", "pid_0", {"code": "TimeoutError", "message": message}) in instance.journal()
    assert instance.current["awaits"] == {}


def test_an_action_timeout_cancels_its_workitem_then_faults_timeout_error() -> None:
    instance = Instance('<process><action participant="clerk" timeout="1.5"/></process>')
    timer: cmd.StartTimer = instance.one(cmd.StartTimer)
    assert timer == cmd.StartTimer(timer.timer_id, "pid_0", 1.5, cmd.TimerKind.TIMEOUT)
    workitem: cmd.DispatchWorkitem = instance.one(cmd.DispatchWorkitem)
    instance.apply(ev.TimerFired(timer.timer_id), now=1.5)
    message = "participant clerk did not answer within 1.5 s"
    fault = {"code": "TimeoutError", "message": message}
    assert instance.commands == (
        cmd.Record("timer", "pid_0", {"timer": timer.timer_id}),
        cmd.CancelWorkitem(workitem.workitem_id, "pid_0"),
        cmd.Record("fault", "pid_0", fault),
        cmd.Record("cancelled", "pid_0", {}),
        cmd.Record("faulted", "pid", {"fault": fault}),
        cmd.ProcessFinished("faulted", {}, fault),
    )
    assert instance.current["workitems"] == {}


def test_an_answer_before_the_timeout_cancels_the_timer_of_its_action() -> None:
    instance = Instance('<process><action participant="clerk" timeout="1.5"/></process>')
    timer: cmd.StartTimer = instance.one(cmd.StartTimer)
    instance.reply()
    assert instance.one(cmd.CancelTimer) == cmd.CancelTimer(timer.timer_id, "pid_0")
    assert instance.current["timers"] == {}


@pytest.mark.parametrize(
    ("status", "shown"),
    [(None, None), (50, 50), (0.5, 0.5), ("half way", "half way"), ({"done": 1}, "{'done': 1}")],
)
def test_a_progress_report_is_journalled_and_the_action_keeps_waiting(
    status: Any, shown: Any
) -> None:
    """An answer whose status is not done, critical or error: numbers and no status are shown
    as they are, anything else as text."""
    instance = Instance('<process><action participant="clerk"/></process>')
    workitem: cmd.DispatchWorkitem = instance.one(cmd.DispatchWorkitem)
    payload = {**workitem.message["payload"], "status": status}
    instance.apply(ev.ParticipantResponse({**workitem.message, "payload": payload}))
    assert instance.commands == (cmd.Record("reported", "pid_0", {"status": shown}),)
    assert workitem.workitem_id in instance.current["workitems"]


WID = "{wid}"
"""Stands for the id of the workitem the action dispatched."""


@pytest.mark.parametrize(
    ("answer", "activity", "details"),
    [
        (["not", "an object"], "pid", {"reason": "the answer is not an object"}),
        (
            {"workitem_id": WID, "target": "pid_7", "payload": {}},
            "pid_0",
            {
                "reason": "the target is not the activity that sent this workitem",
                "workitem": WID,
                "target": "pid_7",
            },
        ),
        (
            {"workitem_id": WID, "target": ["pid_0"], "payload": {}},
            "pid_0",
            {
                "reason": "the target is not the activity that sent this workitem",
                "workitem": WID,
                "target": "(a list)",
            },
        ),
        (
            {"workitem_id": "nope", "payload": {}},
            "pid",
            {"reason": "no action waits for this workitem", "workitem": "nope", "target": None},
        ),
        (
            {"workitem_id": 7, "target": "pid_0", "payload": {}},
            "pid",
            {"reason": "no action waits for this workitem", "workitem": 7, "target": "pid_0"},
        ),
        (
            {"target": "pid_3", "payload": {}},
            "pid",
            {"reason": "no action waits for this workitem", "workitem": None, "target": "pid_3"},
        ),
        (
            {"target": "t" * 400, "payload": {}},
            "pid",
            {
                "reason": "no action waits for this workitem",
                "workitem": None,
                "target": "t" * 297 + "...",
            },
        ),
        (
            {"workitem_id": WID, "payload": "done"},
            "pid_0",
            {"reason": "the payload is not an object", "workitem": WID},
        ),
    ],
    ids=[
        "not an object",
        "another target",
        "a target not text",
        "unknown workitem",
        "workitem id not text",
        "target not waiting",
        "long target",
        "payload not an object",
    ],
)
def test_an_answer_that_reaches_no_action_is_journalled_as_ignored_with_what_it_named(
    answer: Any, activity: str, details: dict[str, Any]
) -> None:
    instance = Instance('<process><action participant="clerk"/></process>')
    wid = instance.one(cmd.DispatchWorkitem).workitem_id
    before = instance.current

    def named(value: Any) -> Any:
        return wid if value == WID else value

    answer = {k: named(v) for k, v in answer.items()} if isinstance(answer, dict) else answer
    instance.apply(ev.ParticipantResponse(answer))
    assert instance.commands == (
        cmd.Record("ignored", activity, {k: named(v) for k, v in details.items()}),
    )
    assert instance.current == before


@pytest.mark.parametrize(("error", "shown"), [(None, ""), ("no paper", "no paper"), (404, "404")])
def test_an_error_answer_past_the_retries_leaves_the_action_failed_with_its_error_as_text(
    error: Any, shown: str
) -> None:
    instance = Instance('<process><action participant="clerk"/></process>')
    instance.reply(status="error", **({} if error is None else {"error": error}))
    assert instance.journal()[1:] == [("failed", "pid_0", {"attempts": 1, "error": shown})]
    node = instance.current["nodes"]["0"]
    assert (node["failed"], node["error"]) == (True, shown)


def test_an_event_before_the_timeout_cancels_the_timer_of_its_await() -> None:
    instance = Instance('<process><await event="signed" timeout="2"/></process>')
    assert instance.one(cmd.Subscribe) == cmd.Subscribe("signed", "pid_0")
    timer: cmd.StartTimer = instance.one(cmd.StartTimer)
    instance.apply(ev.EventReceived("signed", {}))
    assert instance.one(cmd.CancelTimer) == cmd.CancelTimer(timer.timer_id, "pid_0")
    assert instance.current["timers"] == {}


def test_an_await_timeout_faults_timeout_error_naming_the_event() -> None:
    instance = Instance('<process><await event="signed" timeout="2"/></process>')
    timer: cmd.StartTimer = instance.one(cmd.StartTimer)
    instance.apply(ev.TimerFired(timer.timer_id), now=2.0)
    message = "event signed did not arrive within 2 s"
    assert ("fault", "pid_0", {"code": "TimeoutError", "message": message}) in instance.journal()
    assert cmd.Unsubscribe("signed", "pid_0") in instance.commands
    assert instance.current["awaits"] == {}


# foreach -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "found"),
    [({}, "nothing"), ({"items": 5}, "int"), ({"items": "abc"}, "str"), ({"items": {}}, "dict")],
)
def test_a_foreach_over_what_is_not_a_list_faults_saying_what_it_found(
    fields: dict[str, Any], found: str
) -> None:
    instance = Instance(
        '<process><foreach select="items"><assign property="x">1</assign></foreach></process>',
        fields,
    )
    message = f'foreach select="items": expected a list, found {found}'
    assert instance.current["fault"] == {
        "code": "ExpressionError",
        "message": message,
        "activity": "pid_0",
    }


# incidents ---------------------------------------------------------------------------------------

SUSPENDING = """<process on-fault="suspend">
  <context><property name="y" type="int">1</property></context>
  <action participant="clerk"/>
</process>"""


def test_resuming_an_incident_at_an_action_cancels_it_and_dispatches_it_again() -> None:
    instance = Instance(SUSPENDING)
    before = instance.current["size"]
    instance.reply(status="critical", error="boom")
    assert instance.journal()[1:] == [
        ("fault", "pid_0", {"code": "ActionError", "message": "boom"}),
        ("incident", "pid_0", {"code": "ActionError", "message": "boom"}),
    ]
    instance.apply(ev.Resume())
    workitem: cmd.DispatchWorkitem = instance.one(cmd.DispatchWorkitem)
    assert instance.journal() == [
        ("resumed", "pid", {"was": "suspended", "held": 0}),
        ("cancelled", "pid_0", {}),
        ("dispatched", "pid_0", {"participant": "clerk", "workitem": workitem.workitem_id}),
    ]
    assert instance.current["workitems"] == {workitem.workitem_id: "0"}
    assert instance.current["status"] == "running"
    # the size the state keeps of itself is back to what it was before the incident
    assert instance.current["size"] == before


def test_resuming_an_incident_at_a_foreach_starts_it_again_in_a_fresh_scope() -> None:
    instance = Instance(
        """<process on-fault="suspend">
             <foreach select="items"><assign property="x">context["inst:current"]</assign></foreach>
           </process>""",
        {"items": "not yet"},
    )
    assert instance.current["status"] == "suspended"
    instance.apply(ev.SetContext({"items": [1, 2]}))
    instance.apply(ev.Resume())
    assert instance.current["status"] == "completed"
    assert instance.current["scopes"] == {"": {"items": [1, 2], "x": 2}}


# fault handlers ----------------------------------------------------------------------------------


def test_once_the_roots_handler_is_done_the_state_keeps_the_size_of_its_context_alone() -> None:
    caught = Instance(
        """<process>
             <context><faults><default><assign property="r">1</assign></default></faults></context>
             <fault code="Oops" message="a long message, to be forgotten with the fault"/>
           </process>"""
    )
    plain = Instance('<process><assign property="r">1</assign></process>')
    assert caught.current["status"] == plain.current["status"] == "completed"
    assert caught.current["scopes"] == plain.current["scopes"] == {"": {"r": 1}}
    assert caught.current["size"] == plain.current["size"]


# failed actions and an operator's retry ----------------------------------------------------------

RETRIED = '<process><action participant="clerk" retries="1" retry-delay="0.5"/></process>'


def test_an_error_within_the_retries_waits_the_retry_delay_then_dispatches_again() -> None:
    instance = Instance(RETRIED)
    first: cmd.DispatchWorkitem = instance.one(cmd.DispatchWorkitem)
    instance.reply(status="error", error="busy")
    timer: cmd.StartTimer = instance.one(cmd.StartTimer)
    assert timer == cmd.StartTimer(timer.timer_id, "pid_0", 0.5, cmd.TimerKind.RETRY)
    assert instance.journal() == [
        ("answered", "pid_0", {"status": "error", "workitem": first.workitem_id}),
        ("retry", "pid_0", {"attempt": 2, "error": "busy"}),
    ]
    assert not [c for c in instance.commands if isinstance(c, cmd.DispatchWorkitem)]
    instance.apply(ev.TimerFired(timer.timer_id), now=0.5)
    assert instance.one(cmd.DispatchWorkitem).attempt == 2


def test_terminating_an_action_waiting_out_its_retry_delay_cancels_the_retry_timer() -> None:
    instance = Instance(RETRIED)
    instance.reply(status="error", error="busy")
    timer: cmd.StartTimer = instance.one(cmd.StartTimer)
    instance.apply(ev.Terminate("enough"))
    assert instance.one(cmd.CancelTimer) == cmd.CancelTimer(timer.timer_id, "pid_0")
    assert instance.current["timers"] == {}
    assert instance.journal() == [
        ("terminating", "pid", {"reason": "enough"}),
        ("cancelled", "pid_0", {}),  # it waited, on its retry timer
        ("terminated", "pid", {}),
    ]


def test_spent_retries_journal_the_failure_and_an_operators_retry_starts_again() -> None:
    instance = Instance(RETRIED)
    instance.reply(status="error", error="busy")
    instance.apply(ev.TimerFired(instance.one(cmd.StartTimer).timer_id), now=0.5)
    second: cmd.DispatchWorkitem = instance.one(cmd.DispatchWorkitem)
    instance.reply(status="error", error="still busy")
    assert instance.journal() == [
        ("answered", "pid_0", {"status": "error", "workitem": second.workitem_id}),
        ("failed", "pid_0", {"attempts": 2, "error": "still busy"}),
    ]
    node = instance.current["nodes"]["0"]
    assert (node["failed"], node["error"]) == (True, "still busy")
    # what the failed action keeps (its error) counts in the state's size, and only that
    assert instance.current["size"]["held"] == node["sz"] > len("still busy")
    instance.apply(ev.Retry("pid_0"))
    third: cmd.DispatchWorkitem = instance.one(cmd.DispatchWorkitem)
    assert third.attempt == 1
    assert instance.journal() == [
        ("retry", "pid_0", {"attempt": 1, "operator": True}),
        ("dispatched", "pid_0", {"participant": "clerk", "workitem": third.workitem_id}),
    ]
    assert instance.current["size"]["held"] == instance.current["nodes"]["0"]["sz"]


def test_a_failure_whose_error_would_pass_the_state_size_limit_faults_the_instance() -> None:
    error = "e" * 1_500
    fits = Instance(RETRIED.replace(' retries="1"', ""))
    fits.reply(status="error", error=error)
    assert fits.current["status"] == "running"
    limit = len(json.dumps(fits.current, separators=(",", ":"))) - 1
    instance = Instance(RETRIED.replace(' retries="1"', ""), limits=Limits(max_state_size=limit))
    instance.reply(status="error", error=error)
    assert instance.current["status"] == "faulted"
    assert instance.current["fault"]["code"] == "LimitExceeded"
    assert instance.current["fault"]["message"].startswith("max_state_size exceeded")


# what a change too large for the state names ------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "named"),
    [
        (5, "p0, p1, p2, p3, p4"),
        (6, "p0, p1, p2, p3, p4 and 1 more"),
        (8, "p0, p1, p2, p3, p4 and 3 more"),
    ],
)
def test_an_answer_too_large_for_the_state_names_up_to_five_changed_properties(
    count: int, named: str
) -> None:
    instance = Instance(
        '<process><action participant="clerk"/></process>', limits=Limits(max_state_size=20_000)
    )
    instance.reply(**{f"p{i}": "x" * 5_000 for i in reversed(range(count))})
    fault = instance.current["fault"]
    assert fault["code"] == "LimitExceeded"
    assert fault["message"].startswith(
        f"max_state_size exceeded: the changes to {named} would make the instance's state"
    )


def test_resuming_goes_on_with_what_the_step_had_left_and_skips_what_that_cancels() -> None:
    # the incident at pid_0_0_0 left its sibling's start to do; resumed, that sibling's fault is
    # caught around the all, whose cancelled branch must not start again
    instance = Instance(
        """<process on-fault="suspend">
             <sequence>
               <context><faults><case code="B"><assign property="b">1</assign></case></faults>
               </context>
               <all><fault code="A"/><fault code="B"/></all>
             </sequence>
           </process>"""
    )
    assert instance.current["status"] == "suspended"
    assert instance.current["incident"]["path"] == "0_0_0"
    instance.apply(ev.Resume())
    assert [(kind, activity) for kind, activity, _ in instance.journal()] == [
        ("resumed", "pid"),
        ("fault", "pid_0_0_1"),
        ("handled", "pid_0"),
        ("skipped", "pid_0_0_0"),  # its start again, on the agenda since the incident
        ("completed", "pid"),
    ]
    assert instance.current["scopes"] == {"": {"b": 1}}


def test_the_size_held_is_what_every_waiting_or_failed_action_keeps() -> None:
    instance = Instance(
        '<process><all><action participant="clerk"/><action participant="other"/></all></process>'
    )
    clerk = next(c for c in instance.commands if isinstance(c, cmd.DispatchWorkitem))
    payload = {**clerk.message["payload"], "status": "error", "error": "no"}
    instance.apply(ev.ParticipantResponse({**clerk.message, "payload": payload}))
    nodes = instance.current["nodes"]
    assert nodes["0_0"]["failed"] is True and "wi" in nodes["0_1"]
    assert instance.current["size"]["held"] == nodes["0_0"]["sz"] + nodes["0_1"]["sz"]


def test_a_rerun_inside_a_block_whose_handler_had_no_room_for_the_fault_runs() -> None:
    # the block caught the fault, but inst:fault would not fit the state: an incident at the
    # block, running its handler without inst:fault; a rerun of its child goes back to its body
    instance = Instance(
        """<process on-fault="suspend"><sequence>
             <context><faults><default><assign property="x">1</assign></default></faults></context>
             <action participant="clerk"/>
           </sequence></process>""",
        limits=Limits(max_state_size=2_000),
    )
    instance.reply(status="critical", error="e" * 1_900)
    assert [
        (kind, activity, details.get("code")) for kind, activity, details in instance.journal()
    ] == [
        ("answered", "pid_0_0", None),
        ("fault", "pid_0_0", "ActionError"),
        ("cancelled", "pid_0_0", None),
        ("handled", "pid_0", "ActionError"),
        ("fault", "pid_0", "LimitExceeded"),
        ("incident", "pid_0", "LimitExceeded"),
    ]
    instance.apply(ev.Rerun("pid_0_0"))
    workitem: cmd.DispatchWorkitem = instance.one(cmd.DispatchWorkitem)
    assert instance.journal() == [
        ("rerun", "pid_0_0", {"was": "suspended"}),
        ("dispatched", "pid_0_0", {"participant": "clerk", "workitem": workitem.workitem_id}),
    ]
    assert instance.current["nodes"]["0"] == {"n": 2, "i": 0}


def test_an_empty_all_completes_at_once_and_the_process_goes_on() -> None:
    instance = Instance('<process><all/><assign property="x">1</assign></process>')
    assert instance.current["status"] == "completed"
    assert instance.current["scopes"] == {"": {"x": 1}}


def test_an_answer_too_large_for_the_state_shows_a_long_name_by_its_first_40_characters() -> None:
    instance = Instance(
        '<process><action participant="clerk"/></process>', limits=Limits(max_state_size=20_000)
    )
    name = "n" * 40 + "tail"
    instance.reply(**{name: "x" * 25_000})
    assert instance.current["fault"]["message"].startswith(
        f"max_state_size exceeded: the changes to {'n' * 40} would make the instance's state"
    )


# what a limit's fault names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "what"), [(5_000, "the selection"), (8_000, "the current element")]
)
def test_a_foreach_whose_copies_would_not_fit_the_state_says_which_copy(
    limit: int, what: str
) -> None:
    instance = Instance(
        '<process><foreach select="items"><assign property="x">1</assign></foreach></process>',
        {"items": ["x" * 3_000]},
        limits=Limits(max_state_size=limit),
    )
    fault = instance.current["fault"]
    assert (fault["code"], fault["activity"]) == ("LimitExceeded", "pid_0")
    assert fault["message"].startswith(f"max_state_size exceeded: {what} would make the instance")


def test_a_handler_with_no_room_for_the_fault_it_caught_says_so() -> None:
    instance = Instance(
        """<process><sequence>
             <context><faults><default><assign property="x">1</assign></default></faults></context>
             <action participant="clerk"/>
           </sequence></process>""",
        limits=Limits(max_state_size=2_000),
    )
    instance.reply(status="critical", error="e" * 1_900)
    fault = instance.current["fault"]
    assert (fault["code"], fault["activity"]) == ("LimitExceeded", "pid_0")
    assert fault["message"].startswith("max_state_size exceeded: the fault caught would make")


def test_a_loop_that_starts_too_many_activities_in_one_step_faults_step_limit_error() -> None:
    instance = Instance(
        '<process><while><condition>True</condition><assign property="x">1</assign></while>'
        "</process>",
        limits=Limits(max_starts=50),
    )
    assert instance.current["fault"] == {
        "code": "StepLimitError",
        "message": "more than 50 activities started without waiting once; "
        "is a loop missing a way out?",
        "activity": "pid_0",
    }


def test_a_step_that_spends_its_budget_faults_naming_the_limit_and_its_key() -> None:
    instance = Instance(
        '<process><while><condition>True</condition><assign property="x">1</assign></while>'
        "</process>",
        limits=Limits(step_budget=50_000),
    )
    assert instance.current["fault"] == {
        "code": "LimitExceeded",
        "message": "step_budget exceeded: this step needed more than 50,000 units of work "
        "(expressions, activities started, values measured); a loop or an expression does too "
        "much in one step. The limit is the configuration key [bureaucrat] step_budget",
        "activity": "pid_0",
    }


def test_a_state_size_fault_ends_with_the_limit_and_its_key() -> None:
    instance = Instance(
        '<process><action participant="clerk"/></process>', limits=Limits(max_state_size=20_000)
    )
    instance.reply(big="x" * 25_000)
    assert instance.current["fault"]["message"].endswith(
        " bytes, over the limit of 20,000. The limit is the configuration key [bureaucrat] "
        "max_state_size"
    )


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ({"why": 1}, "{'why': 1}"),
        (["x" * 3_000], "(an error of type list, too long to show)"),
        ("y" * 2_500, "y" * 1_997 + "..."),
        ("y" * 2_000, "y" * 2_000),
    ],
    ids=["object", "object too long", "text too long", "text at the limit"],
)
def test_a_critical_answer_faults_action_error_with_its_error_as_text(
    error: Any, message: str
) -> None:
    instance = Instance('<process><action participant="clerk"/></process>')
    instance.reply(status="critical", error=error)
    assert instance.current["fault"] == {
        "code": "ActionError",
        "message": message,
        "activity": "pid_0",
    }


@pytest.mark.parametrize(
    ("xml", "blamed"),
    [
        (
            '<while><condition>True</condition><foreach select="items">'
            '<assign property="x">1</assign></foreach></while>',
            "pid_0",
        ),
        (
            '<foreach select="items"><while><condition>True</condition>'
            '<assign property="x">1</assign></while></foreach>',
            "pid_0_0",
        ),
    ],
    ids=["endless outside a finite loop", "endless inside a finite loop"],
)
def test_too_many_starts_are_blamed_on_the_endless_loop(xml: str, blamed: str) -> None:
    instance = Instance(f"<process>{xml}</process>", {"items": [1, 2, 3, 4]}, Limits(max_starts=50))
    fault = instance.current["fault"]
    assert (fault["code"], fault["activity"]) == ("StepLimitError", blamed)


def test_too_many_starts_in_a_later_step_blame_the_loop_that_ran_away_not_the_one_around() -> None:
    """The outer loop's round began in the step before (it waits on the action): it started
    nothing in this step, and the endless loop the answer set off is blamed."""
    instance = Instance(
        '<process><while><condition>True</condition><sequence><action participant="clerk"/>'
        '<while><condition>True</condition><assign property="x">1</assign></while>'
        "</sequence></while></process>",
        limits=Limits(max_starts=50),
    )
    instance.reply()
    fault = instance.current["fault"]
    assert (fault["code"], fault["activity"]) == ("StepLimitError", "pid_0_0_1")


def test_an_event_an_await_condition_cannot_be_evaluated_on_is_not_taken_and_says_why() -> None:
    instance = Instance(
        '<process><await event="pick"><condition>event["choice"] == 1</condition></await></process>'
    )
    instance.apply(ev.EventReceived("pick", {"other": 1, "event": "pick"}))
    reason = "expression 'event[\"choice\"] == 1' failed: key 'choice' not found"
    assert instance.journal() == [
        ("event", "pid_0", {"event": "pick", "taken": False, "reason": reason})
    ]
    assert instance.current["status"] == "running"
    assert instance.current["awaits"] == {"0": "pick"}


@pytest.mark.parametrize(
    ("attribute", "configured", "status"),
    [
        ("", "fault", "faulted"),
        ("", "suspend", "suspended"),
        (' on-fault="fault"', "suspend", "faulted"),
        (' on-fault="suspend"', "fault", "suspended"),
    ],
)
def test_an_uncaught_fault_suspends_where_the_definition_or_else_the_configuration_says(
    attribute: str, configured: str, status: str
) -> None:
    instance = Instance(
        f'<process{attribute}><fault code="X"/></process>', limits=Limits(on_fault=configured)
    )
    assert instance.current["status"] == status
    assert instance.journal()[-1][0] == ("incident" if status == "suspended" else "faulted")


# ids and statuses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "finished"),
    [
        ("running", False),
        ("paused", False),
        ("suspended", False),
        ("completed", True),
        ("faulted", True),
        ("terminated", True),
    ],
)
def test_an_instance_is_finished_once_completed_faulted_or_terminated(
    status: str, finished: bool
) -> None:
    assert is_finished({"status": status}) is finished


@pytest.mark.parametrize("path", ["", "0", "0_10_3"])
def test_an_activity_id_names_its_path_and_nothing_else_does(path: str) -> None:
    wire = activity_id("p_1", path)
    assert wire == ("p_1" if not path else f"p_1_{path}")
    assert path_of("p_1", wire) == path
    assert path_of("p_2", wire) is None
    assert path_of("p", "q_0") is None


@pytest.mark.parametrize(
    "branch",
    [
        '<switch><case><condition>True</condition><action participant="clerk"/></case></switch>',
        '<sequence><action participant="clerk"/></sequence>',
    ],
    ids=["switch", "sequence"],
)
def test_a_block_cancelled_before_its_next_child_starts_starts_nothing(branch: str) -> None:
    # the all starts the block, which schedules its child, then the fault, whose handler
    # cancels the all: the child, still to start, must not dispatch anything
    instance = Instance(
        f"""<process><sequence>
             <context><faults><default><action participant="cure"/></default></faults>
             </context>
             <all>{branch}<fault code="X"/></all>
           </sequence></process>"""
    )
    assert instance.one(cmd.DispatchWorkitem).participant == "cure"
    instance.reply()
    assert instance.current["status"] == "completed"


def test_what_a_participant_returns_for_the_engines_properties_is_ignored() -> None:
    instance = Instance(
        '<process><foreach select="items"><action participant="clerk"/></foreach></process>',
        {"items": ["a", "b"]},
    )
    instance.reply(**{"inst:current": "z", "inst:iteration": 7, "seen": 1})
    workitem: cmd.DispatchWorkitem = instance.one(cmd.DispatchWorkitem)
    assert workitem.message["payload"]["inst:current"] == "b"
    assert workitem.message["payload"]["inst:iteration"] == 2
    instance.reply()
    assert instance.current["status"] == "completed"
    assert instance.current["scopes"] == {"": {"items": ["a", "b"], "seen": 1}}


def test_an_await_cancelled_by_a_handler_is_journalled_cancelled_and_unsubscribed() -> None:
    instance = Instance(
        """<process><sequence>
             <context><faults><default><action participant="cure"/></default></faults></context>
             <all><await event="go"/><fault code="X"/></all>
           </sequence></process>"""
    )
    assert [(kind, activity) for kind, activity, _ in instance.journal()[1:]] == [
        ("fault", "pid_0_0_1"),
        ("cancelled", "pid_0_0_0"),
        ("handled", "pid_0"),
        ("dispatched", "pid_0_f0_0"),
    ]
    assert cmd.Unsubscribe("go", "pid_0_0_0") in instance.commands
    assert instance.current["awaits"] == {}
