"""One database transaction of the service: ``with store.transaction() as tx: ...``.

Everything a message changes goes through one ``Tx``: the processed message id, the instance row
(locked with ``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serialises write transactions with
``BEGIN IMMEDIATE``), and the rows one engine ``Step`` adds or removes. ``apply`` costs a fixed
handful of statements, whatever the step holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from bureaucrat.engine.step import Step
from bureaucrat.errors import StoreError
from bureaucrat.store import statements as sql
from bureaucrat.store.changes import Changes, changes_of
from bureaucrat.store.codec import UndecodableError, dumps, loads_object
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

BROKEN = "broken"
RUNNING = "running"


class Tx:
    """The operations of one transaction, on ``connection`` (use ``Store.transaction``)."""

    def __init__(self, connection: sa.Connection) -> None:
        self.connection = connection
        self._sql = sql.for_dialect(connection.dialect.name)
        self._versions: dict[str, int] = {}

    # processed messages -----------------------------------------------------------------------

    def processed(self, message_id: str) -> bool:
        """Whether the message ``message_id`` was handled already."""
        query = sa.select(sa.literal(1)).where(processed_messages.c.message_id == message_id)
        return self.connection.execute(query).first() is not None

    def mark_processed(self, message_id: str, now: float | None = None) -> None:
        """Remember ``message_id`` as handled (again is harmless)."""
        at = time.time() if now is None else now
        self.connection.execute(
            self._sql.insert_processed, {"message_id": message_id, "processed_at": at}
        )

    # instances --------------------------------------------------------------------------------

    def lock_instance(self, instance_id: str) -> InstanceRecord | None:
        """The instance, its row locked until the transaction ends; None if there is none.

        A state that cannot be decoded marks the instance ``broken`` (logged with its id) and
        comes back as ``state=None``; so does an instance already marked broken."""
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
            now = time.time()
            self.mark_broken(instance_id, reason, now)
            return instance_record(row, None, status=BROKEN, error=reason, updated_at=now)
        return instance_record(row, state)

    def waits_at(self, instance_id: str, activity: str) -> bool:
        """Whether the instance has a pending workitem dispatched by ``activity`` (a wire id)."""
        query = sa.select(sa.literal(1)).where(
            workitems.c.instance_id == instance_id,
            workitems.c.activity == activity,
            workitems.c.status == "pending",
        )
        return self.connection.execute(query).first() is not None

    def instance(self, instance_id: str) -> InstanceRecord | None:
        """The instance as it is, without a lock; ``state`` None if broken or undecodable."""
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
    ) -> None:
        """Insert a new instance (state ``{}`` until ``apply`` writes the first one)."""
        values = {
            "id": instance_id,
            "definition_hash": definition_hash,
            "name": name,
            "parent_id": parent_id,
            "parent_activity": parent_activity,
            "status": RUNNING,
            "state": "{}",
            "version": 0,
            "error": None,
            "created_at": now,
            "updated_at": now,
        }
        self.connection.execute(sa.insert(instances), values)
        self._versions[instance_id] = 0

    def mark_broken(self, instance_id: str, reason: str, now: float | None = None) -> None:
        """Set the instance aside for an operator: status ``broken``, ``error`` = ``reason``."""
        at = time.time() if now is None else now
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
    ) -> int:
        """Write ``step`` (its state and what its commands change) and ``outbox``; the new version.

        ``fired_timer`` is the timer whose firing caused the step: its row is deleted."""
        version = self._write_state(instance_id, step.state, now)
        self._write_changes(changes_of(instance_id, step.commands, now, outbox, fired_timer))
        return version

    def _write_state(self, instance_id: str, state: dict[str, Any], now: float) -> int:
        expected = self._versions.get(instance_id)
        statement = (
            sa.update(instances)
            .where(instances.c.id == instance_id)
            .values(
                state=dumps(state),
                status=str(state.get("status", RUNNING)),
                version=instances.c.version + 1,
                updated_at=now,
            )
            .returning(instances.c.version)
        )
        if expected is not None:
            statement = statement.where(instances.c.version == expected)
        version = self.connection.execute(statement).scalar_one_or_none()
        if version is None:
            raise StoreError(
                f"instance {instance_id} is gone or was changed by someone else "
                f"(expected version {expected})"
            )
        self._versions[instance_id] = version
        return int(version)

    def _write_changes(self, changes: Changes) -> None:
        s = self._sql
        batches: list[tuple[Any, list[dict[str, Any]]]] = [
            (sql.delete_timer, changes.timer_deletes()),
            (sa.insert(timers), changes.timer_inserts()),
            (sql.delete_subscription, changes.subscription_deletes()),
            (sa.insert(subscriptions), changes.subscription_inserts()),
            (sa.insert(workitems), changes.workitem_rows()),
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

    def claim_unsent(self, limit: int) -> list[OutboxRecord]:
        """The oldest unsent outbox messages, in the order they were written, locked until the
        transaction ends; rows another transaction holds (another daemon publishing them) are
        skipped, so two daemons never publish one message twice."""
        query = (
            sa.select(outbox)
            .where(outbox.c.sent_at.is_(None), outbox.c.error.is_(None))
            .order_by(outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [outbox_record(row) for row in self.connection.execute(query)]

    def mark_sent(self, ids: Sequence[int], now: float) -> None:
        if ids:
            statement = sa.update(outbox).where(outbox.c.id.in_(ids)).values(sent_at=now)
            self.connection.execute(statement)

    def mark_unpublishable(self, row: OutboxRecord, reason: str, now: float) -> None:
        """Keep a message RabbitMQ refused for the operator, out of the relay's way, and set its
        instance aside with the reason (the instance would otherwise wait for ever on it)."""
        self.connection.execute(sa.update(outbox).where(outbox.c.id == row.id).values(error=reason))
        if row.instance_id is not None:
            self.mark_broken(
                row.instance_id, f"message {row.message.message_id} not sent: {reason}", now
            )

    # lookups ----------------------------------------------------------------------------------

    def subscribers(self, event: str, process_id: str | None = None) -> list[str]:
        """The instances waiting for ``event`` (only ``process_id``, if given)."""
        query = (
            sa.select(subscriptions.c.instance_id)
            .where(subscriptions.c.event == event)
            .distinct()
            .order_by(subscriptions.c.instance_id)
        )
        if process_id is not None:
            query = query.where(subscriptions.c.instance_id == process_id)
        return list(self.connection.execute(query).scalars())

    def workitem(self, workitem_id: str) -> WorkitemRecord | None:
        row = self.connection.execute(
            sa.select(workitems).where(workitems.c.id == workitem_id)
        ).first()
        return None if row is None else WorkitemRecord(**row._asdict())

    def delete_timer(self, timer_id: str) -> None:
        self.connection.execute(sql.delete_timer, {"tid": timer_id})

    def timer(self, timer_id: str) -> TimerRecord | None:
        """The timer, row locked; None if it is gone (fired) or locked by another daemon."""
        query = sa.select(timers).where(timers.c.id == timer_id).with_for_update(skip_locked=True)
        row = self.connection.execute(query).first()
        return None if row is None else TimerRecord(**row._asdict())


def instance_record(row: Any, state: dict[str, Any] | None, **override: Any) -> InstanceRecord:
    """An ``InstanceRecord`` from an ``instances`` row, with ``state`` decoded already."""
    values = {**row._asdict(), "state": state, **override}
    return InstanceRecord(**values)
