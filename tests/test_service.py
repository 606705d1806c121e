"""The service one message at a time, on the real store (SQLite and PostgreSQL) with a recording
publisher: orderings of messages that the broker may produce but an end-to-end test cannot force."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import pytest
import sqlalchemy as sa

from bureaucrat.config import Config
from bureaucrat.engine import Limits, step
from bureaucrat.engine.state import root_context
from bureaucrat.errors import BrokerError, PublishError, StoreDataError
from bureaucrat.service import RELAY_AFTER, Service
from bureaucrat.store import Outgoing, Store
from bureaucrat.store import tables as t
from tests.store_fixtures import postgres_url, store, store_url

__all__ = ["postgres_url", "store", "store_url"]  # fixtures, imported for pytest

CONFIG = Config()


@dataclass(frozen=True)
class Message:
    queue: str
    body: bytes
    message_id: str | None = None
    content_type: str | None = "application/json"
    redelivered: bool = False


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    def publish(self, message: Outgoing) -> None:
        self.sent.append(message)

    def publish_many(self, messages: Sequence[Outgoing]) -> list[str | None]:
        """As the daemon's publisher: a refusal per message, ``BrokerError`` for a lost
        connection (then the rest is not published)."""
        outcomes: list[str | None] = []
        for message in messages:
            try:
                self.publish(message)
            except BrokerError as error:
                if not isinstance(error, PublishError):
                    raise
                outcomes.append(str(error))
            except Exception as error:
                outcomes.append(f"{type(error).__name__}: {error}")
            else:
                outcomes.append(None)
        return outcomes

    def take(self, routing_key: str) -> Message:
        """The first message sent to ``routing_key`` (removed), as the daemon would get it."""
        found = next(m for m in self.sent if m.routing_key == routing_key)
        self.sent.remove(found)
        return Message(
            found.routing_key, found.body, found.message_id, found.properties.get("content_type")
        )


def launch(source: str, fields: dict[str, Any], process_id: str) -> Message:
    body = json.dumps({"definition": source, "fields": fields}).encode()
    return Message(CONFIG.launch_queue, body, process_id)


def control(name: str, process_id: str) -> Message:
    body = json.dumps({"name": name, "process_id": process_id}).encode()
    return Message(CONFIG.message_queue, body, f"{name}-{process_id}")


CALLER = '<process><call process="$child"/></process>'
CHILD = '<process><await event="never"/></process>'


def test_a_subprocess_launch_that_arrives_after_its_caller_ended_starts_nothing(
    store: Store,
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(CALLER, {"child": CHILD}, "caller"))
    service.handle(control("terminate", "caller"))
    assert store.instance("caller").status == "terminated"  # type: ignore[union-attr]
    # The terminate for the subprocess overtakes its launch (they travel on different queues).
    service.handle(publisher.take(CONFIG.message_queue))
    child_launch = publisher.take(CONFIG.launch_queue)
    service.handle(child_launch)
    assert store.instance(child_launch.message_id or "") is None
    assert [r.id for r in store.list_instances()] == ["caller"]


def test_a_launch_naming_a_caller_that_does_not_exist_starts_nothing(store: Store) -> None:
    service = Service(store, CONFIG, Recorder())
    body = {"definition": CHILD, "parent": {"process_id": "ghost", "activity": "ghost_0"}}
    verdict = service.handle(Message(CONFIG.launch_queue, json.dumps(body).encode(), "orphan"))
    assert verdict.outcome.value == "ack"  # ignored, as for a caller that ended
    assert store.list_instances() == []


def test_a_launch_naming_a_caller_that_does_not_wait_for_it_starts_nothing(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(CALLER, {"child": CHILD}, "caller"))
    body = {"definition": CHILD, "parent": {"process_id": "caller", "activity": "caller_0"}}
    with caplog.at_level(logging.INFO, logger="bureaucrat"):
        service.handle(Message(CONFIG.launch_queue, json.dumps(body).encode(), "impostor"))
    assert store.instance("impostor") is None
    assert caplog.messages == ["subprocess impostor not started: its caller does not wait for it"]
    # the very child the caller waits for, but at another of its activities
    real = publisher.take(CONFIG.launch_queue)
    elsewhere = {**json.loads(real.body), "parent": {"process_id": "caller", "activity": "caller"}}
    service.handle(Message(CONFIG.launch_queue, json.dumps(elsewhere).encode(), real.message_id))
    assert store.instance(real.message_id or "") is None
    service.handle(real)  # its own launch still starts it
    assert store.instance(real.message_id or "") is not None


def test_a_subprocess_starts_while_its_caller_waits(store: Store) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(CALLER, {"child": CHILD}, "caller"))
    child_launch = publisher.take(CONFIG.launch_queue)
    service.handle(child_launch)
    child = store.instance(child_launch.message_id or "")
    assert child is not None and child.status == "running"
    assert (child.parent_id, child.parent_activity) == ("caller", "caller_0")


def set_values(process_id: str, values: dict[str, Any]) -> Message:
    body = json.dumps({"name": "set", "process_id": process_id, "values": values}).encode()
    return Message(CONFIG.message_queue, body, f"set-{process_id}")


# a call beside a branch whose expression fails: the caller is suspended at that incident
SUSPENDS = """<process on-fault="suspend"><all>
  <call process="$child"/>
  <sequence><await event="fail"/><assign property="x">context["d"]["k"]</assign></sequence>
