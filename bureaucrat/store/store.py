"""The durable store: process instances and everything they wait on, in SQLite or PostgreSQL.

``Store(url)`` opens the database (creating the schema in a fresh one, refusing an outdated one
with ``SchemaOutdatedError``). The service works in transactions (``store.transaction()``, see
``bureaucrat.store.transaction``); the timers loop claims due timers; the outbox relay reads
unsent messages; ``bureaucratctl`` reads instances, journals and workitems.

Every database failure comes out as ``StoreError``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from bureaucrat.definition import Definition, parse_definition
from bureaucrat.errors import StoreDataError, StoreError
from bureaucrat.store.cache import DefinitionCache
from bureaucrat.store.codec import UndecodableError, loads_lenient, loads_object
from bureaucrat.store.database import (
    READ_ONLY,
    is_sqlite,
    make_engine,
    resolve_url,
    safe_url,
    translated,
)
from bureaucrat.store.records import (
    DefinitionRecord,
    InstanceRecord,
    JournalEntry,
    OutboxRecord,
    TimerRecord,
    WorkitemRecord,
    outbox_record,
)
from bureaucrat.store.schedules import ScheduleRecord, due_now, read_all, read_one
from bureaucrat.store.schema import ensure_schema
from bureaucrat.store.tables import (
    definitions,
    deliveries,
    instances,
    journal,
    outbox,
    processed_messages,
    schedules,
    subscriptions,
    timers,
    workitems,
)
from bureaucrat.store.transaction import BROKEN, Tx, instance_record

LOG = logging.getLogger(__name__)

SUPPORTED = ("sqlite", "postgresql")
DEFAULT_CACHE_SIZE = 64_000_000
"""Bytes of memory, about, that parsed definitions may take (``definition_cache_size``)."""


class Store:
    """The database of one bureaucrat installation (thread-safe; one connection per thread)."""

    def __init__(
        self,
        url: str | None = None,
        definition_cache_size: int = DEFAULT_CACHE_SIZE,
        sqlite_synchronous: str = "full",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = resolve_url(url)
        self.clock = clock
        """What time it is, for what the store dates on its own (definitions, broken states)."""
        self.engine = make_engine(self.url, sqlite_synchronous)
        self._definitions = DefinitionCache(definition_cache_size)
        if self.engine.dialect.name not in SUPPORTED:
            self.engine.dispose()
            raise StoreError(f"unsupported database {safe_url(self.url)}: use SQLite or PostgreSQL")
        try:
            ensure_schema(self.engine)
        except BaseException:
            self.engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"Store({safe_url(self.url)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections (the store can be used again; it reconnects)."""
        self.engine.dispose()

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.engine)

    # transactions -----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with translated("in a transaction"), self.engine.begin() as connection:
            yield Tx(connection, self.clock)

    @contextmanager
    def _read(self, doing: str) -> Iterator[sa.Connection]:
        with translated(doing), self.engine.connect() as connection:
            connection.execution_options(**{READ_ONLY: True})
            with connection.begin():
                yield connection

    # definitions ------------------------------------------------------------------------------

    def parse(self, source: str) -> tuple[str, Definition]:
        """The digest of definition ``source`` and the definition, parsed once and cached
        (``DefinitionError`` when it is not valid). Nothing is written: the transaction that
        creates an instance stores its definition (``Tx.insert_definition``)."""
        digest = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
        cached = self._definitions.get(digest)
        if cached is None:
            cached = parse_definition(source)
            self._definitions.put(digest, cached, len(source))
        return digest, cached

    def add_definition(self, source: str) -> str:
        """Store the definition ``source`` (once: its sha256 is its key); its hash.

        Raises ``DefinitionError`` when ``source`` is not a valid definition."""
        digest, definition = self.parse(source)
        with self.transaction() as tx:
            tx.insert_definition(digest, definition.name, source, self.clock())
        return digest

    def definition(self, digest: str) -> Definition:
        """The parsed definition stored under ``digest`` (parsed once, then cached)."""
        cached = self._definitions.get(digest)
        if cached is not None:
            return cached
        with self._read("reading a definition") as connection:
            source = connection.execute(
                sa.select(definitions.c.source).where(definitions.c.hash == digest)
            ).scalar_one_or_none()
        if source is None:  # pruned by mistake, or a damaged database: this instance only
            raise StoreDataError(f"no definition {digest} in the database")
        definition = parse_definition(source)
        self._definitions.put(digest, definition, len(source))
        return definition

    # timers -----------------------------------------------------------------------------------

    def claim_due_timers(self, now: float, limit: int, lease: float = 30.0) -> list[TimerRecord]:
        """Claim up to ``limit`` due timers for ``lease`` seconds, earliest first.

        A claimed timer is not handed out again until its lease runs out (the claimer crashed);
        firing it deletes it. Daemons sharing PostgreSQL skip each other's locked rows."""
        due = (
            sa.select(timers.c.id)
            .where(
                timers.c.due <= now,
                sa.or_(timers.c.claimed_until.is_(None), timers.c.claimed_until < now),
            )
            .order_by(timers.c.due)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claim = (
            sa.update(timers)
            .where(timers.c.id.in_(due.scalar_subquery()))
            .values(claimed_until=now + lease)
            .returning(*timers.c)
        )
        with self.transaction() as tx:
            rows = tx.connection.execute(claim).all()
        records = [TimerRecord(**row._asdict()) for row in rows]
        return sorted(records, key=lambda timer: (timer.due, timer.id))

    def next_timer_due(self) -> float | None:
        """When the next timer is due (or a claimed one's lease ends); None without timers."""
        unclaimed = (
            sa.select(timers.c.due)
            .where(timers.c.claimed_until.is_(None))
            .order_by(timers.c.due)
            .limit(1)
        )
        lease_end = sa.select(sa.func.min(timers.c.claimed_until))
        with self._read("reading timers") as connection:
            times = [connection.execute(q).scalar() for q in (unclaimed, lease_end)]
        found = [float(t) for t in times if t is not None]
        return min(found) if found else None

    def oldest_due_timer(self, now: float) -> float | None:
        """When the earliest timer that is due and not being fired (unclaimed, or its claim
        run out) came due; None when none is: how far behind the timers are, for metrics."""
        query = sa.select(sa.func.min(timers.c.due)).where(
            timers.c.due <= now,
            sa.or_(timers.c.claimed_until.is_(None), timers.c.claimed_until < now),
        )
        with self._read("reading timers") as connection:
            due = connection.execute(query).scalar()
        return None if due is None else float(due)

    # outbox -----------------------------------------------------------------------------------

    def outbox_backlog(self) -> int:
        """Outbox messages waiting to be published (those RabbitMQ refused are not waiting)."""
        query = (
            sa.select(sa.func.count())
            .select_from(outbox)
            .where(outbox.c.sent_at.is_(None), outbox.c.error.is_(None))
        )
        with self._read("reading the outbox") as connection:
            return int(connection.execute(query).scalar() or 0)

    def unsent(self, limit: int = 500) -> list[OutboxRecord]:
        """The oldest outbox messages not yet sent, in the order they were written."""
        query = sa.select(outbox).where(outbox.c.sent_at.is_(None)).order_by(outbox.c.id)
        with self._read("reading the outbox") as connection:
            rows = connection.execute(query.limit(limit)).all()
        return [outbox_record(row) for row in rows]

    def mark_sent(self, ids: list[int], now: float) -> None:
        with self.transaction() as tx:
            tx.mark_sent(ids, now)

    def prune(self, before: float) -> int:
        """Forget what is older than ``before`` and no longer needed: sent messages, processed
        message ids, delivery counts, and definitions that no instance runs and no schedule
        launches; rows deleted."""
        unused = sa.and_(
            ~sa.exists().where(instances.c.definition_hash == definitions.c.hash),
            ~sa.exists().where(schedules.c.definition_hash == definitions.c.hash),
        )
        deleted = 0
        with self.transaction() as tx:
            for statement in (
                sa.delete(outbox).where(outbox.c.sent_at < before),
                sa.delete(processed_messages).where(processed_messages.c.processed_at < before),
                sa.delete(deliveries).where(deliveries.c.last_at < before),
                sa.delete(definitions).where(definitions.c.created_at < before, unused),
            ):
                deleted += tx.connection.execute(statement).rowcount
        return deleted

    def count_delivery(self, message_id: str, now: float) -> int:
        """Count one more delivery of the message known as ``message_id``; how many so far.

        Committed at once, before the message is handled, so that a message that kills the
        daemon is still counted and dead-lettered once it came back too often."""
        with self.transaction() as tx:
            connection = tx.connection
            count = connection.execute(
                sa.select(deliveries.c.count)
                .where(deliveries.c.message_id == message_id)
                .with_for_update()
            ).scalar_one_or_none()
            if count is None:
                count = 0
                connection.execute(
                    sa.insert(deliveries), {"message_id": message_id, "count": 1, "last_at": now}
                )
            else:
                connection.execute(
                    sa.update(deliveries)
                    .where(deliveries.c.message_id == message_id)
                    .values(count=count + 1, last_at=now)
                )
        return int(count) + 1

    # the read side ----------------------------------------------------------------------------

    def instance(self, instance_id: str) -> InstanceRecord | None:
        """One instance; ``state`` None if it is broken or cannot be decoded."""
        query = sa.select(instances).where(instances.c.id == instance_id)
        with self._read("reading an instance") as connection:
            row = connection.execute(query).first()
        return None if row is None else _read_instance(row)

    def instance_version(self, instance_id: str) -> tuple[int, str, float] | None:
        """The version, status and update time of an instance (without reading its state),
        or None: what a page that follows an instance polls."""
        query = sa.select(instances.c.version, instances.c.status, instances.c.updated_at).where(
            instances.c.id == instance_id
        )
        with self._read("reading an instance's version") as connection:
            row = connection.execute(query).first()
        return None if row is None else (int(row[0]), str(row[1]), float(row[2]))

    def list_instances(
        self,
        status: str | None = None,
        name: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        after: str | None = None,
        *,
        definition: str | None = None,
        id_prefix: str | None = None,
    ) -> list[InstanceRecord]:
        """Instances by creation time (then id), filtered; ``after``: the last id of the page
        before (keyset pagination: each page costs the same however deep it is).
        ``definition``: only those running the definition of that hash; ``id_prefix``: only
        those whose id starts with it."""
        query = sa.select(instances).order_by(instances.c.created_at, instances.c.id)
        for column, value in (
            (instances.c.status, status),
            (instances.c.name, name),
            (instances.c.definition_hash, definition),
        ):
            if value is not None:
                query = query.where(column == value)
        if id_prefix:
            query = query.where(instances.c.id.startswith(id_prefix, autoescape=True))
        if since is not None:
            query = query.where(instances.c.created_at >= since)
        if until is not None:
            query = query.where(instances.c.created_at < until)
        with self._read("listing instances") as connection:
            if after is not None:
                query = query.where(_after(connection, after))
            rows = connection.execute(query.limit(limit)).all()
        return [_read_instance(row) for row in rows]

    def journal(self, instance_id: str, limit: int | None = None) -> list[JournalEntry]:
        """The instance's journal, oldest first (only the latest ``limit`` entries, if given)."""
        query = sa.select(journal).where(journal.c.instance_id == instance_id)
        query = query.order_by(journal.c.id.desc()).limit(limit)
        with self._read("reading a journal") as connection:
            rows = connection.execute(query).all()
        return [_journal_entry(row) for row in reversed(rows)]

    def pending_workitems(self, instance_id: str) -> list[WorkitemRecord]:
        """The workitems the instance still waits on, oldest first."""
        query = (
            sa.select(workitems)
            .where(workitems.c.instance_id == instance_id, workitems.c.status == "pending")
            .order_by(workitems.c.dispatched_at, workitems.c.id)
        )
        with self._read("reading workitems") as connection:
            rows = connection.execute(query).all()
        return [WorkitemRecord(**row._asdict()) for row in rows]

    def timers_of(self, instance_id: str) -> list[TimerRecord]:
        """The timers the instance waits on, earliest first."""
        query = (
            sa.select(timers)
            .where(timers.c.instance_id == instance_id)
            .order_by(timers.c.due, timers.c.id)
        )
        with self._read("reading timers") as connection:
            rows = connection.execute(query).all()
        return [TimerRecord(**row._asdict()) for row in rows]

    def subscriptions_of(self, instance_id: str) -> list[tuple[str, str]]:
        """The events the instance awaits, as (activity id, event name) pairs."""
        query = (
            sa.select(subscriptions.c.activity, subscriptions.c.event)
            .where(subscriptions.c.instance_id == instance_id)
            .order_by(subscriptions.c.activity)
        )
        with self._read("reading subscriptions") as connection:
            rows = connection.execute(query).all()
        return [(str(activity), str(event)) for activity, event in rows]

    def children_of(self, instance_id: str, limit: int = 500) -> list[InstanceRecord]:
        """The subprocesses the instance called, oldest first (at most ``limit``)."""
        query = (
            sa.select(instances)
            .where(instances.c.parent_id == instance_id)
            .order_by(instances.c.created_at, instances.c.id)
            .limit(limit)
        )
        with self._read("reading subprocesses") as connection:
            rows = connection.execute(query).all()
        return [_read_instance(row) for row in rows]

    def list_definitions(self, limit: int = 500) -> list[DefinitionRecord]:
        """The stored definitions, newest first, each with how many instances run it."""
        runs = (
            sa.select(sa.func.count())
            .where(instances.c.definition_hash == definitions.c.hash)
            .scalar_subquery()
        )
        query = (
            sa.select(definitions.c.hash, definitions.c.name, definitions.c.created_at, runs)
            .order_by(definitions.c.created_at.desc(), definitions.c.hash)
            .limit(limit)
        )
        with self._read("listing definitions") as connection:
            rows = connection.execute(query).all()
        return [DefinitionRecord(row[0], row[1], row[2], int(row[3])) for row in rows]

    def definition_source(self, digest: str) -> str | None:
        """The XML of the definition stored under ``digest``, or None."""
        query = sa.select(definitions.c.source).where(definitions.c.hash == digest)
        with self._read("reading a definition") as connection:
            source = connection.execute(query).scalar_one_or_none()
        return None if source is None else str(source)

    def schedules_due(self, now: float) -> bool:
        """Whether a schedule is due at ``now`` (read without a write transaction, so that an
        idle daemon's passes cost no lock)."""
        with self._read("reading schedules") as connection:
            return due_now(connection, now)

    def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by name, with its definition's name."""
        with self._read("listing schedules") as connection:
            return read_all(connection)

    def schedule(self, name: str) -> ScheduleRecord | None:
        """One schedule, with its definition's name; None if there is none."""
        with self._read("reading a schedule") as connection:
            return read_one(connection, name)

    def counts_by_status(self) -> dict[str, int]:
        query = sa.select(instances.c.status, sa.func.count()).group_by(instances.c.status)
        with self._read("counting instances") as connection:
            rows = connection.execute(query).all()
        return {status: int(count) for status, count in rows}


def _after(connection: sa.Connection, after: str) -> sa.ColumnElement[bool]:
    created = connection.execute(
        sa.select(instances.c.created_at).where(instances.c.id == after)
    ).scalar_one_or_none()
    if created is None:
        raise StoreError(f"no instance {after} to list from")
    return sa.tuple_(instances.c.created_at, instances.c.id) > sa.tuple_(
        sa.literal(created, sa.Double()), sa.literal(after)
    )


def _read_instance(row: Any) -> InstanceRecord:
    if row.status == BROKEN:
        return instance_record(row, None)
    try:
        return instance_record(row, loads_object(row.state))
    except UndecodableError:
        return instance_record(row, None)


def _journal_entry(row: Any) -> JournalEntry:
    return JournalEntry(
        id=row.id,
        instance_id=row.instance_id,
        at=row.at,
        activity=row.activity,
        kind=row.kind,
        details=loads_lenient(row.details),
    )
