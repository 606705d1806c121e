"""One database transaction of the service: ``with store.transaction() as tx: ...``.

Everything a message changes goes through one ``Tx``: the processed message id, the instance row
(locked with ``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serialises write transactions with
``BEGIN IMMEDIATE``), and the rows one engine ``Step`` adds or removes. ``apply`` costs a fixed
handful of statements, whatever the step holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from bureaucrat.engine.state import Status
from bureaucrat.engine.step import Step
from bureaucrat.errors import StoreError
from bureaucrat.store import statements as sql
from bureaucrat.store.changes import Changes, Pending, Row, changes_of
from bureaucrat.store.codec import UndecodableError, dumps, loads_object
from bureaucrat.store.database import translated
from bureaucrat.store.records import (
    InstanceRecord,
    OutboxRecord,
    Outgoing,
    TimerRecord,
    WorkitemRecord,
    outbox_record,
)
from bureaucrat.store.tables import (
    instances,
    outbox,
    processed_messages,
    subscriptions,
    timers,
    workitems,
)

LOG = logging.getLogger(__name__)

BROKEN = Status.BROKEN
RUNNING = Status.RUNNING


class Tx:
    """The operations of one transaction, on ``connection`` (use ``Store.transaction``)."""

    def __init__(self, connection: sa.Connection, clock: Callable[[], float] = time.time) -> None:
        self.connection = connection
        self.clock = clock
        """The store's clock, for what a transaction notices on its own (an undecodable state)."""
        self._sql = sql.for_dialect(connection.dialect.name)
        self._versions: dict[str, int] = {}
        self._locked: dict[str, Any] = {}
        """Rows locked by ``lock_instances`` and not read since (``lock_instance`` takes them)."""
        self.workitem_instances: dict[str, str] = {}
        """Workitem id -> instance id, for the workitems ``lock_instances`` was given."""
        self.deferred = False
        """Whether ``apply`` keeps what it writes for ``flush`` (a batch then writes each table
        once); reads that could see those rows flush first."""
        self._pending = Pending()
        self._states: dict[str, tuple[dict[str, Any], float]] = {}  # instance -> newest state
        self._current: dict[str, InstanceRecord] = {}  # instance -> as its last step left it
        self._seen: set[str] = set()  # message ids known processed (database or this batch)
        self._new_ids: dict[str, float] = {}  # message ids processed in this batch, unwritten
        self._preloaded: set[str] = set()  # message ids whose state ``_seen`` knows

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part of the transaction that is undone alone if its block raises (the exception
        goes on, translated like the transaction's: ``StoreError``, ``StoreDataError``)."""
        versions, locked = dict(self._versions), dict(self._locked)
        try:
            with translated("handling a message"), self.connection.begin_nested():
                yield
        except BaseException:
            self._versions, self._locked = versions, locked
            raise

    # processed messages -----------------------------------------------------------------------

    def preload_processed(self, message_ids: Collection[str]) -> None:
        """Learn which of ``message_ids`` were processed already, in one statement, so that
        ``first_time`` answers from memory for them (deferred mode)."""
        if message_ids:
            rows = self.connection.execute(sql.processed_among, {"mids": sorted(message_ids)})
            self._seen.update(rows.scalars())
            self._preloaded.update(message_ids)

    def first_time(self, message_id: str, now: float) -> bool:
        """Remember ``message_id`` as handled; whether it was new (one statement for both)."""
        if self.deferred and message_id in self._preloaded:
            if message_id in self._seen:
                return False
            self._seen.add(message_id)
            self._new_ids[message_id] = now
            return True
        self.flush()
        inserted = self.connection.execute(
            self._sql.insert_processed_returning, {"message_id": message_id, "processed_at": now}
        ).first()
        return inserted is not None

    def forget_processed(self, message_id: str) -> None:
        self.flush()
        statement = sa.delete(processed_messages)
        self.connection.execute(statement.where(processed_messages.c.message_id == message_id))

    def processed(self, message_id: str) -> bool:
        """Whether the message ``message_id`` was handled already."""
        query = sa.select(sa.literal(1)).where(processed_messages.c.message_id == message_id)
        return self.connection.execute(query).first() is not None

    def mark_processed(self, message_id: str, now: float) -> None:
        """Remember ``message_id`` as handled (again is harmless)."""
        self.connection.execute(
            self._sql.insert_processed, {"message_id": message_id, "processed_at": now}
        )

    # instances --------------------------------------------------------------------------------

    def lock_instances(
        self, instance_ids: Collection[str], workitem_ids: Collection[str] = ()
    ) -> None:
        """Lock the rows of ``instance_ids`` and of the instances holding ``workitem_ids`` at
        once, in the order of their ids, so that two daemons handling batches that touch the
        same instances cannot deadlock; the rows are kept for ``lock_instance``, the workitems'
        instances in ``workitem_instances`` (one statement for both)."""
        wanted = set(instance_ids) - set(self._locked)
        if workitem_ids and not wanted:  # the usual batch of answers: one statement
            found = self.connection.execute(
                sql.lock_workitem_instances, {"wids": sorted(workitem_ids)}
            )
            for row in found:
                self.workitem_instances[row.wid] = row.id
                self._locked.setdefault(row.id, row)
            return
        if workitem_ids:
            rows = self.connection.execute(sql.workitem_instances, {"wids": sorted(workitem_ids)})
            for row in rows:
                self.workitem_instances[row.id] = row.instance_id
            wanted |= set(self.workitem_instances.values()) - set(self._locked)
        if wanted:
            for row in self.connection.execute(sql.lock_instances, {"iids": sorted(wanted)}):
                self._locked[row.id] = row

    def lock_instance(self, instance_id: str) -> InstanceRecord | None:
        """The instance, its row locked until the transaction ends; None if there is none.

        A state that cannot be decoded marks the instance ``broken`` (logged with its id) and
        comes back as ``state=None``; so does an instance already marked broken."""
        current = self._current.get(instance_id)
        if current is not None:
            return current
        row = self._locked.pop(instance_id, None)
        if row is None:
            query = sa.select(instances).where(instances.c.id == instance_id).with_for_update()
            row = self.connection.execute(query).first()
        if row is None:
            return None
        self._versions[instance_id] = row.version
        if row.status == BROKEN:
            return instance_record(row, None)
        try:
            state = loads_object(row.state)
        except UndecodableError as error:
            reason = f"the stored state cannot be decoded: {error}"
            LOG.error("instance %s is broken: %s", instance_id, reason)
            now = self.clock()
            self.mark_broken(instance_id, reason, now)
            return instance_record(row, None, status=BROKEN, error=reason, updated_at=now)
        record = instance_record(row, state)
        if self.deferred:  # its next steps in this batch start from what the last one left
            self._current[instance_id] = record
        return record

    def waits_at(self, instance_id: str, activity: str) -> bool:
        """Whether the instance has a pending workitem dispatched by ``activity`` (a wire id)."""
        self.flush()
        query = sa.select(sa.literal(1)).where(
            workitems.c.instance_id == instance_id,
            workitems.c.activity == activity,
            workitems.c.status == "pending",
        )
        return self.connection.execute(query).first() is not None

    def instance(self, instance_id: str) -> InstanceRecord | None:
        """The instance as it is, without a lock; ``state`` None if broken or undecodable."""
        self.flush()
        row = self.connection.execute(sa.select(instances).where(instances.c.id == instance_id))
        found = row.first()
        if found is None:
            return None
        if found.status == BROKEN:
            return instance_record(found, None)
        try:
            return instance_record(found, loads_object(found.state))
        except UndecodableError:
            return instance_record(found, None)

    def instance_exists(self, instance_id: str) -> bool:
        self.flush()
        query = sa.select(sa.literal(1)).where(instances.c.id == instance_id)
        return self.connection.execute(query).first() is not None

    def create_instance(
        self,
        instance_id: str,
        definition_hash: str,
        name: str | None,
        parent_id: str | None,
        parent_activity: str | None,
        now: float,
        state: dict[str, Any] | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        """Insert a new instance with its first ``state`` (None: ``{}``, for ``apply`` to write
        over; passing the state saves that update) and the ``fields`` it was launched with."""
        version = 0 if state is None else 1
        values = {
            "id": instance_id,
            "definition_hash": definition_hash,
            "name": name,
            "parent_id": parent_id,
            "parent_activity": parent_activity,
            "status": RUNNING if state is None else str(state.get("status", RUNNING)),
            "state": "{}" if state is None else dumps(state),
            "version": version,
            "error": None,
            "fields": None if not fields else dumps(fields),
            "created_at": now,
            "updated_at": now,
        }
        self.connection.execute(sa.insert(instances), values)
        self._versions[instance_id] = version

    def insert_definition(self, digest: str, name: str | None, source: str, now: float) -> None:
        """Store a definition's source under its digest (once: a known digest is left as is)."""
        self.flush()
        row = {"hash": digest, "name": name, "source": source, "created_at": now}
        self.connection.execute(self._sql.insert_definition, row)

    def mark_broken(self, instance_id: str, reason: str, now: float) -> None:
        """Set the instance aside for an operator: status ``broken``, ``error`` = ``reason``."""
        self.flush()
        self._current.pop(instance_id, None)  # read again, broken, if asked for
        self._locked.pop(instance_id, None)
        at = now
        self.connection.execute(
            sa.update(instances)
            .where(instances.c.id == instance_id)
            .values(status=BROKEN, error=reason, updated_at=at)
        )

    # one step ---------------------------------------------------------------------------------

    def apply(
        self,
        instance_id: str,
        step: Step,
        now: float,
        outbox: Sequence[Outgoing] = (),
        fired_timer: str | None = None,
        *,
        write_state: bool = True,
    ) -> int | None:
        """Write ``step`` (its state and what its commands change) and ``outbox``.

        ``fired_timer`` is the timer whose firing caused the step: its row is deleted.
        ``write_state=False``: the state is written already (a new instance) or unchanged.
        The new version, when the state was written."""
        changes = changes_of(instance_id, step.commands, now, outbox, fired_timer)
        if self.deferred:
            current = self.lock_instance(instance_id)
            if write_state:
                self._states[instance_id] = (step.state, now)
                if current is not None:
                    status = str(step.state.get("status", RUNNING))
                    self._current[instance_id] = replace(current, state=step.state, status=status)
            self._pending.add(changes)
            return None
        version = self._write_state(instance_id, step.state, now) if write_state else None
        self._write_changes(changes)
        return version

    def flush(self) -> None:
        """Write what ``apply`` kept (deferred mode): each table with one statement."""
        if not (self._states or self._pending or self._new_ids):
            return
        if self._new_ids:
            rows = [{"message_id": m, "processed_at": at} for m, at in self._new_ids.items()]
            self.connection.execute(self._sql.insert_processed, rows)
            self._new_ids.clear()
        if self._states:
            rows = []
            for instance_id, (state, now) in self._states.items():
                expected = self._versions[instance_id]
                rows.append(_state_row(instance_id, expected, state, now))
                self._versions[instance_id] = expected + 1
            if self.connection.execute(sql.update_state, rows).rowcount != len(rows):
                raise StoreError("an instance of this batch was changed by someone else")
            self._states.clear()
        pending, self._pending = self._pending, Pending()
        self._write_changes(pending)

    def _write_state(self, instance_id: str, state: dict[str, Any], now: float) -> int:
        expected = self._versions.get(instance_id)
        if expected is None:  # not read in this transaction: read its version, locked
            record = self.lock_instance(instance_id)
            expected = self._versions.get(instance_id) if record is not None else None
        if expected is None:
            raise StoreError(f"instance {instance_id} is gone")
        row = _state_row(instance_id, expected, state, now)
        if self.connection.execute(sql.update_state, row).rowcount != 1:
            raise StoreError(
                f"instance {instance_id} is gone or was changed by someone else "
                f"(expected version {expected})"
            )
        self._versions[instance_id] = expected + 1
        return expected + 1

    def _write_changes(self, changes: Changes | Pending) -> None:
        s = self._sql
        batches: list[tuple[Any, list[dict[str, Any]]]] = [
            (sql.delete_timer, changes.timer_deletes()),
            (sql.insert_timer, changes.timer_inserts()),
            (sql.delete_subscription, changes.subscription_deletes()),
            (sql.insert_subscription, changes.subscription_inserts()),
            (sql.insert_workitem, changes.workitem_rows()),
            (sql.update_workitem, changes.workitem_status_updates()),
            (sql.insert_journal, changes.journal),
            (s.insert_outbox, changes.outbox),
        ]
        for statement, rows in batches:
            if rows:
                self.connection.execute(statement, rows)

    # the outbox -------------------------------------------------------------------------------

    def without_waiting_for_disk(self) -> None:
        """Let this transaction commit without waiting for PostgreSQL's disk flush: for work
        that may be repeated harmlessly (marking messages sent). It is lost only if the
        database server itself crashes within a fraction of a second, never by our crash."""
        if self.connection.dialect.name == "postgresql":
            self.connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")

    def claim_unsent(self, limit: int, before: float | None = None) -> list[OutboxRecord]:
        """The oldest unsent outbox messages (written before ``before``, if given), in the order
        they were written, locked until the transaction ends; rows another transaction holds
        (another daemon publishing them) are skipped, so two daemons never publish one message
        twice."""
        written = outbox.c.created_at < before if before is not None else sa.true()
        query = (
            sa.select(outbox)
            .where(outbox.c.sent_at.is_(None), outbox.c.error.is_(None), written)
            .order_by(outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [outbox_record(row) for row in self.connection.execute(query)]

    def mark_sent(self, ids: Sequence[int], now: float) -> None:
        if ids:
            statement = sa.update(outbox).where(outbox.c.id.in_(ids)).values(sent_at=now)
            self.connection.execute(statement)

    def mark_sent_messages(self, message_ids: Sequence[str], now: float) -> None:
        """Mark sent the outbox rows of ``message_ids`` (published from memory, not read back)."""
        if message_ids:
            self.connection.execute(sql.mark_sent, {"mids": list(message_ids), "at": now})

    def mark_unpublishable(
        self, message_id: str, instance_id: str | None, reason: str, now: float
    ) -> None:
        """Keep a message RabbitMQ refused for the operator, out of the relay's way, and set its
        instance aside with the reason (the instance would otherwise wait for ever on it)."""
        statement = sa.update(outbox).where(outbox.c.message_id == message_id)
        self.connection.execute(statement.values(error=reason))
        if instance_id is not None:
            self.mark_broken(instance_id, f"message {message_id} not sent: {reason}", now)

    def subscribers(self, event: str, process_id: str | None = None) -> list[str]:
        """The instances waiting for ``event`` (only ``process_id``, if given)."""
        self.flush()
        query = (
            sa.select(subscriptions.c.instance_id)
            .where(subscriptions.c.event == event)
            .distinct()
            .order_by(subscriptions.c.instance_id)
        )
        if process_id is not None:
            query = query.where(subscriptions.c.instance_id == process_id)
        return list(self.connection.execute(query).scalars())

    def instance_of_workitem(self, workitem_id: str) -> str | None:
        """The instance holding ``workitem_id``, if there is one."""
        known = self.workitem_instances.get(workitem_id)
        if known is not None:
            return known
        self.flush()
        query = sa.select(workitems.c.instance_id).where(workitems.c.id == workitem_id)
        found: str | None = self.connection.execute(query).scalar_one_or_none()
        return found

    def workitem(self, workitem_id: str) -> WorkitemRecord | None:
        self.flush()
        row = self.connection.execute(
            sa.select(workitems).where(workitems.c.id == workitem_id)
        ).first()
        return None if row is None else WorkitemRecord(**row._asdict())

    def delete_timer(self, timer_id: str) -> None:
        self.flush()
        self.connection.execute(sql.delete_timer, {"tid": timer_id})

    def timer(self, timer_id: str) -> TimerRecord | None:
        """The timer, row locked; None if it is gone (fired) or locked by another daemon."""
        self.flush()
        query = sa.select(timers).where(timers.c.id == timer_id).with_for_update(skip_locked=True)
        row = self.connection.execute(query).first()
        return None if row is None else TimerRecord(**row._asdict())


def _state_row(instance_id: str, expected: int, state: dict[str, Any], now: float) -> Row:
    return {
        "iid": instance_id,
        "expected": expected,
        "state": dumps(state),
        "new_status": str(state.get("status", RUNNING)),
        "at": now,
    }


def instance_record(row: Any, state: dict[str, Any] | None, **override: Any) -> InstanceRecord:
    """An ``InstanceRecord`` from an ``instances`` row, with ``state`` decoded already."""
    values = {**row._asdict(), "state": state, **override}
    values.pop("wid", None)  # rows locked through their workitems carry the workitem's id
    return InstanceRecord(**values)