</all></process>"""


@pytest.mark.parametrize(
    ("source", "stop"),
    [
        (CALLER, lambda: control("pause", "caller")),
        (SUSPENDS, lambda: Message(CONFIG.event_queue, json.dumps({"event": "fail"}).encode())),
    ],
    ids=["paused", "suspended"],
)
def test_a_subprocess_starts_while_its_caller_is_held_and_its_end_reaches_the_resumed_caller(
    store: Store, source: str, stop: Callable[[], Message]
) -> None:
    """The caller paused or suspended between sending its subprocess's launch and that
    launch's arrival still waits for it: refusing the child would leave the caller waiting
    for ever once resumed."""
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(source, {"child": DONE_AT_ONCE, "d": {}}, "caller"))
    child_launch = publisher.take(CONFIG.launch_queue)
    service.handle(stop())
    held = store.instance("caller")
    assert held is not None and held.status in ("paused", "suspended")
    service.handle(child_launch)
    child = store.instance(child_launch.message_id or "")
    assert child is not None and child.status == "completed"
    service.handle(publisher.take(CONFIG.message_queue))  # the child's end: held
    assert store.instance("caller").status == held.status  # type: ignore[union-attr]
    service.handle(set_values("caller", {"d": {"k": 1}}))  # the incident's cause, mended
    service.handle(control("resume", "caller"))
    assert store.instance("caller").status == "completed"  # type: ignore[union-attr]
    assert ("child", {"child": child.id, "status": "completed"}) in [
        (e.kind, e.details) for e in store.journal("caller")
    ]


@pytest.mark.parametrize(
    ("before", "started"),
    [
        (lambda: set_values("caller", {"n": 1}), True),
        (lambda: control("terminate", "caller"), False),
    ],
    ids=["caller-still-waits", "caller-terminated"],
)
def test_a_subprocess_launch_in_the_batch_of_a_step_of_its_caller_sees_the_callers_new_status(
    store: Store, before: Callable[[], Message], started: bool
) -> None:
    """A batch writes its states at its end; its later messages read the status its earlier
    ones left (here, the caller's, which a subprocess's launch checks)."""
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(CALLER, {"child": CHILD}, "caller"))
    child_launch = publisher.take(CONFIG.launch_queue)
    verdicts = service.handle_batch([before(), child_launch])
    assert [v.outcome.value for v in verdicts] == ["ack", "ack"]
    child = store.instance(child_launch.message_id or "")
    assert (child is not None) is started
    caller = store.instance("caller")
    assert caller is not None and caller.status == ("running" if started else "terminated")


def break_step(
    monkeypatch: pytest.MonkeyPatch, error: Exception, fails: Callable[[str, int], bool]
) -> list[str]:
    """Make the service's engine step raise ``error`` (a defect, or data the database refuses)
    where ``fails(instance id, steps taken so far)`` says so; the ids of the instances stepped."""
    stepped: list[str] = []

    def broken(definition: Any, state: Any, event: Any, at: float, *rest: Any) -> Any:
        stepped.append(state["id"])
        if fails(state["id"], len(stepped)):
            raise error
        return step(definition, state, event, at, *rest)

    monkeypatch.setattr("bureaucrat.service.step", broken)
    return stepped


def test_a_defect_while_firing_a_timer_sets_the_instance_aside_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000_000.0]
    service = Service(store, CONFIG, Recorder(), clock=lambda: now[0])
    service.handle(launch('<process><delay duration="1"/></process>', {}, "sleeper"))
    service.handle(launch('<process><delay duration="1"/></process>', {}, "healthy"))

    break_step(monkeypatch, RuntimeError("a defect"), lambda pid, _: pid == "sleeper")
    now[0] += 2
    assert service.fire_due_timers() == 2  # both handled: one fired, one set aside
    record = store.instance("sleeper")
    assert record is not None and record.status == "broken"
    # the reason is what `bureaucratctl show` prints for a broken instance
    assert record.error == "internal error on TimerFired: RuntimeError: a defect"
    assert record.updated_at == now[0]
    assert store.instance("healthy").status == "completed"  # type: ignore[union-attr]
    assert store.next_timer_due() is None  # the broken instance's timer does not come back
    assert service.fire_due_timers() == 0


def test_a_defect_on_a_response_sets_only_that_instance_aside(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    pids = ("victim", "victim2", "bystander")
    for pid in pids:
        service.handle(launch('<process><action participant="p"/></process>', {}, pid))
    sent = [publisher.take("worker_p") for _ in pids]
    workitems = {json.loads(message.body)["process_id"]: message for message in sent}

    break_step(monkeypatch, KeyError("a defect"), lambda pid, _: pid.startswith("victim"))
    verdicts = [service.handle(Message(CONFIG.message_queue, workitems[pid].body)) for pid in pids]
    assert [(v.outcome.value, v.disposition.value) for v in verdicts] == [
        ("ack", "set_aside"),
        ("ack", "set_aside"),  # each one of the service's life
        ("ack", "handled"),
    ]
    for pid in ("victim", "victim2"):
        victim = store.instance(pid)
        assert victim is not None and victim.status == "broken"
        assert victim.error == "internal error on ParticipantResponse: KeyError: 'a defect'"
    assert store.instance("bystander").status == "completed"  # type: ignore[union-attr]


def test_what_is_ignored_or_set_aside_is_logged_with_what_it_concerns(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator's view of messages that change nothing: each log line names the message,
    the process or the workitem concerned."""
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    with caplog.at_level(logging.INFO, logger="bureaucrat"):
        service.handle(launch(acts("p"), {}, "asks"))
        workitem = workitem_of(publisher, "asks")
        answered = reply(workitem, "workitem_id")
        service.handle(Message(answered.queue, answered.body, "answer-1"))
        service.handle(Message(answered.queue, answered.body, "answer-1"))  # redelivered
        unknown = {"workitem_id": "nope", "target": "asks_9", "payload": {}}
        service.handle(Message(CONFIG.message_queue, json.dumps(unknown).encode(), "answer-2"))
        event = {"event": "nobody-waits"}
        service.handle(Message(CONFIG.event_queue, json.dumps(event).encode(), "e-1"))
        service.handle(launch(CALLER, {"child": "<process><bogus/></process>"}, "caller"))
        child_launch = publisher.take(CONFIG.launch_queue)
        service.handle(child_launch)
        orphan = {"definition": "<process><bogus/></process>", "fields": {}}
        orphan["parent"] = {"process_id": "gone", "activity": "gone_0"}
        service.handle(Message(CONFIG.launch_queue, json.dumps(orphan).encode(), "orphan"))
        service.handle(launch(acts("p"), {}, "victim"))
        break_step(monkeypatch, RuntimeError("a defect"), lambda *_: True)
        service.handle(reply(workitem_of(publisher, "victim"), "workitem_id"))
    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [
        ("INFO", f"message {CONFIG.message_queue}:answer-1 was processed already: dropped"),
        ("WARNING", "response for an unknown workitem (workitem nope, target asks_9): ignored"),
        ("INFO", "event nobody-waits: no process waits for it"),
        (
            "WARNING",
            f"subprocess {child_launch.message_id} of caller not started: "
            "line 1: unknown element <bogus> inside <process>",
        ),
        (
            "WARNING",
            "subprocess orphan of gone not started: "
            "line 1: unknown element <bogus> inside <process>",
        ),
        ("WARNING", "the parent gone of orphan is gone"),
        ("ERROR", "internal error on ParticipantResponse for process victim"),
    ] == [
        (level, text)
        for level, text in logged
        if text.startswith(("message ", "event ")) or level in ("WARNING", "ERROR")
    ]


