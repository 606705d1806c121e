"""Handling one message: decode, drop duplicates, lock, step, commit, publish; then the ack.

``Service.handle`` is the whole life of an incoming message (DESIGN.md section 1):

1. decode it (bad input: a ``Verdict`` to dead-letter it, with the reason);
2. drop it if its id was processed already;
3. lock and load the instance, run the engine's ``step``;
4. in one transaction: the new state, timers, subscriptions, workitems, journal, the outbox
   (every message the step sends) and the message's id as processed;
5. publish the outbox with publisher confirms and mark it sent;
6. only then does the caller ack the message.

A crash anywhere in between loses nothing: the transaction is all or nothing, unsent outbox
rows are published at the next start, and a redelivered message is recognised by its id (or,
without one, by the hash of its body). Every outgoing message carries a stable id.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bureaucrat import messages as wire
from bureaucrat.bounds import SHORT_STRING, bad_text, check_id, utf8_length
from bureaucrat.config import Config
from bureaucrat.engine import commands as cmd
from bureaucrat.engine import events as ev
from bureaucrat.engine.state import TERMINAL, activity_id, root_context
from bureaucrat.engine.step import step
from bureaucrat.errors import (
    BrokerError,
    BureaucratError,
    DefinitionError,
    PublishError,
    StoreDataError,
    StoreError,
)
from bureaucrat.messages import MessageError
from bureaucrat.store import Outgoing, Store, Tx

LOG = logging.getLogger(__name__)


class Outcome(enum.Enum):
    ACK = "ack"  # done with (handled, a duplicate, or nothing to do)
    DEAD = "dead"  # not acceptable: publish to the dead-letter queue, then ack
    RETRY = "retry"  # could not be handled now (database or broker trouble): requeue


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str = ""

    @classmethod
    def dead(cls, reason: str) -> Verdict:
        return cls(Outcome.DEAD, reason)


ACK = Verdict(Outcome.ACK)


class Incoming(Protocol):
    """What the service needs of a delivered message (``bureaucrat.amqp.Delivery`` has it)."""

    @property
    def queue(self) -> str: ...
    @property
    def body(self) -> bytes: ...
    @property
    def redelivered(self) -> bool: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def message_id(self) -> str | None: ...


class Publisher(Protocol):
    def publish(self, message: Outgoing) -> None: ...


class Service:
    """The engine's I/O shell around the pure core, one message at a time."""

    def __init__(
        self,
        store: Store,
        config: Config,
        publisher: Publisher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.publisher = publisher
        self.clock = clock
        self.autoflush = True
        """Publish each step's outbox at once; a caller that batches (the daemon) turns this off
        and calls ``flush_outbox`` before it acknowledges what it handled."""

    # incoming messages ------------------------------------------------------------------------

    def handle(self, message: Incoming) -> Verdict:
        if message.message_id is not None:
            if not isinstance(message.message_id, str):  # pika leaves invalid UTF-8 as bytes
                return Verdict.dead("message_id is not UTF-8 text")
            problem = bad_text(message.message_id)
            if problem is not None:
                return Verdict.dead(f"message_id {problem}")
        key = _dedupe_key(message)
        if message.redelivered:
            count = self.store.count_delivery(key.id, self.clock())
            if count > self.config.max_redeliveries:
                return Verdict.dead(
                    f"redelivered {count} times without being handled "
                    f"(max_redeliveries = {self.config.max_redeliveries})"
                )
        try:
            return self._handle(message, key)
        except StoreDataError as error:  # the same data would be refused again
            return Verdict.dead(f"the database refused this message: {error}")

    def _handle(self, message: Incoming, key: Key) -> Verdict:
        try:
            if message.queue == self.config.launch_queue:
                return self._launch(
                    wire.decode_launch(message.body, message.content_type), message, key
                )
            if message.queue == self.config.event_queue:
                return self._event(wire.decode_event(message.body), key)
            decoded = wire.decode_message(message.body)
        except MessageError as error:
            return Verdict.dead(str(error))
        if isinstance(decoded, wire.Control):
            return self._control(decoded, key)
        return self._response(decoded, key)

    def _launch(self, launch: wire.Launch, message: Incoming, key: Key) -> Verdict:
        process_id = launch.process_id or message.message_id or uuid.uuid4().hex
        problem = check_id(process_id, "the process id")
        if problem is not None:
            return Verdict.dead(problem)
        try:
            definition_hash = self.store.add_definition(launch.definition)  # parsed once, cached
        except DefinitionError as error:
            if launch.parent is None:
                return Verdict.dead(f"invalid definition: {error}")
            return self._child_not_started(launch.parent, process_id, str(error), key)
        definition = self.store.definition(definition_hash)
        parent = None if launch.parent is None else ev.ParentLink(**launch.parent)
        start = ev.Start(process_id, launch.fields, parent)
        created = self.advance(
            process_id,
            start,
            key,
            create=(definition_hash, definition.name, launch.parent),
        )
        if created:
            LOG.info("launched %s (%s)", process_id, definition.name or "unnamed")
        return ACK

    def _child_not_started(
        self, parent: dict[str, str], child_id: str, problem: str, key: Key
    ) -> Verdict:
        """A ``call`` whose definition is invalid: the fault ``DefinitionError`` at the call."""
        LOG.warning("subprocess %s of %s not started: %s", child_id, parent["process_id"], problem)
        fault = {"code": "DefinitionError", "message": problem}
        finished = ev.ChildFinished(child_id, "faulted", {}, fault)
        if not self.advance(parent["process_id"], finished, key):
            LOG.warning("the parent %s of %s is gone", parent["process_id"], child_id)
        return ACK

    def _response(self, response: wire.Response, key: Key) -> Verdict:
        def route(tx: Tx) -> str | None:
            """The instance of the workitem the answer names; by its target (the original's
            answers name no workitem), the one instance that waits on that very activity."""
            if response.workitem_id is not None:
                workitem = tx.workitem(response.workitem_id)
                return None if workitem is None else workitem.instance_id
            target = response.target or ""
            waiting = [c for c in _process_id_candidates(target) if tx.waits_at(c, target)]
            if len(waiting) > 1:  # P_0's activity 0 and P's activity 0_0 are both P_0_0
                LOG.warning("answer for %s: %s all wait there", target, ", ".join(waiting))
            return waiting[0] if len(waiting) == 1 else None

        if not self.advance(route, ev.ParticipantResponse(response.workitem), key):
            LOG.warning(
                "response for an unknown workitem (workitem %s, target %s): ignored",
                response.workitem_id,
                response.target,
            )
        return ACK

    def _control(self, control: wire.Control, key: Key) -> Verdict:
        body = control.body
        event: ev.Event | Callable[[Tx], ev.Event | None]
        if control.name == "terminate":
            event = ev.Terminate(str(body.get("reason") or ""))
        elif control.name == "retry":
            activity = body.get("activity")
            event = ev.Retry(activity if isinstance(activity, str) else None)
        else:
            event = _child_result(control.process_id, str(body["child_id"]))
        if not self.advance(control.process_id, event, key):
            LOG.warning("%s for unknown process %s: ignored", control.name, control.process_id)
        return ACK

    def _event(self, event: wire.Event, key: Key) -> Verdict:
        with self.store.transaction() as tx:
            subscribers = tx.subscribers(event.name, event.process_id)
        if not subscribers:
            LOG.info("event %s: no process waits for it", event.name)
        for process_id in subscribers:
            self.advance(process_id, ev.EventReceived(event.name, event.data), key.per(process_id))
        return ACK

    # timers -----------------------------------------------------------------------------------

    def fire_due_timers(self, limit: int = 100) -> int:
        """Fire the timers that are due; the number fired."""
        fired = 0
        for timer in self.store.claim_due_timers(self.clock(), limit):
            try:
                if self.advance(timer.instance_id, ev.TimerFired(timer.id), None, timer=timer.id):
                    fired += 1
            except StoreDataError as error:  # this instance's data: set it aside, go on
                LOG.error("timer %s of %s: %s", timer.id, timer.instance_id, error)
                with self.store.transaction() as tx:
                    tx.mark_broken(timer.instance_id, f"timer {timer.id}: {error}", self.clock())
                    tx.delete_timer(timer.id)
        return fired

    # the transaction --------------------------------------------------------------------------

    def advance(
        self,
        process: str | Callable[[Tx], str | None],
        event: ev.Event | Callable[[Tx], ev.Event | None],
        key: Key | None,
        *,
        create: tuple[str, str | None, dict[str, str] | None] | None = None,
        timer: str | None = None,
    ) -> bool:
        """Apply ``event`` to one instance in one transaction, then publish what it sends.

        ``process`` is the instance's id, or a function that finds it within the transaction;
        ``event`` the event, or a function that makes it from what is stored (None: nothing
        to apply). False when there was nothing to apply it to (unknown, broken, a
        duplicate)."""
        now = self.clock()
        with self.store.transaction() as tx:
            process_id = process if isinstance(process, str) else process(tx)
            if process_id is None:
                return False
            seen = key is not None and tx.processed(key.id)
            if seen and key is not None and key.trusted:
                LOG.info("message %s was processed already: dropped", key.id)
                return False
            record = tx.lock_instance(process_id)
            if create is not None and record is not None:
                LOG.info("process %s exists already: launch ignored", process_id)
                return False
            if create is not None and not _parent_waits(tx, create[2], process_id, create[0]):
                LOG.info("subprocess %s not started: its caller no longer waits for it", process_id)
                return False
            if create is None and (record is None or record.state is None):
                if timer is not None:  # its instance is gone or set aside: it never fires
                    tx.delete_timer(timer)
                return False
            if timer is not None and tx.timer(timer) is None:
                return False  # fired by another daemon meanwhile
            if callable(event):
                made = event(tx)
                if made is None:
                    return False
                event = made
            if create is not None:
                definition_hash, name, parent = create
                tx.create_instance(
                    process_id,
                    definition_hash,
                    name,
                    None if parent is None else parent["process_id"],
                    None if parent is None else parent["activity"],
                    now,
                )
                state = None
            else:
                assert record is not None
                definition_hash, state = record.definition_hash, record.state
            try:
                definition = self.store.definition(definition_hash)
                result = step(definition, state, event, now)
                outbox = self.encode(process_id, result.commands)
            except StoreError:
                raise
            except Exception as error:  # a defect: set this instance aside, not the daemon
                _set_aside(tx, process_id, event, error, now, timer)
            else:
                tx.apply(process_id, result, now, outbox, timer)
            if key is not None and not seen:
                tx.mark_processed(key.id)
        if self.autoflush:
            self.flush_outbox()
        return True

    # outgoing messages ------------------------------------------------------------------------

    def encode(self, process_id: str, commands: Sequence[cmd.Command]) -> list[Outgoing]:
        """The messages a step sends, each with a stable id."""
        out: list[Outgoing] = []
        for command in commands:
            message = self._encode(process_id, command)
            if message is not None:
                out.append(message)
        return out

    def _encode(self, process_id: str, command: cmd.Command) -> Outgoing | None:
        config = self.config
        if isinstance(command, cmd.DispatchWorkitem):
            return self.workitem(command)
        if isinstance(command, cmd.LaunchChild):
            body: dict[str, Any] = {
                "definition": command.definition,
                "fields": command.fields,
                "parent": {"process_id": process_id, "activity": command.activity},
            }
            return _message(command.process_id, "", config.launch_queue, body, wire.JSON_TYPE)
        if isinstance(command, cmd.NotifyParent):
            body = {
                "name": "child_finished",
                "process_id": command.parent_id,
                "activity": command.activity,
                "child_id": command.child_id,
                "status": command.status,
                "context": command.context,
                "fault": command.fault,
            }
            return _message(f"{command.child_id}:finished", "", config.message_queue, body)
        if isinstance(command, cmd.TerminateChild):
            body = {"name": "terminate", "process_id": command.process_id, "reason": "parent ended"}
            return _message(f"{command.process_id}:terminate", "", config.message_queue, body)
        if isinstance(command, cmd.ProcessFinished):
            body = {
                "process_id": process_id,
                "status": command.status,
                "context": command.context,
                "fault": command.fault,
            }
            exchange = config.notifications_exchange
            return _message(
                f"{process_id}:{command.status}",
                exchange,
                f"process.{command.status}",
                body,
                wire.JSON_TYPE,
            )
        return None

    def workitem(self, command: cmd.DispatchWorkitem) -> Outgoing:
        kind = command.kind or self.config.taskqueue_type
        if kind == "celery":
            from bureaucrat.participants.celery import celery_message

            return celery_message(command, self.config)
        queue = command.queue or self.config.worker_queue(command.participant)
        return _message(command.workitem_id, "", queue, command.message)

    def flush_outbox(self, limit: int = 500) -> int:
        """Publish unsent outbox rows (with confirms) and mark them sent; the number sent.

        The rows are claimed in a transaction that stays open while they are published, so a
        daemon sharing the database skips them instead of publishing them a second time."""
        if self.publisher is None:
            return 0
        sent = 0
        while True:
            failure: BureaucratError | None = None
            with self.store.transaction() as tx:
                tx.without_waiting_for_disk()  # lost marks only mean messages sent again
                rows = tx.claim_unsent(limit)
                done: list[int] = []
                for row in rows:
                    try:
                        problem = self._publish(row.message)
                    except BrokerError as error:  # lost RabbitMQ: keep what went out, report
                        failure = error
                        break
                    if problem is None:
                        done.append(row.id)
                    else:
                        LOG.error("message %s not sent: %s", row.message.message_id, problem)
                        tx.mark_unpublishable(row, problem, self.clock())
                tx.mark_sent(done, self.clock())
            sent += len(done)
            if failure is not None:
                raise failure
            if len(rows) < limit:
                return sent

    def _publish(self, message: Outgoing) -> str | None:
        """Publish one message; why RabbitMQ refused it, or None when it took it.

        ``BrokerError`` (but for a refusal) means the connection is lost: worth a retry."""
        assert self.publisher is not None
        problem = _too_long(message)
        if problem is not None:
            return problem
        try:
            self.publisher.publish(message)
        except PublishError as error:
            return str(error)
        except BrokerError:
            raise
        except Exception as error:  # pika refusing the message itself (an encoding limit)
            return f"{type(error).__name__}: {error}"
        return None


def _too_long(message: Outgoing) -> str | None:
    """Why ``message`` cannot be an AMQP message (a short string over 255 bytes), or None."""
    texts = {
        "message id": message.message_id,
        "exchange": message.exchange,
        "routing key": message.routing_key,
    }
    for name, value in message.properties.items():
        if isinstance(value, str):
            texts[name] = value
    for what, text in texts.items():
        if utf8_length(text) > SHORT_STRING:
            return f"its {what} is longer than {SHORT_STRING} bytes"
    return None


def _message(
    message_id: str,
    exchange: str,
    routing_key: str,
    body: dict[str, Any],
    content_type: str = wire.WORKITEM_TYPE,
) -> Outgoing:
    return Outgoing(
        message_id=message_id,
        exchange=exchange,
        routing_key=routing_key,
        body=wire.dumps(body),
        properties={
            "content_type": content_type,
            "delivery_mode": 2,
            "message_id": message_id,
            "correlation_id": message_id,
        },
    )


@dataclass(frozen=True)
class Key:
    """The id a message is known by: its ``message_id``, else the hash of its body.

    A body hash is only trusted to mean "seen before" when the broker says the message is a
    redelivery: two identical events sent on purpose are two events."""

    id: str
    trusted: bool

    def per(self, process_id: str) -> Key:
        return Key(f"{self.id}:{process_id}", self.trusted)


def _dedupe_key(message: Incoming) -> Key:
    if message.message_id:
        return Key(f"{message.queue}:{message.message_id}", True)
    digest = hashlib.sha256(message.body).hexdigest()
    return Key(f"{message.queue}:sha256:{digest}", message.redelivered)


def _set_aside(
    tx: Tx, process_id: str, event: ev.Event, error: Exception, now: float, timer: str | None
) -> None:
    """Mark the instance ``broken`` for an operator, with the reason, after a defect (an
    exception where none is expected) while stepping it; the message is not tried again, so it
    cannot stop the daemon or come back at every start."""
    LOG.exception("internal error on %s for process %s", type(event).__name__, process_id)
    reason = f"internal error on {type(event).__name__}: {type(error).__name__}: {error}"
    tx.mark_broken(process_id, reason, now)
    if timer is not None:
        tx.delete_timer(timer)


def _parent_waits(
    tx: Tx, parent: dict[str, str] | None, child_id: str, definition_hash: str
) -> bool:
    """Whether the caller of subprocess ``child_id`` (if it has one) waits for it, at the
    activity the launch names and with this very definition: a launch that merely claims a
    parent cannot start a definition of its own choosing as that parent's subprocess.

    The caller's row stays locked until the child exists, so a terminate of the caller that
    comes meanwhile is applied after it and reaches the child."""
    if parent is None:
        return True
    record = tx.lock_instance(parent["process_id"])
    if record is None or record.state is None or record.status != "running":
        return False
    path = record.state.get("children", {}).get(child_id)
    if not isinstance(path, str) or activity_id(record.id, path) != parent["activity"]:
        return False
    node = record.state.get("nodes", {}).get(path, {})
    return bool(node.get("definition", definition_hash) == definition_hash)


def _child_result(parent_id: str, child_id: str) -> Callable[[Tx], ev.Event | None]:
    """The ``ChildFinished`` event for ``child_id``, made from the child's own stored record,
    not from the message that announces it: None unless that child of ``parent_id`` ended."""

    def from_record(tx: Tx) -> ev.Event | None:
        child = tx.instance(child_id)
        if child is None or child.state is None or child.parent_id != parent_id:
            return None
        if child.status not in TERMINAL:
            return None
        fault = child.state.get("fault")
        public = None
        if isinstance(fault, dict):
            public = {"code": str(fault.get("code")), "message": str(fault.get("message"))}
        return ev.ChildFinished(child_id, child.status, root_context(child.state), public)

    return from_record


def _process_id_candidates(target: str) -> list[str]:
    """The process ids an activity id could belong to, longest first.

    ``<pid>_0_2``: the process id is the target minus a tail of ``_<n>`` or ``_f<n>`` segments;
    process ids may hold ``_`` themselves, so each split is tried, longest first."""
    candidates = [target]
    rest = target
    while "_" in rest:
        rest, segment = rest.rsplit("_", 1)
        if not (segment.isdigit() or (segment[:1] == "f" and segment[1:].isdigit())):
            break
        candidates.append(rest)
    return candidates
