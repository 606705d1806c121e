"""The delivery guarantees of README and DESIGN.md section 5, checked by their outcomes.

A message delivered twice (a redelivery after a crash, a publisher that sent it again) is
applied once: a launch, an answer, an event, a control message (terminate, retry) and a timer
that two daemons both fire. Without a message id two identical events are two events, unless
the broker says the second is a redelivery. An operator's retry gives a failed action all of
its ``retries=`` again.

First at the service level, on the real store (SQLite and PostgreSQL), where the redelivered
flag and a duplicate inside one batch can be forced; then end to end, through the real daemon
and RabbitMQ. Outcomes are read from the journal and the context, never from calls.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pytest
import sqlalchemy as sa

from bureaucrat.amqp import QueueArguments
from bureaucrat.config import Config
from bureaucrat.engine import events as ev
from bureaucrat.engine.state import root_context
from bureaucrat.errors import StoreError
from bureaucrat.service import ACK, Service
from bureaucrat.store import Store, TimerRecord
from tests.brokers import AMQP_URL
from tests.harness import Installation, dumps, wait_until
from tests.store_fixtures import postgres_url, store, store_url
from tests.test_service import Message, Recorder, launch

__all__ = ["postgres_url", "store", "store_url"]  # fixtures, imported for pytest

CONFIG = Config()

TICKS = """<process>
  <context><property name="n" type="int">0</property></context>
  <while>
    <condition>context["n"] &lt; 10</condition>
    <await event="tick"/>
    <assign property="n">context["n"] + 1</assign>
  </while>
</process>"""

TWO_ACTIONS = '<process><action participant="p"/><action participant="p"/></process>'
FAILING = '<process><action participant="p" retries="2"/></process>'
SLEEPS = """<process>
  <context><property name="n" type="int">0</property></context>
  <while>
    <condition>context["n"] &lt; 10</condition>
    <delay duration="1"/>
    <assign property="n">context["n"] + 1</assign>
  </while>