def test_the_engines_limits_are_the_configured_ones(store: Store) -> None:
    config = Config(
        max_state_size=20_000, max_step_output=150_000, step_budget=3_000_000, on_fault="suspend"
    )
    service = Service(store, config, Recorder())
    assert service.limits == Limits(
        step_budget=3_000_000, max_state_size=20_000, max_step_output=150_000, on_fault="suspend"
    )
    service.handle(launch('<process><fault code="Stop"/></process>', {}, "stops"))
    assert store.instance("stops").status == "suspended"  # type: ignore[union-attr]
    service.handle(launch(acts("p"), {"big": "x" * 30_000}, "big"))
    record = store.instance("big")
    assert record is not None and record.status == "faulted"
    assert "over the limit of 20,000" in record.state["fault"]["message"]  # type: ignore[index]


def test_each_operators_control_message_reaches_its_instance_as_its_operation(
    store: Store,
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(f"<process><sequence>{acts('p')[9:-10]}</sequence></process>", {}, "op"))

    def operate(name: str, **extra: Any) -> None:
        body = {"name": name, "process_id": "op", **extra}
        message = Message(CONFIG.message_queue, json.dumps(body).encode(), f"{name}-{len(extra)}")
        assert service.handle(message).outcome.value == "ack"

    operate("pause", reason="a look")
    operate("set", values={"n": 5})
    operate("resume")
    operate("rerun", activity="op_0_0", values={"m": 6})
    operate("terminate", reason="enough")
    record = store.instance("op")
    assert record is not None and record.status == "terminated" and record.state is not None
    assert root_context(record.state) == {"n": 5, "m": 6}
    operations = [
        (e.kind, e.activity, e.details)
        for e in store.journal("op")
        if e.kind in ("paused", "set", "resumed", "rerun", "terminating")
    ]
    assert operations == [
        ("paused", "op", {"reason": "a look"}),
        ("set", "op", {"name": "n", "old": None, "new": 5, "created": True}),
        ("resumed", "op", {"was": "paused", "held": 0}),
        ("rerun", "op_0_0", {"was": "running"}),
        ("set", "op", {"name": "m", "old": None, "new": 6, "created": True}),
        ("terminating", "op", {"reason": "enough"}),
    ]


def test_a_retry_naming_an_activity_dispatches_only_that_failed_action(store: Store) -> None:
    """``retry`` with ``activity`` retries the action there; without, every failed action;
    ``terminate`` without a reason journals an empty one."""
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    both = '<process><all><action participant="p"/><action participant="q"/></all></process>'
    service.handle(launch(both, {}, "rt"))
    for workitem in list(publisher.sent):
        body = json.loads(workitem.body)
        body["payload"]["status"] = "error"
        answer = Message(
            CONFIG.message_queue, json.dumps(body).encode(), f"e-{workitem.message_id}"
        )
        assert service.handle(answer).outcome.value == "ack"

    def operate(message_id: str, name: str, **extra: Any) -> list[str]:
        """The participants the operation dispatched to."""
        sent = len(publisher.sent)
        body = {"name": name, "process_id": "rt", **extra}
        message = Message(CONFIG.message_queue, json.dumps(body).encode(), message_id)
        assert service.handle(message).outcome.value == "ack"
        workers = CONFIG.worker_queue_prefix
        return [m.routing_key for m in publisher.sent[sent:] if m.routing_key.startswith(workers)]

    assert operate("r1", "retry", activity="rt_0_1") == ["worker_q"]
    assert operate("r2", "retry") == ["worker_p"]  # the only action still failed
    operate("t1", "terminate")
    journal = [(e.kind, e.activity, e.details) for e in store.journal("rt")]
    retries = [(activity, details) for kind, activity, details in journal if kind == "retry"]
    assert retries == [
        ("rt_0_1", {"attempt": 1, "operator": True}),
        ("rt_0_0", {"attempt": 1, "operator": True}),
    ]
    assert ("terminating", "rt", {"reason": ""}) in journal


@pytest.mark.parametrize("target", ["my_proc_0_1", "my_proc_0", "my_proc"])
def test_the_originals_terminate_naming_an_activity_ends_its_process(
    store: Store, target: str
) -> None:
    """The original's terminate names an activity, not a process; process ids may hold ``_``,
    so the longest prefix that is a stored instance is the one. A launch is named after its
    definition."""
    service = Service(store, CONFIG, Recorder())
    named = (
        '<process name="waiter"><sequence><await event="a"/><await event="b"/></sequence></process>'
    )
    service.handle(launch(named, {}, "my_proc"))
    service.handle(launch(named, {}, "my"))  # a shorter prefix that is a process too
    body = json.dumps({"name": "terminate", "target": target}).encode()
    assert service.handle(Message(CONFIG.message_queue, body, f"t-{target}")).outcome.value == "ack"
    statuses = {pid: store.instance(pid) for pid in ("my_proc", "my")}
    assert {pid: r.status for pid, r in statuses.items() if r} == {
        "my_proc": "terminated",
        "my": "running",
    }
    record = statuses["my_proc"]
    assert record is not None and record.name == "waiter"


