"""Handling messages in batches: decode, drop duplicates, lock, step, commit, publish; then ack.

``Service.handle_batch`` is the life of a batch of incoming messages (DESIGN.md sections 1, 5):

1. decode each (bad input: a ``Verdict`` to dead-letter it, with the reason);
2. in one transaction, lock the instances the batch touches in the order of their ids (two
   daemons sharing PostgreSQL cannot deadlock), then apply each message in a savepoint of its
   own, in arrival order: drop it if its id was processed already, else run the engine's
   ``step`` and write the new state, timers, subscriptions, workitems, journal, outbox rows and
   the message's id. A message that fails rolls back its own savepoint only;
3. commit; ``publish_committed`` then publishes what the batch sends, with pipelined publisher
   confirms, and marks it sent;
4. only then does the caller acknowledge the batch.

A crash anywhere in between loses nothing: the transaction is all or nothing, outbox rows not
marked sent are published again by the relay (``relay_outbox``), and a redelivered message is
recognised by its id (or, without one, by the hash of its body). Every outgoing message carries
a stable id. ``handle`` is the same for one message.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, assert_never

from bureaucrat import messages as wire
from bureaucrat import scheduler
from bureaucrat.bounds import bad_text, check_id
from bureaucrat.config import Config
from bureaucrat.encoding import encode, too_long
from bureaucrat.engine import Limits
from bureaucrat.engine import events as ev
from bureaucrat.engine.state import LIVE, TERMINAL, Status, activity_id, root_context
from bureaucrat.engine.step import step
from bureaucrat.errors import (
    BrokerError,
    ConfigError,
    DefinitionError,
    StoreDataError,
    StoreError,
)
from bureaucrat.messages import MessageError, Outgoing
from bureaucrat.store import Store, Tx
from bureaucrat.store.codec import UndecodableError, loads_object
from bureaucrat.store.database import translated

LOG = logging.getLogger(__name__)

RELAY_AFTER = 5.0
"""Seconds after which the relay publishes an unsent outbox row: a row younger than that may
still be on its way out through the daemon that wrote it."""


class Outcome(enum.Enum):
    ACK = "ack"  # done with (handled, a duplicate, or nothing to do)
    DEAD = "dead"  # not acceptable: publish to the dead-letter queue, then ack


class Disposition(enum.StrEnum):
    """What became of a message, as the metrics count it."""

    HANDLED = "handled"
    DUPLICATE = "duplicate"  # processed already: dropped
    SET_ASIDE = "set_aside"  # a defect met on it set its instance aside (``broken``)
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str = ""
    disposition: Disposition = field(default=Disposition.HANDLED, compare=False)

    @classmethod
    def dead(cls, reason: str) -> Verdict:
        return cls(Outcome.DEAD, reason, Disposition.DEAD_LETTERED)


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
    def publish_many(self, messages: Sequence[Outgoing]) -> list[str | None]:
        """Publish with confirms; per message, why RabbitMQ refused it, or None when it took
        it. ``BrokerError`` when the connection is lost (nothing is known then)."""
        ...


class Meter(Protocol):
    """Where the service reports each step it takes (``bureaucrat.metrics.DaemonMetrics``)."""

    def step(self, event: str, seconds: float) -> None: ...


class _NoMeter:
    def step(self, event: str, seconds: float) -> None:
        pass


Decoded = wire.Launch | wire.Response | wire.Control | wire.Event


@dataclass(frozen=True)
class _Work:
    """A decoded message of a batch, waiting for the transaction."""

    index: int
    message: Incoming
    key: Key
    decoded: Decoded


class Service:
    """The engine's I/O shell around the pure core."""

    def __init__(
        self,
        store: Store,
        config: Config,
        publisher: Publisher | None = None,
        clock: Callable[[], float] = time.time,
        meter: Meter | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.limits = Limits(
            step_budget=config.step_budget,
            max_state_size=config.max_state_size,
            max_step_output=config.max_step_output,
            on_fault=config.on_fault,
        )
        self.publisher = publisher
        self.clock = clock
        self.meter: Meter = meter or _NoMeter()
        self.duplicates = 0
        """Messages dropped as processed already, and instances set aside, so far: what
        becomes of each message (``Verdict.disposition``) is told from these."""
        self.set_aside = 0
        self.committed: list[tuple[str | None, Outgoing]] = []
        """Messages written to the outbox by committed transactions and not yet published,
        with the instance that sent each."""
        self._staged: list[tuple[str | None, Outgoing]] = []
        self.published: list[str] = []
        """Ids of messages RabbitMQ confirmed whose outbox rows are not marked sent yet: the
        next transaction marks them (``mark_published`` when there is none)."""

    # incoming messages ------------------------------------------------------------------------

    def handle(self, message: Incoming) -> Verdict:
        """Handle one message and publish what it sends (a batch of one)."""
        [verdict] = self.handle_batch([message])
        self.publish_committed()
        return verdict

    def handle_batch(self, messages: Sequence[Incoming]) -> list[Verdict]:
        """Handle ``messages`` in one transaction, one savepoint each, in order; their verdicts.

        What they send is in ``committed`` afterwards: publish it (``publish_committed``) before
        acknowledging them. ``StoreError`` or ``BrokerError``: nothing of the batch was kept."""
        verdicts: list[Verdict] = [ACK] * len(messages)
        work: list[_Work] = []
        for index, message in enumerate(messages):
            refused, key = self._admit(message)
            if refused is None:
                try:
                    work.append(_Work(index, message, key, self._decode(message)))
                except MessageError as error:
                    refused = Verdict.dead(str(error))
            if refused is not None:
                verdicts[index] = refused
        if not work:
            return verdicts
        if len(work) > 1:
            try:  # the fast way: every table written once for the whole batch
                return self._transact(work, verdicts, mode=_Mode.DEFERRED)
            except _RefusedError:  # a message failed: again, a savepoint each
                LOG.info("a message of a batch failed: the batch is handled again, one by one")
            try:
                return self._transact(work, verdicts, mode=_Mode.SAVEPOINTS)
            except _RefusedError:  # not a message's own failure: each in a transaction of its own
                LOG.warning("a batch failed outside its messages: each is handled alone")
        for item in work:
            try:  # a batch of one needs no savepoint: the transaction is the message's own
                self._transact([item], verdicts, mode=_Mode.ALONE)
            except _RefusedError as refused:  # rolled back with its transaction
                verdicts[item.index] = refused.verdict
        return verdicts

    def _transact(self, work: list[_Work], verdicts: list[Verdict], mode: _Mode) -> list[Verdict]:
        """Apply ``work`` in one transaction; ``_RefusedError`` (rolled back) when a message
        fails and ``mode`` cannot confine it to a savepoint."""
        self._staged.clear()
        published, self.published = self.published, []
        try:
            with self.store.transaction() as tx:
                tx.deferred = mode is _Mode.DEFERRED
                tx.mark_sent_messages(published, self.clock())
                _lock(tx, work)
                for item in work:
                    verdicts[item.index] = self._apply_alone(tx, item, mode)
                if tx.deferred:
                    with translated("writing a batch"):
                        tx.flush()
        except StoreDataError as error:  # the batch's writes, at flush
            self._staged.clear()
            self.published = published + self.published
            verdict = Verdict.dead(f"the database refused this message: {error}")
            raise _RefusedError(verdict) from None
        except BaseException:
            self._staged.clear()
            self.published = published + self.published
            raise
        self.committed.extend(self._staged)
        self._staged.clear()
        return verdicts

    def _admit(self, message: Incoming) -> tuple[Verdict | None, Key]:
        """Checks before decoding: the message id, and how often the message came back."""
        key = _dedupe_key(message)
        message_id: object = message.message_id
        if message_id is not None:
            if not isinstance(message_id, str):  # pika leaves invalid UTF-8 as bytes
                return Verdict.dead("message_id is not UTF-8 text"), key
            problem = bad_text(message_id)
            if problem is not None:
                return Verdict.dead(f"message_id {problem}"), key
        if message.redelivered:  # counted in a transaction of its own: a crash keeps the count
            count = self.store.count_delivery(key.id, self.clock())
            if count > self.config.max_redeliveries:
                limit = self.config.max_redeliveries
                reason = f"redelivered {count} times without being handled"
                return Verdict.dead(f"{reason} (max_redeliveries = {limit})"), key
        return None, key

    def _decode(self, message: Incoming) -> Decoded:
        if message.queue == self.config.launch_queue:
            return wire.decode_launch(message.body, message.content_type)
        if message.queue == self.config.event_queue:
            return wire.decode_event(message.body)
        return wire.decode_message(message.body)

    def _apply_alone(self, tx: Tx, item: _Work, mode: _Mode) -> Verdict:
        """Apply one message in a savepoint: if it fails, only its own changes are undone.

        In the other modes a failure raises ``_RefusedError`` out of the transaction, which
        rolls it back."""
        staged = len(self._staged)
        savepoint = mode is _Mode.SAVEPOINTS
        try:
            before = (self.duplicates, self.set_aside)
            with tx.savepoint() if savepoint else translated("handling a message"):
                verdict = self._apply(tx, item)
            return self._disposed(verdict, before)
        except StoreDataError as error:  # the same data would be refused again
            verdict = Verdict.dead(f"the database refused this message: {error}")
        except (StoreError, BrokerError):
            raise  # lost the database or the broker: the whole batch comes back
        except ConfigError as error:  # e.g. a Celery task the configured routing cannot send
            verdict = Verdict.dead(f"configuration error: {error}")
        except Exception as error:  # a defect must not turn a message into a poison pill
            LOG.exception("internal error on a message from %s", item.message.queue)
            verdict = Verdict.dead(f"internal error: {type(error).__name__}: {error}")
        del self._staged[staged:]
        if not savepoint:
            raise _RefusedError(verdict)
        return verdict

    def _disposed(self, verdict: Verdict, before: tuple[int, int]) -> Verdict:
        """``verdict``, saying if the message set an instance aside or was a duplicate."""
        if self.set_aside > before[1]:
            return replace(verdict, disposition=Disposition.SET_ASIDE)
        if self.duplicates > before[0]:
            return replace(verdict, disposition=Disposition.DUPLICATE)
        return verdict

    def _apply(self, tx: Tx, item: _Work) -> Verdict:
        decoded = item.decoded
        match decoded:
            case wire.Launch():
                return self._launch(tx, decoded, item.message, item.key)
            case wire.Response():
                return self._response(tx, decoded, item.key)
            case wire.Control():
                return self._control(tx, decoded, item.key)
            case wire.Event():
                return self._event(tx, decoded, item.key)
            case _:
                assert_never(decoded)

    def _launch(self, tx: Tx, launch: wire.Launch, message: Incoming, key: Key) -> Verdict:
        process_id = launch.process_id or message.message_id or uuid.uuid4().hex
        problem = check_id(process_id, "the process id")
        if problem is not None:
            return Verdict.dead(problem)
        try:
            digest, definition = self.store.parse(launch.definition)  # parsed once, cached
        except DefinitionError as error:
            if launch.parent is None:
                return Verdict.dead(f"invalid definition: {error}")
            return self._child_not_started(tx, launch.parent, process_id, str(error), key)
        parent = None if launch.parent is None else ev.ParentLink(**launch.parent)
        start = ev.Start(process_id, launch.fields, parent)
        creation = _Creation(
            digest, definition.name, launch.parent, launch.definition, launch.fields
        )
        if self.advance(tx, process_id, start, key, create=creation):
            LOG.info("launched %s (%s)", process_id, definition.name or "unnamed")
        return ACK

    def _child_not_started(
        self, tx: Tx, parent: dict[str, str], child_id: str, problem: str, key: Key
    ) -> Verdict:
        """A ``call`` whose definition is invalid: the fault ``DefinitionError`` at the call."""
        LOG.warning("subprocess %s of %s not started: %s", child_id, parent["process_id"], problem)
        fault = {"code": "DefinitionError", "message": problem}
        finished = ev.ChildFinished(child_id, Status.FAULTED, {}, fault)
        if not self.advance(tx, parent["process_id"], finished, key):
            LOG.warning("the parent %s of %s is gone", parent["process_id"], child_id)
        return ACK

    def _response(self, tx: Tx, response: wire.Response, key: Key) -> Verdict:
        process_id = _route(tx, response)
        event = ev.ParticipantResponse(response.workitem)
        duplicates = self.duplicates
        applied = process_id is not None and self.advance(tx, process_id, event, key)
        if not applied and self.duplicates == duplicates:  # a duplicate is logged as such
            LOG.warning(
                "response for an unknown workitem (workitem %s, target %s): ignored",
                response.workitem_id,
                response.target,
            )
        return ACK

    def _control(self, tx: Tx, control: wire.Control, key: Key) -> Verdict:
        if control.name == "schedule":  # about a schedule, not a process
            problem = scheduler.control(tx, self, control, key, self.clock())
            return ACK if problem is None else Verdict.dead(problem)
        body = control.body
        process_id = control.process_id
        if control.target is not None:  # the original's terminate names an activity
            candidates = wire.target_process_ids(control.target)
            process_id = next((c for c in candidates if tx.instance(c) is not None), process_id)
        event = _operation(control.name, process_id, body)
        duplicates = self.duplicates
        if self.advance(tx, process_id, event, key):
            if control.name not in ("child_finished", "retry"):
                LOG.info("%s %s", control.name, process_id)
        elif self.duplicates == duplicates:  # a duplicate is logged as such
            if tx.instance(process_id) is None:
                LOG.warning("%s for unknown process %s: ignored", control.name, process_id)
            else:  # set aside, or a subprocess's end that the child's record does not bear out
                LOG.warning("%s for process %s: not applicable, ignored", control.name, process_id)
        return ACK

    def _event(self, tx: Tx, event: wire.Event, key: Key) -> Verdict:
        subscribers = tx.subscribers(event.name, event.process_id)
        if not subscribers:
            LOG.info("event %s: no process waits for it", event.name)
        tx.lock_instances(subscribers)
        for process_id in subscribers:
            received = ev.EventReceived(event.name, event.data)
            self.advance(tx, process_id, received, key.per(process_id))
        return ACK

    # timers -----------------------------------------------------------------------------------

    def fire_due_timers(self, limit: int = 100) -> int:
        """Fire the timers that are due, in one transaction (a savepoint each); the number
        fired. What they send is in ``committed``, as after ``handle_batch``."""
        due = self.store.claim_due_timers(self.clock(), limit)
        if not due:
            return 0
        fired = 0
        self._staged.clear()
        with self.store.transaction() as tx:
            tx.lock_instances([timer.instance_id for timer in due])
            for timer in due:
                staged = len(self._staged)
                try:
                    with tx.savepoint():
                        event = ev.TimerFired(timer.id)
                        if self.advance(tx, timer.instance_id, event, None, timer=timer.id):
                            fired += 1
                except StoreDataError as error:  # this instance's data: set it aside, go on
                    del self._staged[staged:]
                    LOG.error("timer %s of %s: %s", timer.id, timer.instance_id, error)
                    tx.mark_broken(timer.instance_id, f"timer {timer.id}: {error}", self.clock())
                    tx.delete_timer(timer.id)
        self.committed.extend(self._staged)
        self._staged.clear()
        return fired

    # schedules --------------------------------------------------------------------------------

    def fire_due_schedules(self, limit: int = 100) -> int:
        """Launch the due occurrences of up to ``limit`` due schedules (``bureaucrat.scheduler``)
        in one transaction that also writes their next due times; the number launched. What
        the new instances send is in ``committed``, as after ``handle_batch``."""
        now = self.clock()
        if not self.store.schedules_due(now):
            return 0
        self._staged.clear()
        try:
            with self.store.transaction() as tx:
                launched = scheduler.fire_due(tx, self, now, limit)
        except BaseException:
            self._staged.clear()
            raise
        self.committed.extend(self._staged)
        self._staged.clear()
        return launched

    def start_occurrence(
        self, tx: Tx, process_id: str, source: str, fields: dict[str, Any]
    ) -> bool:
        """Create the instance of a schedule's occurrence in ``tx``, as a launch would; False
        when it exists already."""
        digest, definition = self.store.parse(source)
        creation = _Creation(digest, definition.name, None, source, fields)
        return self.advance(tx, process_id, ev.Start(process_id, fields), None, create=creation)

    def terminate_occurrence(self, tx: Tx, process_id: str, reason: str) -> bool:
        """Terminate a schedule's previous occurrence in ``tx`` (overlap ``terminate-previous``)."""
        return self.advance(tx, process_id, ev.Terminate(reason), None)

    @contextmanager
    def savepoint(self, tx: Tx) -> Iterator[None]:
        """A savepoint of ``tx`` that also drops what its block staged for the outbox when it
        is undone (the messages of instances that were never created)."""
        staged = len(self._staged)
        try:
            with tx.savepoint():
                yield
        except BaseException:
            del self._staged[staged:]
            raise

    # one instance, one event ------------------------------------------------------------------

    def advance(
        self,
        tx: Tx,
        process_id: str,
        event: ev.Event | Callable[[Tx], ev.Event | None],
        key: Key | None,
        *,
        create: _Creation | None = None,
        timer: str | None = None,
    ) -> bool:
        """Apply ``event`` to one instance within ``tx``; what it sends is staged for the
        outbox. ``event`` may be a function that makes it from what is stored (None: nothing to
        apply). False when there was nothing to apply it to (unknown, broken, a duplicate)."""
        now = self.clock()
        first = key is None or tx.first_time(key.id, now)
        if not first and key is not None and key.trusted:
            LOG.info("message %s was processed already: dropped", key.id)
            self.duplicates += 1
            return False
        record = tx.lock_instance(process_id)
        if create is not None:
            if record is not None:
                LOG.info("process %s exists already: launch ignored", process_id)
                self.duplicates += 1
                return False
            if not _parent_waits(tx, create.parent, process_id, create.digest):
                LOG.info("subprocess %s not started: its caller does not wait for it", process_id)
                if key is not None and first:  # an impostor must not use up the real one's id
                    tx.forget_processed(key.id)
                return False
            state = None
        else:
            if record is None or record.state is None:
                if timer is not None:  # its instance is gone or set aside: it never fires
                    tx.delete_timer(timer)
                return False
            if timer is not None and tx.timer(timer) is None:
                return False  # fired by another daemon meanwhile
            state = record.state
        if callable(event):
            made = event(tx)
            if made is None:
                return False
            event = made
        digest = create.digest if create is not None else record.definition_hash  # type: ignore[union-attr]
        try:
            definition = self.store.definition(digest)
            started = time.perf_counter()
            result = step(definition, state, event, now, self.limits)
            self.meter.step(type(event).__name__, time.perf_counter() - started)
            outbox = encode(self.config, process_id, result.commands)
        except StoreDataError:
            raise
        except Exception as error:  # a defect: set this instance aside, not the daemon
            if create is None:
                _set_aside(tx, process_id, event, error, now, timer)
                self.set_aside += 1
                return True
            raise
        if create is not None:
            tx.insert_definition(create.digest, create.name, create.source, now)
            parent = create.parent or {}
            tx.create_instance(
                process_id,
                create.digest,
                create.name,
                parent.get("process_id"),
                parent.get("activity"),
                now,
                state=result.state,
                fields=create.fields,
            )
        unchanged = create is not None or result.state is state  # new, or an ignored event
        tx.apply(process_id, result, now, outbox, timer, write_state=not unchanged)
        self._staged.extend((process_id, message) for message in outbox)
        return True

    # outgoing messages ------------------------------------------------------------------------

    def publish_committed(self) -> int:
        """Publish what committed transactions sent, with pipelined confirms, and mark it sent;
        the number published. A message RabbitMQ refuses is kept in the outbox with the reason
        and its instance set aside. ``BrokerError``: the rows stay for the relay."""
        if not self.committed or self.publisher is None:
            return 0
        batch, self.committed = self.committed, []
        return self._publish([message for _, message in batch], [pid for pid, _ in batch])

    def relay_outbox(self, limit: int = 500, everything: bool = False) -> int:
        """Publish outbox rows left unsent (by a crash, or a lost connection), oldest first;
        the number sent. Rows written in the last ``RELAY_AFTER`` seconds are left to the
        daemon that wrote them, unless ``everything``.

        The rows are claimed in a transaction that stays open while they are published, so a
        daemon sharing the database skips them instead of publishing them a second time."""
        if self.publisher is None:
            return 0
        sent = 0
        before = None if everything else self.clock() - RELAY_AFTER
        while True:
            with self.store.transaction() as tx:
                tx.without_waiting_for_disk()  # lost marks only mean messages sent again
                rows = tx.claim_unsent(limit, before)
                if rows:
                    messages = [row.message for row in rows]
                    outcomes = self._outcomes(messages)
                    instances = [row.instance_id for row in rows]
                    sent += self._settle(tx, messages, instances, outcomes)
            if len(rows) < limit:
                return sent

    def _publish(self, messages: list[Outgoing], instances: list[str | None]) -> int:
        outcomes = self._outcomes(messages)
        sent = [m.message_id for m, problem in zip(messages, outcomes, strict=True) if not problem]
        self.published.extend(sent)  # marked by the next transaction, saving one of their own
        if len(sent) < len(messages):
            with self.store.transaction() as tx:
                self._settle(tx, messages, instances, outcomes)
        return len(sent)

    def mark_published(self) -> None:
        """Mark sent what was published since the last transaction (when there is no next one
        soon: a crash before it only means those messages are published again)."""
        if self.published:
            published, self.published = self.published, []
            with self.store.transaction() as tx:
                tx.without_waiting_for_disk()  # lost marks only mean messages sent again
                tx.mark_sent_messages(published, self.clock())

    def _outcomes(self, messages: list[Outgoing]) -> list[str | None]:
        """Publish what can be an AMQP message; why each could not, or None when it went."""
        assert self.publisher is not None
        outcomes: list[str | None] = [too_long(message) for message in messages]
        sendable = [i for i, problem in enumerate(outcomes) if problem is None]
        published = self.publisher.publish_many([messages[i] for i in sendable])
        for index, problem in zip(sendable, published, strict=True):
            outcomes[index] = problem
        return outcomes

    def _settle(
        self,
        tx: Tx,
        messages: list[Outgoing],
        instances: list[str | None],
        outcomes: list[str | None],
    ) -> int:
        now = self.clock()
        sent = [m.message_id for m, problem in zip(messages, outcomes, strict=True) if not problem]
        tx.mark_sent_messages(sent, now)
        for message, instance, problem in zip(messages, instances, outcomes, strict=True):
            if problem is not None:
                LOG.error("message %s not sent: %s", message.message_id, problem)
                tx.mark_unpublishable(message.message_id, instance, problem, now)
        return len(sent)


class _Mode(enum.Enum):
    """How a batch's transaction confines a message that fails."""

    DEFERRED = "deferred"  # writes kept for the end of the batch; a failure undoes the batch
    SAVEPOINTS = "savepoints"  # a savepoint each: a failure undoes that message only
    ALONE = "alone"  # a batch of one: its transaction is its own


class _RefusedError(Exception):
    """A message failed where no savepoint confines it: the transaction must be rolled back."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


@dataclass(frozen=True)
class _Creation:
    """What a launch creates: the definition (its digest, name and source) and the caller."""

    digest: str
    name: str | None
    parent: dict[str, str] | None
    source: str
    fields: dict[str, Any] | None = None


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
    if isinstance(message.message_id, str) and message.message_id:
        return Key(f"{message.queue}:{message.message_id}", True)
    digest = hashlib.sha256(message.body).hexdigest()
    return Key(f"{message.queue}:sha256:{digest}", message.redelivered)


def _lock(tx: Tx, work: list[_Work]) -> None:
    """Lock the instances a batch will change, as far as they are known before it runs (the
    callers of launched subprocesses, the controlled, those holding the answered workitems),
    all at once and in the order of their ids."""
    found: set[str] = set()
    workitem_ids: set[str] = set()
    for item in work:
        decoded = item.decoded
        match decoded:
            case wire.Launch():
                if decoded.parent is not None:
                    found.add(decoded.parent["process_id"])
            case wire.Control():
                found.add(decoded.process_id)
                if decoded.target is not None:
                    found.update(wire.target_process_ids(decoded.target))
            case wire.Response():
                if decoded.workitem_id is not None:
                    workitem_ids.add(decoded.workitem_id)
            case wire.Event():
                if decoded.process_id is not None:
                    found.add(decoded.process_id)
    tx.lock_instances(found, workitem_ids)
    if tx.deferred:
        tx.preload_processed([item.key.id for item in work])


def _route(tx: Tx, response: wire.Response) -> str | None:
    """The instance of the workitem an answer names; by its target (the original's answers name
    no workitem), the one instance that waits on that very activity."""
    if response.workitem_id is not None:
        return tx.instance_of_workitem(response.workitem_id)
    target = response.target or ""
    waiting = [c for c in wire.target_process_ids(target) if tx.waits_at(c, target)]
    if len(waiting) > 1:  # P_0's activity 0 and P's activity 0_0 are both P_0_0
        LOG.warning("answer for %s: %s all wait there", target, ", ".join(waiting))
    return waiting[0] if len(waiting) == 1 else None


def _set_aside(
    tx: Tx, process_id: str, event: Any, error: Exception, now: float, timer: str | None
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

    A caller paused or suspended meanwhile still waits: its child starts, and what it sends
    back is held until the caller resumes. The caller's row stays locked until the child
    exists, so a terminate of the caller that comes meanwhile is applied after it and reaches
    the child."""
    if parent is None:
        return True
    record = tx.lock_instance(parent["process_id"])
    if record is None or record.state is None or record.status not in LIVE:
        return False
    path = record.state.get("children", {}).get(child_id)
    if not isinstance(path, str) or activity_id(record.id, path) != parent["activity"]:
        return False
    node = record.state.get("nodes", {}).get(path, {})
    return bool(node.get("definition", definition_hash) == definition_hash)


def _operation(
    name: str, process_id: str, body: dict[str, Any]
) -> ev.Event | Callable[[Tx], ev.Event | None]:
    """The event a control message asks for (checked by ``messages.decode_message``)."""
    values = body.get("values") or {}
    match name:
        case "terminate":
            return ev.Terminate(str(body.get("reason") or ""))
        case "retry":
            activity = body.get("activity")
            return ev.Retry(activity if isinstance(activity, str) else None)
        case "pause":
            return ev.Pause(str(body.get("reason") or ""))
        case "resume":
            return ev.Resume()
        case "set":
            return ev.SetContext(values)
        case "rerun":
            return ev.Rerun(str(body["activity"]), values)
        case "restart":
            return _restart(process_id)
        case _:
            return _child_result(process_id, str(body["child_id"]))


def _restart(process_id: str) -> Callable[[Tx], ev.Event | None]:
    """``Restart`` with the fields the instance was launched with, as stored."""

    def from_record(tx: Tx) -> ev.Event | None:
        record = tx.instance(process_id)
        if record is None:
            return None
        try:
            fields = loads_object(record.fields) if record.fields else {}
        except UndecodableError:
            LOG.error("restart %s: its launch's fields cannot be read: none given", process_id)
            fields = {}
        return ev.Restart(fields)

    return from_record


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