</process>"""


def tick(message_id: str | None = None, *, redelivered: bool = False) -> Message:
    body = json.dumps({"event": "tick"}).encode()
    return Message(CONFIG.event_queue, body, message_id, redelivered=redelivered)


def control(name: str, process_id: str, message_id: str | None, **extra: Any) -> Message:
    body = json.dumps({"name": name, "process_id": process_id, **extra}).encode()
    return Message(CONFIG.message_queue, body, message_id)


def again(message: Message, *, redelivered: bool = True) -> Message:
    """The same message delivered once more, as the broker would after a crash."""
    return Message(
        message.queue, message.body, message.message_id, message.content_type, redelivered
    )


def answer(workitem: Message, status: str = "done", message_id: str | None = None) -> Message:
    body = json.loads(workitem.body)
    body["payload"]["status"] = status
    return Message(CONFIG.message_queue, json.dumps(body).encode(), message_id)


def trail(store: Store, process_id: str) -> list[tuple[str, str]]:
    """The journal of an instance, as (kind, activity) pairs."""
    return [(entry.kind, entry.activity) for entry in store.journal(process_id)]


def workitems(publisher: Recorder) -> int:
    """How many workitems for participant ``p`` were sent and not yet answered."""
    return sum(1 for message in publisher.sent if message.routing_key == "worker_p")


def kinds(store: Store, process_id: str, kind: str) -> int:
    return sum(1 for entry in store.journal(process_id) if entry.kind == kind)


def counter(store: Store, process_id: str) -> int:
    return int(root_value(store, process_id, "n"))


def root_value(store: Store, process_id: str, name: str) -> Any:
    record = store.instance(process_id)
    assert record is not None and record.state is not None
    return root_context(record.state)[name]


# launch -----------------------------------------------------------------------------------------


def test_a_launch_delivered_twice_with_its_message_id_starts_one_instance(store: Store) -> None:
    service = Service(store, CONFIG, Recorder())
    first = launch(TICKS, {}, "once")
    service.handle(first)
    service.handle(tick("t1"))  # the instance moved on: a second launch must not reset it
    assert service.handle(again(first, redelivered=False)) == ACK  # not dead-lettered
    assert service.handle(again(first)) == ACK
    assert [r.id for r in store.list_instances()] == ["once"]
    assert kinds(store, "once", "launched") == 1
    assert counter(store, "once") == 1


def test_a_launch_without_message_id_redelivered_starts_one_instance(store: Store) -> None:
    service = Service(store, CONFIG, Recorder())
    body = json.dumps({"definition": TICKS, "fields": {}}).encode()
    service.handle(Message(CONFIG.launch_queue, body))
    service.handle(Message(CONFIG.launch_queue, body, redelivered=True))
    assert len(store.list_instances()) == 1


def test_two_launches_without_message_id_start_two_instances(store: Store) -> None:
    service = Service(store, CONFIG, Recorder())
    body = json.dumps({"definition": TICKS, "fields": {}}).encode()
    service.handle(Message(CONFIG.launch_queue, body))
    service.handle(Message(CONFIG.launch_queue, body))
    assert len(store.list_instances()) == 2


# answers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("message_id", ["answer-1", None])
def test_an_answer_delivered_twice_is_applied_once(store: Store, message_id: str | None) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(TWO_ACTIONS, {}, "a"))
    reply = answer(publisher.take("worker_p"), message_id=message_id)
    service.handle(reply)
    before = trail(store, "a")
    service.handle(again(reply))  # the broker says so, with or without an id
    assert trail(store, "a") == before
    assert kinds(store, "a", "answered") == 1 and kinds(store, "a", "dispatched") == 2


def test_an_answer_sent_twice_with_its_message_id_is_applied_once(store: Store) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(TWO_ACTIONS, {}, "a"))
    reply = answer(publisher.take("worker_p"), message_id="answer-1")
    service.handle(reply)
    before = trail(store, "a")
    service.handle(again(reply, redelivered=False))  # published twice: not a redelivery
    assert trail(store, "a") == before


# events -----------------------------------------------------------------------------------------


def test_an_event_sent_twice_with_its_message_id_is_taken_once(store: Store) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch(TICKS, {}, "e"))
    service.handle(tick("t1"))
    service.handle(tick("t1"))
    assert counter(store, "e") == 1
    assert kinds(store, "e", "event") == 1


def test_an_event_redelivered_without_message_id_is_taken_once(store: Store) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch(TICKS, {}, "e"))
    service.handle(tick())
    service.handle(tick(redelivered=True))
    assert counter(store, "e") == 1


def test_a_redelivered_event_without_message_id_is_told_apart_from_another_by_its_body(
    store: Store,
) -> None:
    """Without a message id, a redelivery is recognised by its body: a different event that
    comes back is taken once, not dropped as the first one's duplicate."""
    service = Service(store, CONFIG, Recorder())
    service.handle(launch(TICKS, {}, "e"))
    service.handle(tick())
    other = json.dumps({"event": "tick", "data": {"from": "elsewhere"}}).encode()
    service.handle(Message(CONFIG.event_queue, other, None, redelivered=True))
    assert counter(store, "e") == 2


def test_two_identical_events_without_message_id_are_two_events(store: Store) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch(TICKS, {}, "e"))
    service.handle(tick())
    service.handle(tick())
    assert counter(store, "e") == 2


@pytest.mark.parametrize("redelivered", [False, True])
def test_an_event_twice_in_one_batch_with_its_message_id_is_taken_once(
    store: Store, redelivered: bool
) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch(TICKS, {}, "e"))
    service.handle_batch([tick("t1"), tick("t2"), tick("t1", redelivered=redelivered)])
    service.publish_committed()
    assert counter(store, "e") == 2


def test_an_event_twice_in_one_batch_without_message_id(store: Store) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch(TICKS, {}, "e"))
    service.handle_batch([tick(), tick(), tick(redelivered=True)])
    service.publish_committed()
    assert counter(store, "e") == 2  # two sent on purpose; the redelivery is dropped


def test_an_event_for_two_instances_redelivered_is_taken_once_by_each(store: Store) -> None:
    service = Service(store, CONFIG, Recorder())
    for pid in ("e1", "e2"):
        service.handle(launch(TICKS, {}, pid))
    service.handle(tick("t1"))
    service.handle(tick("t1", redelivered=True))
    assert counter(store, "e1") == counter(store, "e2") == 1


# control ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("redelivered", [False, True])
def test_a_terminate_delivered_twice_with_its_message_id_is_applied_once(
    store: Store, redelivered: bool
) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch(TICKS, {}, "c"))
    stop = control("terminate", "c", "stop-1")
    service.handle(stop)
    before = trail(store, "c")
    service.handle(again(stop, redelivered=redelivered))
    assert trail(store, "c") == before
    assert store.instance("c").status == "terminated"  # type: ignore[union-attr]