def test_a_batch_that_fails_outside_its_messages_is_handled_one_message_at_a_time(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The batch's commit is refused twice (all at once, then a savepoint a message): each
    message is then handled in a transaction of its own, and only the one whose commit is
    refused again is dead-lettered, with the reason. What was published before is still
    marked sent, by the first transaction that commits."""
    now = [1_000_000.0]
    service = Service(store, CONFIG, Recorder(), clock=lambda: now[0])
    service.handle(launch(acts("p"), {}, "asks"))  # published: to be marked
    now[0] += 1
    real = store.transaction
    commits = [0]

    @contextmanager
    def refusing() -> Iterator[Any]:
        commits[0] += 1
        with real() as tx:
            yield tx
            if commits[0] in (1, 2, 4):  # the batch twice, then the second message alone
                raise StoreDataError("refused at commit")

    monkeypatch.setattr(store, "transaction", refusing)
    with caplog.at_level(logging.INFO, logger="bureaucrat"):
        verdicts = service.handle_batch([launch(acts("p"), {}, pid) for pid in ("a", "b", "c")])
    assert [v.outcome.value for v in verdicts] == ["ack", "dead", "ack"]
    assert "refused at commit" in verdicts[1].reason
    assert sorted(r.id for r in store.list_instances()) == ["a", "asks", "c"]
    assert outbox_rows(store)["asks"] == (now[0], None)  # not to be relayed a second time
    assert [(r.levelname, r.getMessage()) for r in caplog.records if "batch" in r.getMessage()] == [
        ("INFO", "a message of a batch failed: the batch is handled again, one by one"),
        ("WARNING", "a batch failed outside its messages: each is handled alone"),
    ]


# timers -----------------------------------------------------------------------------------------

SLEEPS_THEN_ACTS = '<process><delay duration="{seconds}"/><action participant="p"/></process>'


def test_firing_due_timers_takes_at_most_the_limit_earliest_first(store: Store) -> None:
    now = [1_000_000.0]
    service = Service(store, CONFIG, Recorder(), clock=lambda: now[0])
    for seconds in (3, 1, 2):
        source = f'<process><delay duration="{seconds}"/></process>'
        service.handle(launch(source, {}, f"sleeps-{seconds}"))
    now[0] += 5
    assert service.fire_due_timers(limit=2) == 2
    statuses = {r.id: r.status for r in store.list_instances()}
    assert statuses == {"sleeps-1": "completed", "sleeps-2": "completed", "sleeps-3": "running"}
    assert service.fire_due_timers(limit=2) == 1
    assert service.fire_due_timers(limit=2) == 0


def test_a_timer_whose_step_the_database_refuses_sets_only_its_instance_aside(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000_000.0]
    publisher = Recorder()
    service = Service(store, CONFIG, publisher, clock=lambda: now[0])
    service.handle(launch(SLEEPS_THEN_ACTS.format(seconds=1), {}, "healthy"))  # due first
    service.handle(launch(SLEEPS_THEN_ACTS.format(seconds=2), {}, "refused"))
    [timer] = store.timers_of("refused")

    refused = StoreDataError("a value the database cannot store")
    break_step(monkeypatch, refused, lambda pid, _: pid == "refused")
    now[0] += 3
    assert service.fire_due_timers() == 1
    # what the healthy instance sent in the same transaction is still to be published
    assert [pid for pid, _ in service.committed] == ["healthy"]
    assert service.publish_committed() == 1
    assert [json.loads(m.body)["process_id"] for m in publisher.sent] == ["healthy"]
    record = store.instance("refused")
    assert record is not None and record.status == "broken"
    assert record.error == f"timer {timer.id}: a value the database cannot store"
    assert record.updated_at == now[0]
    assert store.timers_of("refused") == []  # set aside: its timer does not come back
    assert service.fire_due_timers() == 0
    assert store.instance("healthy").status == "running"  # type: ignore[union-attr]


# operations -------------------------------------------------------------------------------------

COUNTS_TICKS = """<process>
  <context><property name="n" type="int">0</property></context>
  <while>
    <condition>True</condition>
    <await event="tick"/>
    <assign property="n">context["n"] + 1</assign>
  </while>
</process>"""


def tick_event(message_id: str) -> Message:
    return Message(CONFIG.event_queue, json.dumps({"event": "tick"}).encode(), message_id)


def count(store: Store, process_id: str) -> Any:
    record = store.instance(process_id)
    assert record is not None and record.state is not None
    return record.state["scopes"][""]["n"]


def journal_kinds(store: Store, process_id: str) -> list[str]:
    return [entry.kind for entry in store.journal(process_id)]


@pytest.mark.parametrize("fields", [{"n": 7}, {}])
def test_a_restart_runs_the_process_again_from_its_launch_fields(
    store: Store, fields: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch(COUNTS_TICKS, fields, "again"))
    service.handle(tick_event("t-1"))
    assert count(store, "again") == fields.get("n", 0) + 1
    with caplog.at_level(logging.ERROR, logger="bureaucrat"):
        assert service.handle(control("restart", "again")).outcome.value == "ack"
    assert count(store, "again") == fields.get("n", 0)
    assert journal_kinds(store, "again").count("restarted") == 1
    assert store.instance("again").status == "running"  # type: ignore[union-attr]
    assert caplog.records == []


def test_a_restart_whose_launch_fields_cannot_be_read_starts_from_the_definition_alone(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch(COUNTS_TICKS, {"n": 7}, "unreadable"))
    with store.engine.begin() as connection:
        where = t.instances.c.id == "unreadable"
        connection.execute(t.instances.update().where(where).values(fields="{not json"))
    with caplog.at_level(logging.ERROR, logger="bureaucrat"):
        service.handle(control("restart", "unreadable"))
    assert count(store, "unreadable") == 0
    assert journal_kinds(store, "unreadable").count("restarted") == 1
    assert store.instance("unreadable").status == "running"  # type: ignore[union-attr]
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert caplog.messages == ["restart unreadable: its launch's fields cannot be read: none given"]


def test_a_restart_of_an_unknown_process_is_ignored(store: Store) -> None:
    service = Service(store, CONFIG, Recorder())
    assert service.handle(control("restart", "nobody")).outcome.value == "ack"
    assert store.list_instances() == []


def test_a_launch_claiming_a_caller_does_not_use_up_the_message_id_of_the_real_one(
    store: Store,
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(COUNTS_TICKS, {}, "ticker"))
    service.handle(tick_event("t-1"))
    service.handle(launch(CALLER, {"child": CHILD}, "caller"))
    real = publisher.take(CONFIG.launch_queue)
    body, child_id = json.loads(real.body), real.message_id or ""
    impostor = Message(
        real.queue, json.dumps({**body, "definition": COUNTS_TICKS}).encode(), real.message_id
    )
    assert service.handle(impostor).outcome.value == "ack"  # ignored, not dead-lettered
    assert store.instance(child_id) is None
    service.handle(real)
    child = store.instance(child_id)
    assert child is not None and child.parent_id == "caller" and child.status == "running"
    # the message ids processed before are still known: a redelivered tick is dropped
    service.handle(tick_event("t-1"))
    assert count(store, "ticker") == 1


# the outbox relay -------------------------------------------------------------------------------


def acts(participant: str) -> str:
    return f'<process><action participant="{participant}"/></process>'


def crash_before_publishing(service: Service, *messages: Message) -> None:
    """Handle ``messages`` and lose what they send before it is published, as in a crash."""
    service.handle_batch(list(messages))
    service.committed.clear()


def outbox_rows(store: Store) -> dict[str | None, tuple[float | None, str | None]]:
    """Instance -> (sent_at, error) of its outbox row."""
    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(t.outbox).order_by(t.outbox.c.id)).all()
    return {row.instance_id: (row.sent_at, row.error) for row in rows}


def test_the_relay_leaves_young_rows_to_their_daemon_unless_told_to_take_everything(
    store: Store,
) -> None:
    now = [1_000_000.0]
    publisher = Recorder()
    service = Service(store, CONFIG, publisher, clock=lambda: now[0])
    crash_before_publishing(service, launch(acts("p"), {}, "older"))
    now[0] += RELAY_AFTER - 1
    assert service.relay_outbox() == 0 and publisher.sent == []
    now[0] += 2
    crash_before_publishing(service, launch(acts("p"), {}, "younger"))
    assert service.relay_outbox() == 1
    assert [json.loads(m.body)["process_id"] for m in publisher.sent] == ["older"]
    assert service.relay_outbox(everything=True) == 1
    assert [json.loads(m.body)["process_id"] for m in publisher.sent] == ["older", "younger"]
    assert store.unsent() == []


def test_the_relay_publishes_every_unsent_row_a_page_at_a_time(store: Store) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    pids = [f"p{n}" for n in range(5)]
    crash_before_publishing(service, *(launch(acts("p"), {}, pid) for pid in pids))
    assert service.relay_outbox(limit=2, everything=True) == 5
    assert [json.loads(m.body)["process_id"] for m in publisher.sent] == pids
    assert store.unsent() == []
    assert service.relay_outbox(limit=2, everything=True) == 0


def test_without_a_publisher_the_relay_sends_nothing(store: Store) -> None:
    service = Service(store, CONFIG, None)
    crash_before_publishing(service, launch(acts("p"), {}, "waits"))
    assert service.relay_outbox(everything=True) == 0
    assert len(store.unsent()) == 1


class Refusing(Recorder):
    """RabbitMQ refuses what goes to ``routing_key`` (no such queue, say)."""

    def __init__(self, routing_key: str) -> None:
        super().__init__()
        self.routing_key = routing_key
        self.refused: list[str] = []

    def publish(self, message: Outgoing) -> None:
        if message.routing_key == self.routing_key:
            self.refused.append(message.message_id)
            raise PublishError("NOT_FOUND - no queue")
        super().publish(message)


def test_a_row_rabbitmq_refuses_on_the_relay_is_kept_with_the_reason_and_its_instance_set_aside(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1_000_000.0]
    publisher = Refusing("worker_nobody")
    service = Service(store, CONFIG, publisher, clock=lambda: now[0])
    victim, bystander = launch(acts("nobody"), {}, "victim"), launch(acts("p"), {}, "bystander")
    crash_before_publishing(service, victim, bystander)
    [refused] = [m for m in store.unsent() if m.instance_id == "victim"]
    now[0] += 60
    with caplog.at_level(logging.ERROR, logger="bureaucrat"):
        assert service.relay_outbox() == 1
    reason = f"message {refused.message.message_id} not sent: NOT_FOUND - no queue"
    assert caplog.messages == [reason]
    assert outbox_rows(store) == {
        "victim": (None, "NOT_FOUND - no queue"),
        "bystander": (now[0], None),
    }
    record = store.instance("victim")
    assert record is not None and record.status == "broken"
    assert record.error == reason
    assert record.updated_at == now[0]
    assert store.instance("bystander").status == "running"  # type: ignore[union-attr]
    assert service.relay_outbox(everything=True) == 0  # kept for the operator, not sent again
    assert [m.routing_key for m in publisher.sent] == ["worker_p"]
    assert publisher.refused == [refused.message.message_id]


def test_a_batch_whose_message_the_database_refuses_is_handled_again_a_savepoint_each(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the refused message is dead-lettered; the others, two of them for one instance,
    are applied in the same transaction (not each in a transaction of its own)."""
    service = Service(store, CONFIG, Recorder())
    for pid in ("refused", "twice"):
        service.handle(launch('<process><await event="never"/></process>', {}, pid))
    break_step(monkeypatch, StoreDataError("a value it cannot store"), lambda p, _: p == "refused")

    def setting(pid: str, n: int) -> Message:
        body = {"name": "set", "process_id": pid, "values": {f"v{n}": n}}
        return Message(CONFIG.message_queue, json.dumps(body).encode(), f"set-{pid}-{n}")

    with caplog.at_level(logging.INFO, logger="bureaucrat"):
        verdicts = service.handle_batch(
            [setting("refused", 1), setting("twice", 2), setting("twice", 3)]
        )
    assert [v.outcome.value for v in verdicts] == ["dead", "ack", "ack"]
    assert verdicts[0].reason == "the database refused this message: a value it cannot store"
    assert [m for m in caplog.messages if "batch" in m] == [
        "a message of a batch failed: the batch is handled again, one by one"
    ]
    record = store.instance("twice")
    assert record is not None and record.state is not None
    assert {k: v for k, v in root_context(record.state).items() if k.startswith("v")} == {
        "v2": 2,
        "v3": 3,
    }


# instances set aside within a batch ---------------------------------------------------------------


def test_an_instance_set_aside_in_a_batch_takes_nothing_more_of_that_batch(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch(COUNTS_TICKS, {}, "fragile"))
    calls = break_step(monkeypatch, RuntimeError("a defect"), lambda _, steps: steps == 1)
    verdicts = service.handle_batch([tick_event("t-1"), tick_event("t-2")])
    assert [v.disposition.value for v in verdicts] == ["set_aside", "handled"]
    assert calls == ["fragile"]
    record = store.instance("fragile")
    assert record is not None and record.status == "broken"
    assert record.error == "internal error on EventReceived: RuntimeError: a defect"


def test_an_instance_set_aside_by_one_of_its_timers_is_not_stepped_by_the_next(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1_000_000.0]
    service = Service(store, CONFIG, Recorder(), clock=lambda: now[0])
    two_delays = '<process><all><delay duration="1"/><delay duration="2"/></all></process>'
    service.handle(launch(two_delays, {}, "fragile"))
    refused = StoreDataError("a value the database cannot store")
    calls = break_step(monkeypatch, refused, lambda _, steps: steps == 1)
    (first, _) = sorted(store.timers_of("fragile"), key=lambda timer: timer.due)
    now[0] += 3
    with caplog.at_level(logging.ERROR, logger="bureaucrat"):
        assert service.fire_due_timers() == 0
    assert calls == ["fragile"]
    record = store.instance("fragile")
    assert record is not None and record.status == "broken"
    assert record.error == f"timer {first.id}: a value the database cannot store"
    assert [r.getMessage() for r in caplog.records] == [
        f"timer {first.id} of fragile: a value the database cannot store"
    ]
    assert store.timers_of("fragile") == []


# routing answers and events ------------------------------------------------------------------


def workitem_of(publisher: Recorder, process_id: str) -> dict[str, Any]:
    """The workitem dispatched by ``process_id`` (taken from what was published)."""
    found = next(m for m in publisher.sent if json.loads(m.body)["process_id"] == process_id)
    publisher.sent.remove(found)
    body: dict[str, Any] = json.loads(found.body)
    return body


def reply(body: dict[str, Any], *keep: str) -> Message:
    """An answer to a workitem that names it only by the fields ``keep``."""
    answer = {key: body[key] for key in keep} | {"payload": {"status": "done"}}
    return Message(CONFIG.message_queue, json.dumps(answer).encode())


@pytest.mark.parametrize("names", [("workitem_id",), ("target",), ("workitem_id", "target")])
def test_an_answer_finds_its_instance_by_workitem_id_or_by_target(
    store: Store, names: tuple[str, ...]
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(acts("p"), {}, "asks"))
    service.handle(launch(acts("p"), {}, "bystander"))
    workitem = workitem_of(publisher, "asks")
    assert service.handle(reply(workitem, *names)).outcome.value == "ack"
    assert store.instance("asks").status == "completed"  # type: ignore[union-attr]
    assert store.instance("bystander").status == "running"  # type: ignore[union-attr]


def test_an_answer_for_an_unknown_workitem_or_activity_is_ignored(store: Store) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(acts("p"), {}, "asks"))
    before = journal_kinds(store, "asks")
    for unknown in ({"workitem_id": "nope"}, {"target": "asks_7"}, {"target": "nobody_0"}):
        answer = Message(CONFIG.message_queue, json.dumps(unknown | {"payload": {}}).encode())
        assert service.handle(answer).outcome.value == "ack"  # not dead-lettered
    assert journal_kinds(store, "asks") == before
    assert store.instance("asks").status == "running"  # type: ignore[union-attr]


