"""The initial schema: definitions, instances, workitems, timers, subscriptions, outbox,
processed message ids and the journal.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String()
TIME: sa.Double[float] = sa.Double()
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

INDEXES: dict[str, list[tuple[str, list[str]]]] = {
    "instances": [
        ("ix_instances_name", ["name"]),
        ("ix_instances_parent_id", ["parent_id"]),
        ("ix_instances_updated_at", ["updated_at"]),
        ("ix_instances_created_at_id", ["created_at", "id"]),
        ("ix_instances_status_created_at_id", ["status", "created_at", "id"]),
    ],
    "workitems": [("ix_workitems_instance_id", ["instance_id"])],
    "timers": [
        ("ix_timers_instance_id", ["instance_id"]),
        ("ix_timers_due", ["due"]),
        ("ix_timers_claimed_until_due", ["claimed_until", "due"]),
    ],
    "subscriptions": [("ix_subscriptions_event", ["event"])],
    "outbox": [("ix_outbox_sent_at_id", ["sent_at", "id"])],
    "processed_messages": [("ix_processed_messages_processed_at", ["processed_at"])],
    "journal": [("ix_journal_instance_id_id", ["instance_id", "id"])],
}


def upgrade() -> None:
    _create_tables()
    for table, indexes in INDEXES.items():
        for name, columns in indexes:
            op.create_index(name, table, columns)


def _create_tables() -> None:
    op.create_table(
        "definitions",
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("hash", name="pk_definitions"),
    )
    op.create_table(
        "instances",
        sa.Column("id", ID, nullable=False),
        sa.Column("definition_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("parent_id", ID, nullable=True),
        sa.Column("parent_activity", ID, nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_instances"),
    )
    op.create_table(
        "workitems",
        sa.Column("id", ID, nullable=False),
        sa.Column("instance_id", ID, nullable=False),
        sa.Column("activity", ID, nullable=False),
        sa.Column("participant", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("dispatched_at", TIME, nullable=False),
        sa.Column("answered_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_workitems"),
    )
    op.create_table(
        "timers",
        sa.Column("id", ID, nullable=False),
        sa.Column("instance_id", ID, nullable=False),
        sa.Column("activity", ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("due", TIME, nullable=False),
        sa.Column("claimed_until", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_timers"),
    )
    op.create_table(
        "subscriptions",
        sa.Column("instance_id", ID, nullable=False),
        sa.Column("activity", ID, nullable=False),
        sa.Column("event", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("instance_id", "activity", name="pk_subscriptions"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(), nullable=False),
        sa.Column("instance_id", ID, nullable=True),
        sa.Column("exchange", sa.String(), nullable=False),
        sa.Column("routing_key", sa.String(), nullable=False),
        sa.Column("properties", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("sent_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("message_id", name="uq_outbox_message_id"),
    )
    op.create_table(
        "processed_messages",
        sa.Column("message_id", sa.String(), nullable=False),
        sa.Column("processed_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("message_id", name="pk_processed_messages"),
    )
    op.create_table(
        "journal",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("instance_id", ID, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("activity", ID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_journal"),
    )


def downgrade() -> None:
    for table in reversed(list(INDEXES)):
        for name, _columns in INDEXES[table]:
            op.drop_index(name, table_name=table)
    for table in (
        "journal",
        "processed_messages",
        "outbox",
        "subscriptions",
        "timers",
        "workitems",
        "instances",
        "definitions",
    ):
        op.drop_table(table)