def test_a_terminate_redelivered_without_message_id_is_applied_once(store: Store) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch(TICKS, {}, "c"))
    stop = control("terminate", "c", None)
    service.handle(stop)
    before = trail(store, "c")
    service.handle(again(stop))
    assert trail(store, "c") == before


def _failed_action(service: Service, publisher: Recorder, pid: str) -> None:
    """Launch FAILING and let its participant answer ``error`` until the action has failed."""
    service.handle(launch(FAILING, {}, pid))
    for _ in range(3):  # the first attempt and its two retries
        service.handle(answer(publisher.take("worker_p"), "error"))
    assert kinds(service.store, pid, "failed") == 1
    assert workitems(publisher) == 0


@pytest.mark.parametrize(
    ("message_id", "redelivered"), [("retry-1", False), ("retry-1", True), (None, True)]
)
def test_a_retry_delivered_twice_dispatches_once(
    store: Store, message_id: str | None, redelivered: bool
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    _failed_action(service, publisher, "r")
    retry = control("retry", "r", message_id)
    service.handle(retry)
    before = trail(store, "r")
    service.handle(again(retry, redelivered=redelivered))
    assert trail(store, "r") == before
    assert workitems(publisher) == 1


def test_a_retry_in_the_same_batch_as_itself_dispatches_once(store: Store) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    _failed_action(service, publisher, "r")
    retry = control("retry", "r", "retry-1")
    service.handle_batch([retry, again(retry)])
    service.publish_committed()
    assert kinds(store, "r", "dispatched") == 4  # three attempts, then the operator's one
    assert kinds(store, "r", "ignored") == 0
    assert workitems(publisher) == 1


def test_an_answer_and_a_terminate_each_twice_in_one_batch_are_applied_once(
    store: Store,
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(TWO_ACTIONS, {}, "b"))
    reply = answer(publisher.take("worker_p"), message_id="answer-1")
    stop = control("terminate", "b", "stop-1")
    service.handle_batch([reply, again(reply), stop, again(stop, redelivered=False)])
    service.publish_committed()
    assert store.instance("b").status == "terminated"  # type: ignore[union-attr]
    journal = [kind for kind, _ in trail(store, "b")]
    assert journal.count("answered") == journal.count("terminating") == 1
    assert "ignored" not in journal


@pytest.mark.parametrize("with_ids", [True, False], ids=["message-ids", "no-message-ids"])
def test_a_whole_batch_delivered_again_applies_none_of_its_messages_twice(
    store: Store, with_ids: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash after the commit and before the acknowledgement: every message of the batch
    (a launch, an answer, an event, a control message) comes back, in a batch again. Each
    batch is handled as one (not again message by message after a failure)."""
    caplog.set_level(logging.INFO, logger="bureaucrat")
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(TWO_ACTIONS, {}, "answered"))
    service.handle(launch(TICKS, {}, "ticking"))
    service.handle(launch(TICKS, {}, "paused"))

    def named(message_id: str) -> str | None:
        return message_id if with_ids else None

    batch = [
        launch(TICKS, {}, "new") if with_ids else launch(TICKS, {"n": 5}, ""),
        answer(publisher.take("worker_p"), message_id=named("answer-1")),
        tick(named("tick-1")),
        control("pause", "paused", named("pause-1")),
    ]
    assert service.handle_batch(batch) == [ACK] * 4
    service.publish_committed()
    assert service.handle_batch([again(message) for message in batch]) == [ACK] * 4
    service.publish_committed()
    assert len(store.list_instances()) == 4
    assert kinds(store, "answered", "answered") == 1
    assert workitems(publisher) == 1  # the second action, dispatched once
    assert counter(store, "ticking") == counter(store, "paused") == 1  # the pause came after
    assert kinds(store, "paused", "paused") == 1
    assert not [r for r in caplog.records if "batch" in r.getMessage()]


# the operator's retry renews the attempts -------------------------------------------------------


def test_an_operators_retry_gives_a_failed_action_all_its_retries_again(store: Store) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    _failed_action(service, publisher, "r")
    service.handle(control("retry", "r", "retry-1"))
    for attempt in (1, 2, 3):  # retries="2": three attempts again, each answered error
        assert workitems(publisher) == 1, f"renewed attempt {attempt} was not dispatched"
        service.handle(answer(publisher.take("worker_p"), "error"))
    assert workitems(publisher) == 0
    assert kinds(store, "r", "dispatched") == 6
    assert kinds(store, "r", "failed") == 2
    assert store.instance("r").status == "running"  # type: ignore[union-attr]


def test_an_operators_retry_lets_a_failed_action_complete(store: Store) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    _failed_action(service, publisher, "r")
    service.handle(control("retry", "r", "retry-1"))
    service.handle(answer(publisher.take("worker_p"), "error"))
    assert workitems(publisher) == 1, "the second renewed attempt was not dispatched"
    service.handle(answer(publisher.take("worker_p"), "done"))
    assert store.instance("r").status == "completed"  # type: ignore[union-attr]


# timers -----------------------------------------------------------------------------------------


def _fire_late(service: Service, timer: TimerRecord) -> bool:
    """A daemon that claimed ``timer`` and fires it after its lease ran out; whether it was
    applied (what ``fire_due_timers`` counts)."""
    with service.store.transaction() as tx:
        tx.lock_instances([timer.instance_id])
        applied = service.advance(
            tx, timer.instance_id, ev.TimerFired(timer.id), None, timer=timer.id
        )
    service.publish_committed()
    return applied


def test_a_timer_fired_by_two_daemons_is_applied_once(store: Store) -> None:
    now = [1_000_000.0]
    slow = Service(store, CONFIG, Recorder(), clock=lambda: now[0])
    other = Service(store, CONFIG, Recorder(), clock=lambda: now[0])
    slow.handle(launch(SLEEPS, {}, "s"))
    now[0] += 2
    [claimed] = store.claim_due_timers(now[0], 10, lease=30)  # the slow daemon stalls here
    assert other.fire_due_timers() == 0  # leased
    now[0] += 31
    assert other.fire_due_timers() == 1  # the lease ran out: the other daemon fires it
    before = trail(store, "s")
    assert not _fire_late(slow, claimed)  # the slow daemon wakes up and fires it too
    assert trail(store, "s") == before
    assert counter(store, "s") == 1


def test_a_timer_fired_twice_by_one_daemon_is_applied_once(store: Store) -> None:
    now = [1_000_000.0]
    service = Service(store, CONFIG, Recorder(), clock=lambda: now[0])
    service.handle(launch(SLEEPS, {}, "s"))
    now[0] += 2
    [claimed] = store.claim_due_timers(now[0], 10, lease=30)
    assert _fire_late(service, claimed)
    before = trail(store, "s")
    assert not _fire_late(service, claimed)
    assert trail(store, "s") == before
    assert counter(store, "s") == 1
    assert kinds(store, "s", "timer") == 1


WAITS = '<process><await event="go"/></process>'


def _touching_a(service: Service, publisher: Recorder, kind: str) -> Message:
    """Start instance ``a`` and make a message of ``kind`` that changes it."""
    if kind == "subprocess":  # the launch of a's subprocess changes a, its caller
        service.handle(launch('<process><call process="$child"/></process>', {"child": WAITS}, "a"))
        return publisher.take(CONFIG.launch_queue)
    service.handle(launch(WAITS, {}, "a"))
    if kind == "event":
        return Message(CONFIG.event_queue, json.dumps({"event": "go", "process_id": "a"}).encode())
    return control("pause", "a", "pause-a")


def _blocked_by(admin: sa.Engine, pid: int) -> bool:
    with admin.connect() as connection:
        query = "SELECT count(*) FROM pg_stat_activity WHERE :me = ANY(pg_blocking_pids(pid))"
        return bool(connection.execute(sa.text(query), {"me": pid}).scalar())


@pytest.mark.parametrize("kind", ["control", "event", "subprocess"])
def test_a_batch_locks_its_instances_in_the_order_of_their_ids_so_daemons_cannot_deadlock(
    postgres_url: str, kind: str
) -> None:
    """Another daemon holds instance ``a`` and is about to take ``b``. A batch that changes
    ``b``, then ``a``, locks both at its start, in the order of their ids: it waits for ``a``
    without holding ``b``, instead of both waiting for each other (PostgreSQL would abort one
    of them, the batch coming back as lost work)."""
    publisher = Recorder()
    with Store(postgres_url) as store:
        service = Service(store, CONFIG, publisher)
        service.handle(launch(WAITS, {}, "b"))
        batch = [control("pause", "b", "pause-b"), _touching_a(service, publisher, kind)]
        admin = sa.create_engine(postgres_url)
        verdicts: list[Any] = []

        def handle() -> None:
            try:
                verdicts.extend(service.handle_batch(batch))
            except StoreError as error:  # "deadlock detected": the batch's work came back
                verdicts.append(error)

        with admin.connect() as other:  # the other daemon
            other.execute(sa.text("SET lock_timeout = '20s'"))
            me = other.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            lock = "SELECT id FROM instances WHERE id = :id FOR UPDATE"
            other.execute(sa.text(lock), {"id": "a"})
            worker = threading.Thread(target=handle)
            worker.start()
            wait_until(lambda: _blocked_by(admin, me), "the batch to wait for a")
            other.execute(sa.text(lock), {"id": "b"})  # a deadlock here, were b held
            other.commit()
            worker.join(timeout=30)
        admin.dispose()
        assert [getattr(v, "outcome", v) for v in verdicts] == [ACK.outcome, ACK.outcome]
        assert store.instance("b").status == "paused"  # type: ignore[union-attr]


# end to end -------------------------------------------------------------------------------------

STOPPABLE_TICKS = """<process>
  <context>
    <property name="n" type="int">0</property>
    <faults><case code="Stop"><assign property="stopped">True</assign></case></faults>
  </context>
  <all>
    <while>
      <condition>context["n"] &lt; 100</condition>
      <await event="tick"/>
      <assign property="n">context["n"] + 1</assign>
    </while>
    <sequence><await event="stop"/><fault code="Stop"/></sequence>
  </all>
</process>"""
"""Counts ticks until the event ``stop``, then completes: ``stop`` sent after the ticks on the
same queue is applied after them, so the count is final when the instance is."""


def _events_then_stop(install: Installation, pid: str, ticks: list[dict[str, Any]]) -> int:
    """Launch STOPPABLE_TICKS, publish a tick per entry of ``ticks`` (AMQP properties), then
    ``stop``; the final count."""
    with install.launcher() as launcher:
        launcher.launch(STOPPABLE_TICKS, {}, process_id=pid)
    install.wait_for(lambda: sorted(install.awaits(pid)) == ["stop", "tick"], what="awaits")
    queue = install.config.event_queue
    for props in ticks:
        install.publish_raw(queue, dumps({"event": "tick", "process_id": pid}), **props)
    install.publish_raw(queue, dumps({"event": "stop", "process_id": pid}), message_id="stop")
    record = install.wait_finished(pid)
    assert record.status == "completed", install.log_text()[-3000:]
    return int(root_value(install.store, pid, "n"))


def test_end_to_end_an_event_published_twice_with_its_id_is_taken_once(
    installation: Installation,
) -> None:
    installation.start_daemon()
    ticks = [{"message_id": "t1"}, {"message_id": "t1"}, {"message_id": "t2"}]
    assert _events_then_stop(installation, "e2e-events", ticks) == 2


def test_end_to_end_two_identical_events_without_id_are_two_events(
    installation: Installation,
) -> None:
    installation.start_daemon()
    assert _events_then_stop(installation, "e2e-plain", [{}, {}]) == 2


def test_end_to_end_a_launch_published_twice_with_its_id_starts_one_instance(
    installation: Installation,
) -> None:
    installation.start_daemon()
    body = dumps({"definition": TICKS, "fields": {}})
    queue = installation.config.launch_queue
    installation.publish_raw(queue, body, message_id="dup", content_type="application/json")
    installation.wait_for(lambda: installation.awaits("dup") == ["tick"], what="the launch")
    tick_body = dumps({"event": "tick", "process_id": "dup"})
    installation.publish_raw(installation.config.event_queue, tick_body, message_id="t1")
    installation.wait_for(lambda: kinds(installation.store, "dup", "event") == 1, what="tick")
    installation.publish_raw(queue, body, message_id="dup", content_type="application/json")
    installation.publish_raw(queue, body, message_id="marker", content_type="application/json")
    installation.wait_for(lambda: installation.status("marker") == "running", what="marker")
    assert kinds(installation.store, "dup", "launched") == 1
    assert counter(installation.store, "dup") == 1


@contextmanager
def worker_queue(install: Installation, participant: str) -> Iterator[Callable[[], bytes]]:
    """Declare ``participant``'s queue (before anything is sent to it), give a function that
    reads the next workitem from it as a worker would, and delete the queue afterwards."""
    queue = install.config.worker_queue(participant)
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        QueueArguments.from_config(install.config).declare(channel, queue)
        found: list[bytes] = []

        def got_one() -> bool:
            method, _props, body = channel.basic_get(queue, auto_ack=True)
            if method is not None:
                found.append(body)
            return bool(found)

        def take() -> bytes:
            found.clear()
            install.wait_for(got_one, what=f"a workitem for {participant}")
            return found[0]

        yield take
        channel.queue_delete(queue)
    finally:
        connection.close()


def test_end_to_end_an_answer_and_a_terminate_published_twice_are_applied_once(
    installation: Installation,
) -> None:
    installation.start_daemon()
    with worker_queue(installation, "p") as take, installation.launcher() as launcher:
        launcher.launch(TWO_ACTIONS, {}, process_id="twice")
        launcher.launch(TICKS, {}, process_id="marker")
        workitem = json.loads(take())
        queue = installation.config.message_queue
        for _ in range(2):
            installation.publish_raw(queue, dumps(workitem), message_id="answer-1")
        for _ in range(2):
            stop = {"name": "terminate", "process_id": "twice"}
            installation.publish_raw(queue, dumps(stop), message_id="stop-1")
        marker = {"name": "terminate", "process_id": "marker"}
        installation.publish_raw(queue, dumps(marker), message_id="stop-marker")
        installation.wait_for(lambda: installation.status("marker") == "terminated", what="marker")
        assert installation.status("twice") == "terminated"
        journal = trail(installation.store, "twice")
        assert [kind for kind, _ in journal].count("answered") == 1
        assert [kind for kind, _ in journal].count("terminating") == 1
        assert "ignored" not in [kind for kind, _ in journal]


def test_end_to_end_a_retry_published_twice_with_its_id_dispatches_once(
    installation: Installation,
) -> None:
    installation.start_daemon()
    with worker_queue(installation, "p") as take, installation.launcher() as launcher:
        launcher.launch('<process><action participant="p"/></process>', {}, process_id="r")
        launcher.launch(TICKS, {}, process_id="marker")
        workitem = json.loads(take())
        workitem["payload"]["status"] = "error"
        queue = installation.config.message_queue
        installation.publish_raw(queue, dumps(workitem), message_id="error-1")
        installation.wait_for(lambda: kinds(installation.store, "r", "failed") == 1, what="fail")
        for _ in range(2):
            retry = {"name": "retry", "process_id": "r"}
            installation.publish_raw(queue, dumps(retry), message_id="retry-1")
        marker = {"name": "terminate", "process_id": "marker"}
        installation.publish_raw(queue, dumps(marker), message_id="stop-marker")
        installation.wait_for(lambda: installation.status("marker") == "terminated", what="marker")
        retried = json.loads(take())
        assert retried["workitem_id"] != workitem["workitem_id"]
        journal = [kind for kind, _ in trail(installation.store, "r")]
        assert journal.count("dispatched") == 2
        assert "ignored" not in journal
        assert len(installation.store.pending_workitems("r")) == 1


# an operator's operations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("set", {"values": {"n": 5}}),
        ("rerun", {"activity": "o_0_0", "values": {"n": 5}}),
        ("restart", {}),
        ("pause", {}),
    ],
)
@pytest.mark.parametrize(("message_id", "redelivered"), [("op-1", False), (None, True)])
def test_an_operation_delivered_twice_is_applied_once(
    store: Store, name: str, extra: dict[str, Any], message_id: str | None, redelivered: bool
) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch(TICKS, {}, "o"))
    service.handle(tick("t-1"))
    operation = control(name, "o", message_id, **extra)
    service.handle(operation)
    before = trail(store, "o")
    assert before[-1][0] != "ignored"
    service.handle(again(operation, redelivered=redelivered))
    assert trail(store, "o") == before


def test_what_a_paused_instance_held_is_applied_once_though_delivered_twice(
    store: Store,
) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch(TICKS, {}, "h"))
    service.handle(control("pause", "h", "pause-1"))
    first = tick("t-1")
    service.handle(first)
    service.handle(again(first))
    service.handle(tick("t-2"))
    assert kinds(store, "h", "held") == 2
    service.handle(control("resume", "h", "resume-1"))
    assert counter(store, "h") == 2
    assert store.instance("h").status == "running"  # type: ignore[union-attr]