def test_an_answer_by_target_that_two_instances_wait_at_is_ignored(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """P_0's activity 0 and P's activity 0_0 are both P_0_0: the target names neither."""
    caplog.set_level(logging.WARNING, logger="bureaucrat")
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(
        launch('<process><sequence><action participant="p"/></sequence></process>', {}, "amb")
    )
    service.handle(launch(acts("p"), {}, "amb_0"))
    first, second = workitem_of(publisher, "amb"), workitem_of(publisher, "amb_0")
    assert first["target"] == second["target"] == "amb_0_0"
    assert service.handle(reply(first, "target")).outcome.value == "ack"
    statuses = {r.id: r.status for r in store.list_instances()}
    assert statuses == {"amb": "running", "amb_0": "running"}
    assert service.handle(reply(first, "workitem_id", "target")).outcome.value == "ack"
    assert store.instance("amb").status == "completed"  # type: ignore[union-attr]
    # amb's workitem is answered: only amb_0 waits at the target now
    assert service.handle(reply(second, "target")).outcome.value == "ack"
    assert store.instance("amb_0").status == "completed"  # type: ignore[union-attr]
    assert [m for m in caplog.messages if m.startswith("answer for")] == [
        "answer for amb_0_0: amb_0, amb all wait there"  # the first answer only
    ]


WAITS_FOR_GO = '<process><await event="go"><condition>event["ok"]</condition></await></process>'


def test_an_event_naming_a_process_reaches_only_that_one_with_its_data(store: Store) -> None:
    service = Service(store, CONFIG, Recorder())
    for pid in ("named", "other"):
        service.handle(launch(WAITS_FOR_GO, {}, pid))
    body = {"event": "go", "ok": True, "process_id": "named"}
    service.handle(Message(CONFIG.event_queue, json.dumps(body).encode(), "go-1"))
    statuses = {r.id: r.status for r in store.list_instances()}
    assert statuses == {"named": "completed", "other": "running"}


# subprocesses --------------------------------------------------------------------------------

DONE_AT_ONCE = '<process><context><property name="r" type="int">4</property></context></process>'


def test_a_finished_subprocess_resumes_its_caller_from_the_childs_own_record(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(CALLER, {"child": DONE_AT_ONCE}, "caller"))
    child_launch = publisher.take(CONFIG.launch_queue)
    child_id = child_launch.message_id or ""
    service.handle(child_launch)
    finished = publisher.take(CONFIG.message_queue)
    assert json.loads(finished.body)["name"] == "child_finished"
    with caplog.at_level(logging.INFO, logger="bureaucrat"):
        assert service.handle(finished).outcome.value == "ack"
    assert caplog.messages == []  # journalled, not logged: it is no operator's doing
    # journal records are documented: `bureaucratctl show` prints them
    assert [(e.kind, e.activity, e.details) for e in store.journal("caller")] == [
        ("launched", "caller", {"name": None, "fields": ["child"]}),
        ("launched", "caller_0", {"child": child_id}),
        ("child", "caller_0", {"child": child_id, "status": "completed"}),
        ("completed", "caller", {}),
    ]


def test_a_faulted_subprocess_faults_its_call_with_the_childs_code_and_message(
    store: Store,
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    child = '<process><fault code="Refused" message="no stock"/></process>'
    service.handle(launch(CALLER, {"child": child}, "caller"))
    child_launch = publisher.take(CONFIG.launch_queue)
    child_id = child_launch.message_id or ""
    service.handle(child_launch)
    assert store.instance(child_id).status == "faulted"  # type: ignore[union-attr]
    assert service.handle(publisher.take(CONFIG.message_queue)).outcome.value == "ack"
    fault = {"code": "Refused", "message": "no stock"}
    assert [(e.kind, e.activity, e.details) for e in store.journal("caller")][2:] == [
        ("child", "caller_0", {"child": child_id, "status": "faulted"}),
        ("fault", "caller_0", fault),
        ("cancelled", "caller_0", {}),
        ("faulted", "caller", {"fault": fault}),
    ]


@pytest.mark.parametrize("child_id", ["ghost", "broken-child"])
def test_a_subprocess_end_naming_a_child_unknown_or_set_aside_is_ignored(
    store: Store, child_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(CALLER, {"child": CHILD}, "caller"))
    service.handle(launch(CHILD, {}, "broken-child"))
    with store.engine.begin() as connection:
        connection.execute(
            sa.update(t.instances)
            .where(t.instances.c.id == "broken-child")
            .values(status="broken", parent_id="caller")
        )
    before = journal_kinds(store, "caller")
    forged: dict[str, Any] = {
        "name": "child_finished",
        "process_id": "caller",
        "activity": "caller_0",
    }
    forged |= {"child_id": child_id, "status": "completed", "context": {}, "fault": None}
    message = Message(CONFIG.message_queue, json.dumps(forged).encode(), f"end-{child_id}")
    with caplog.at_level(logging.INFO, logger="bureaucrat"):
        assert service.handle(message).outcome.value == "ack"
    assert caplog.messages == ["child_finished for process caller: not applicable, ignored"]
    assert journal_kinds(store, "caller") == before
    assert store.instance("caller").status == "running"  # type: ignore[union-attr]


def test_a_subprocess_end_announced_before_it_ended_is_ignored(store: Store) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(CALLER, {"child": CHILD}, "caller"))
    child_launch = publisher.take(CONFIG.launch_queue)
    service.handle(child_launch)
    before = journal_kinds(store, "caller")
    forged: dict[str, Any] = {
        "name": "child_finished",
        "process_id": "caller",
        "activity": "caller_0",
        "child_id": child_launch.message_id,
        "status": "completed",
        "context": {},
        "fault": None,
    }
    message = Message(CONFIG.message_queue, json.dumps(forged).encode(), "forged")
    assert service.handle(message).outcome.value == "ack"
    assert journal_kinds(store, "caller") == before
    assert store.instance("caller").status == "running"  # type: ignore[union-attr]


def test_a_subprocess_whose_definition_is_invalid_faults_its_call(store: Store) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(CALLER, {"child": "<process><bogus/></process>"}, "caller"))
    child_launch = publisher.take(CONFIG.launch_queue)
    child_id = child_launch.message_id or ""
    assert service.handle(child_launch).outcome.value == "ack"  # the caller gets the fault
    assert store.instance(child_id) is None
    fault = {
        "code": "DefinitionError",
        "message": "line 1: unknown element <bogus> inside <process>",
    }
    assert [(e.kind, e.activity, e.details) for e in store.journal("caller")] == [
        ("launched", "caller", {"name": None, "fields": ["child"]}),
        ("launched", "caller_0", {"child": child_id}),
        ("child", "caller_0", {"child": child_id, "status": "faulted"}),
        ("fault", "caller_0", fault),
        ("cancelled", "caller_0", {}),
        ("faulted", "caller", {"fault": fault}),
    ]
    # the same launch again (a redelivery) is known by its id: nothing more happens
    service.handle(child_launch)
    assert len(store.journal("caller")) == 6
    assert service.duplicates == 1


