"""The SQL schema of the store, as SQLAlchemy Core tables (the migrations must match it).

Times are float epoch seconds (``Double``), as the engine counts them. JSON documents (instance
state, journal details, message properties) are text that the store encodes and decodes itself,
so a row that cannot be decoded is noticed instead of crashing a driver.

Every hot path reaches its rows through an index: instances by primary key; workitems, timers
and journal rows by instance; timers by due time; subscriptions by event name; unsent outbox rows
through ``(sent_at, id)``; the next unclaimed timer through ``(claimed_until, due)``; due
schedules through ``(paused, next_due)``.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = sa.String()
NAME = sa.String()
TIME: sa.Double[float] = sa.Double()

definitions = sa.Table(
    "definitions",
    metadata,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("name", NAME, nullable=True),
    sa.Column("source", sa.Text(), nullable=False),
    sa.Column("created_at", TIME, nullable=False),
)

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("definition_hash", sa.String(64), nullable=False, index=True),
    sa.Column("name", NAME, nullable=True, index=True),
    sa.Column("parent_id", ID, nullable=True, index=True),
    sa.Column("parent_activity", ID, nullable=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("state", sa.Text(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("fields", sa.Text(), nullable=True),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("updated_at", TIME, nullable=False, index=True),
    sa.Index("ix_instances_created_at_id", "created_at", "id"),
    sa.Index("ix_instances_status_created_at_id", "status", "created_at", "id"),
)

workitems = sa.Table(
    "workitems",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("instance_id", ID, nullable=False, index=True),
    sa.Column("activity", ID, nullable=False),
    sa.Column("participant", NAME, nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("dispatched_at", TIME, nullable=False),
    sa.Column("answered_at", TIME, nullable=True),
)

timers = sa.Table(
    "timers",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("instance_id", ID, nullable=False, index=True),
    sa.Column("activity", ID, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("due", TIME, nullable=False, index=True),
    sa.Column("claimed_until", TIME, nullable=True),
    sa.Index("ix_timers_claimed_until_due", "claimed_until", "due"),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("instance_id", ID, primary_key=True),
    sa.Column("activity", ID, primary_key=True),
    sa.Column("event", NAME, nullable=False, index=True),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("message_id", NAME, nullable=False, unique=True),
    sa.Column("instance_id", ID, nullable=True),
    sa.Column("exchange", NAME, nullable=False),
    sa.Column("routing_key", NAME, nullable=False),
    sa.Column("properties", sa.Text(), nullable=False),
    sa.Column("body", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("sent_at", TIME, nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Index("ix_outbox_sent_at_id", "sent_at", "id"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("message_id", NAME, primary_key=True),
    sa.Column("count", sa.Integer(), nullable=False),
    sa.Column("last_at", TIME, nullable=False, index=True),
)

processed_messages = sa.Table(
    "processed_messages",
    metadata,
    sa.Column("message_id", NAME, primary_key=True),
    sa.Column("processed_at", TIME, nullable=False, index=True),
)

journal = sa.Table(
    "journal",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("instance_id", ID, nullable=False),
    sa.Column("at", TIME, nullable=False),
    sa.Column("activity", ID, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("details", sa.Text(), nullable=False),
    sa.Index("ix_journal_instance_id_id", "instance_id", "id"),
)

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("definition_hash", sa.String(64), nullable=False, index=True),
    sa.Column("fields", sa.Text(), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # cron, every, at
    sa.Column("cron", sa.Text(), nullable=True),
    sa.Column("timezone", NAME, nullable=True),
    sa.Column("interval", sa.Integer(), nullable=True),  # seconds
    sa.Column("at", TIME, nullable=True),
    sa.Column("overlap", sa.String(24), nullable=False),  # skip, allow, terminate-previous
    sa.Column("catch_up", sa.String(8), nullable=False),  # none, one, all
    sa.Column("paused", sa.Boolean(), nullable=False),
    sa.Column("next_due", TIME, nullable=True),  # None: no occurrence left (an ``at`` past)
    sa.Column("last_due", TIME, nullable=True),
    sa.Column("last_instance_id", ID, nullable=True),
    sa.Column("launched", sa.Integer(), nullable=False),
    sa.Column("skipped", sa.Integer(), nullable=False),  # by the overlap or catch-up policy
    sa.Column("error", sa.Text(), nullable=True),  # why it was paused, when it could not fire
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("updated_at", TIME, nullable=False),
    sa.Index("ix_schedules_paused_next_due", "paused", "next_due"),
)

TABLES = tuple(metadata.tables)
"""The names of the tables this schema owns (the alembic version table aside)."""
