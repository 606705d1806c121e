"""The ``schedules`` table: rows in, ``ScheduleRecord`` out.

The service changes schedules within its own transactions (``Tx.connection``): a due schedule
is claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so that of several daemons
sharing the database exactly one fires it, and its next due time is written in the transaction
that launches its occurrences (SQLite has one writer at a time: ``BEGIN IMMEDIATE``).
``Store.list_schedules`` and ``Store.schedule`` read them for ``bureaucratctl`` and the console.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bureaucrat.store.codec import UndecodableError, dumps, loads_object
from bureaucrat.store.tables import definitions, schedules


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """One schedule. ``fields`` is None when the stored fields cannot be decoded."""

    name: str
    definition_hash: str
    fields: dict[str, Any] | None
    kind: str
    cron: str | None
    timezone: str | None
    interval: int | None
    at: float | None
    overlap: str
    catch_up: str
    paused: bool
    next_due: float | None
    last_due: float | None
    last_instance_id: str | None
    launched: int
    skipped: int
    error: str | None
    created_at: float
    updated_at: float
    definition_name: str | None = None
    source: str | None = None
    """The definition's XML (only when the schedule is claimed for firing)."""


def schedule_record(row: Any) -> ScheduleRecord:
    values = dict(row._asdict())
    try:
        values["fields"] = loads_object(values["fields"])
    except UndecodableError:
        values["fields"] = None
    values["paused"] = bool(values["paused"])
    return ScheduleRecord(**values)


_JOINED = schedules.outerjoin(definitions, definitions.c.hash == schedules.c.definition_hash)
_WITH_NAME = (
    sa.select(schedules, definitions.c.name.label("definition_name"))
    .select_from(_JOINED)
    .order_by(schedules.c.name)
)


def read_all(connection: sa.Connection) -> list[ScheduleRecord]:
    return [schedule_record(row) for row in connection.execute(_WITH_NAME)]


def read_one(connection: sa.Connection, name: str) -> ScheduleRecord | None:
    row = connection.execute(_WITH_NAME.where(schedules.c.name == name)).first()
    return None if row is None else schedule_record(row)


def lock(connection: sa.Connection, name: str) -> ScheduleRecord | None:
    """The schedule, its row locked until the transaction ends (waiting for another daemon
    that holds it: an operation must not be lost); None if there is none."""
    query = sa.select(schedules).where(schedules.c.name == name).with_for_update()
    row = connection.execute(query).first()
    return None if row is None else schedule_record(row)


def _due(now: float) -> list[sa.ColumnElement[bool]]:
    return [
        schedules.c.paused == sa.false(),
        schedules.c.next_due.is_not(None),
        schedules.c.next_due <= now,
    ]


def due_now(connection: sa.Connection, now: float) -> bool:
    query = sa.select(sa.literal(1)).where(*_due(now)).limit(1)
    return connection.execute(query).first() is not None


def claim_due(connection: sa.Connection, now: float, limit: int) -> list[ScheduleRecord]:
    """Up to ``limit`` unpaused schedules due at ``now``, earliest first, with their
    definitions' source, locked until the transaction ends; rows another daemon holds are
    skipped (it is firing them)."""
    due = (
        sa.select(schedules.c.name)
        .where(*_due(now))
        .order_by(schedules.c.next_due, schedules.c.name)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    names = list(connection.execute(due).scalars())
    if not names:
        return []
    query = (
        sa.select(schedules, definitions.c.name.label("definition_name"), definitions.c.source)
        .select_from(_JOINED)
        .where(schedules.c.name.in_(names))
        .order_by(schedules.c.next_due, schedules.c.name)
    )
    return [schedule_record(row) for row in connection.execute(query)]


def save(connection: sa.Connection, values: dict[str, Any], now: float) -> None:
    """Insert the schedule ``values`` describe, or replace the one of that name (keeping its
    counts and its last occurrence, which the overlap policy looks at), in one statement: two
    daemons adding one name at once cannot collide."""
    row = {**values, "fields": dumps(values["fields"]), "updated_at": now, "error": None}
    initial = {"launched": 0, "skipped": 0, "last_due": None, "last_instance_id": None}
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = insert(schedules).values(**initial, **row, created_at=now)
    statement = statement.on_conflict_do_update(index_elements=[schedules.c.name], set_=row)
    connection.execute(statement)


def update(connection: sa.Connection, name: str, **values: Any) -> bool:
    """Change columns of schedule ``name``; whether there was one."""
    statement = sa.update(schedules).where(schedules.c.name == name).values(**values)
    return bool(connection.execute(statement).rowcount)


def delete(connection: sa.Connection, name: str) -> bool:
    statement = sa.delete(schedules).where(schedules.c.name == name)
    return bool(connection.execute(statement).rowcount)


def read_source(connection: sa.Connection, digest: str) -> str | None:
    """The XML of the definition stored under ``digest``; None if it is gone."""
    query = sa.select(definitions.c.source).where(definitions.c.hash == digest)
    source: str | None = connection.execute(query).scalar_one_or_none()
    return source