def test_an_invalid_definition_launched_by_hand_is_dead_lettered_with_the_reason(
    store: Store,
) -> None:
    service = Service(store, CONFIG, Recorder())
    verdict = service.handle(launch("<process><bogus/></process>", {}, "bad"))
    assert (verdict.outcome.value, verdict.disposition.value) == ("dead", "dead_lettered")
    assert verdict.reason == "invalid definition: line 1: unknown element <bogus> inside <process>"
    assert store.list_instances() == []


def test_a_subprocess_end_announced_to_another_process_is_not_applied_to_it(store: Store) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(CALLER, {"child": DONE_AT_ONCE}, "a"))
    service.handle(launch(CALLER, {"child": CHILD}, "b"))
    service.handle(publisher.take(CONFIG.launch_queue))  # a's child, which completes at once
    announced = json.loads(publisher.take(CONFIG.message_queue).body)
    before = journal_kinds(store, "b")
    misdirected = announced | {"process_id": "b", "activity": "b_0"}
    service.handle(Message(CONFIG.message_queue, json.dumps(misdirected).encode(), "elsewhere"))
    assert journal_kinds(store, "b") == before


def test_what_rabbitmq_took_is_marked_sent_and_not_relayed_again(store: Store) -> None:
    now = [1_000_000.0]
    publisher = Refusing("worker_nobody")
    service = Service(store, CONFIG, publisher, clock=lambda: now[0])
    batch = [launch(acts("p"), {}, "first"), launch(acts("p"), {}, "second")]
    service.handle_batch([*batch, launch(acts("nobody"), {}, "refused")])
    assert service.publish_committed() == 2
    assert service.publish_committed() == 0  # nothing more to publish
    service.mark_published()  # no next transaction soon: marked in one of its own
    assert outbox_rows(store) == {
        "first": (now[0], None),
        "second": (now[0], None),
        "refused": (None, "NOT_FOUND - no queue"),
    }
    now[0] += 60
    assert service.relay_outbox() == 0
    assert [json.loads(m.body)["process_id"] for m in publisher.sent] == ["first", "second"]


def test_what_was_published_is_marked_sent_when_the_daemon_is_idle(store: Store) -> None:
    now = [1_000_000.0]
    publisher = Recorder()
    service = Service(store, CONFIG, publisher, clock=lambda: now[0])
    service.handle(launch(acts("p"), {}, "asks"))
    assert len(store.unsent()) == 1  # published: to be marked by the next transaction
    now[0] += 1
    service.mark_published()
    assert outbox_rows(store) == {"asks": (now[0], None)}
    service.handle(launch(acts("p"), {}, "next"))
    service.handle(launch(acts("p"), {}, "last"))  # its transaction marks what "next" sent
    assert [row.instance_id for row in store.unsent()] == ["last"]


def test_what_was_published_is_marked_sent_even_by_a_batch_that_failed_first(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marks ride on the next transaction; when that one is rolled back (a message of its
    batch refused), they are kept for the one that handles the batch again."""
    now = [1_000_000.0]
    service = Service(store, CONFIG, Recorder(), clock=lambda: now[0])
    for pid in ("refused", "other"):
        service.handle(launch('<process><await event="never"/></process>', {}, pid))
    service.handle(launch(acts("p"), {}, "asks"))  # published: to be marked
    break_step(monkeypatch, StoreDataError("a value it cannot store"), lambda p, _: p == "refused")
    now[0] += 1
    batch = [control("pause", "refused"), control("pause", "other")]
    assert [v.outcome.value for v in service.handle_batch(batch)] == ["dead", "ack"]
    assert outbox_rows(store)["asks"] == (now[0], None)


# messages refused, or failing, before or outside their step ---------------------------------


def test_a_launch_sent_as_json_that_is_not_json_is_dead_lettered_as_such(store: Store) -> None:
    """The content type decides: the body is not taken for the original's bare XML."""
    service = Service(store, CONFIG, Recorder())
    message = Message(CONFIG.launch_queue, b"<process/>", "typed")  # application/json
    verdict = service.handle(message)
    assert verdict.outcome.value == "dead"
    assert verdict.reason.startswith("launch message is not valid JSON")
    assert store.list_instances() == []


@pytest.mark.parametrize(
    ("message_id", "reason"),
    [
        (b"\xff\xfe", "message_id is not UTF-8 text"),  # pika leaves invalid UTF-8 as bytes
        ("a\x00b", "message_id contains a NUL character"),
        ("a\ud800b", "message_id contains a lone surrogate (U+D800)"),
    ],
)
def test_a_message_id_that_cannot_be_stored_dead_letters_its_message_with_the_reason(
    store: Store, message_id: Any, reason: str
) -> None:
    service = Service(store, CONFIG, Recorder())
    verdict = service.handle(Message(CONFIG.launch_queue, b"<process/>", message_id))
    assert (verdict.outcome.value, verdict.reason) == ("dead", reason)
    assert store.list_instances() == []


def test_a_celery_action_that_cannot_be_routed_dead_letters_its_message_as_a_configuration_error(
    store: Store,
) -> None:
    """With the original's routing, a task's queue is the first part of its name: one that is
    empty reaches no worker, and nothing of the launch is kept."""
    config = replace(CONFIG, taskqueue_type="celery", celery_routing="original")
    service = Service(store, config, Recorder())
    source = '<process><action participant=".tasks.hook"/></process>'
    verdict = service.handle(launch(source, {}, "unroutable"))
    assert verdict.outcome.value == "dead"
    assert verdict.reason.startswith(
        "configuration error: Celery participant .tasks.hook: the first part of its name, '', "
        "is empty"
    )
    assert store.instance("unroutable") is None


def test_a_defect_outside_any_step_dead_letters_only_its_message_with_its_type_and_text(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(acts("p"), {}, "asks"))
    answer = reply(workitem_of(publisher, "asks"), "workitem_id")

    def defect(*_: Any) -> None:
        raise LookupError("a defect")

    with monkeypatch.context() as patched, caplog.at_level(logging.ERROR, logger="bureaucrat"):
        patched.setattr("bureaucrat.service._route", defect)
        verdicts = service.handle_batch([answer, launch(acts("p"), {}, "next")])
    assert [(v.outcome.value, v.reason) for v in verdicts] == [
        ("dead", "internal error: LookupError: a defect"),
        ("ack", ""),
    ]
    assert f"internal error on a message from {CONFIG.message_queue}" in caplog.messages
    assert store.instance("next") is not None
    assert service.handle(answer).outcome.value == "ack"  # the defect gone, the answer is taken
    assert store.instance("asks").status == "completed"  # type: ignore[union-attr]


# what the service logs, meters and stores for operators ---------------------------------------


def test_each_launch_is_logged_with_its_process_id_and_its_definitions_name_or_as_ignored(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """And each launch that starts nothing, with why; every duplicate is one."""
    service = Service(store, CONFIG, Recorder())
    source = '<process name="waiter"><await event="a"/></process>'
    again = {"definition": source, "process_id": "named"}
    with caplog.at_level(logging.INFO, logger="bureaucrat"):
        verdicts = [
            service.handle(launch(source, {}, "named")),
            service.handle(launch('<process><await event="a"/></process>', {}, "anonymous")),
            service.handle(launch(source, {}, "named")),  # the same message again
            service.handle(launch(source, {}, "named")),
            service.handle(Message(CONFIG.launch_queue, json.dumps(again).encode(), "other")),
            service.handle(launch(source, {}, "fresh")),  # after duplicates, a new one
        ]
    assert caplog.messages == [
        "launched named (waiter)",
        "launched anonymous (unnamed)",
        f"message {CONFIG.launch_queue}:named was processed already: dropped",  # queue:message id
        f"message {CONFIG.launch_queue}:named was processed already: dropped",
        "process named exists already: launch ignored",
        "launched fresh (waiter)",
    ]
    dispositions = [v.disposition.value for v in verdicts]
    assert dispositions == ["handled", "handled", "duplicate", "duplicate", "duplicate", "handled"]


def test_an_operators_control_message_is_logged_with_its_process_or_as_ignored(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch('<process><await event="a"/></process>', {}, "known"))
    with caplog.at_level(logging.INFO, logger="bureaucrat"):
        for name, process_id in [("pause", "known"), ("retry", "known"), ("pause", "nobody")]:
            assert service.handle(control(name, process_id)).outcome.value == "ack"
        service.handle(control("pause", "known"))  # the same message again
        # the original's terminate names an activity: the process is the longest candidate
        body = json.dumps({"name": "terminate", "target": "ghost_0_1"}).encode()
        assert service.handle(Message(CONFIG.message_queue, body, "t")).outcome.value == "ack"
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "pause known"),  # a retry is journalled, not logged
        ("WARNING", "pause for unknown process nobody: ignored"),
        ("INFO", f"message {CONFIG.message_queue}:pause-known was processed already: dropped"),
        ("WARNING", "terminate for unknown process ghost_0_1: ignored"),
    ]
    assert ("paused", {"reason": ""}) in [(e.kind, e.details) for e in store.journal("known")]


class Durations:
    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []

    def step(self, event: str, seconds: float) -> None:
        self.steps.append((event, seconds))


def test_each_step_is_metered_with_its_event_and_how_long_it_took(store: Store) -> None:
    meter = Durations()
    service = Service(store, CONFIG, Recorder(), meter=meter)
    started = time.perf_counter()
    service.handle(launch('<process><await event="a"/></process>', {}, "metered"))
    service.handle(Message(CONFIG.event_queue, json.dumps({"event": "a"}).encode()))
    elapsed = time.perf_counter() - started
    assert [event for event, _ in meter.steps] == ["Start", "EventReceived"]
    assert all(0 <= seconds <= elapsed for _, seconds in meter.steps)


def test_a_launched_definition_is_stored_with_its_process_name(store: Store) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch('<process name="waiter"><await event="a"/></process>', {}, "named"))
    service.handle(launch('<process><await event="a"/></process>', {}, "anonymous"))
    assert sorted((d.name or "", d.instances) for d in store.list_definitions()) == [
        ("", 1),
        ("waiter", 1),
    ]
