"""Confinement of bad messages: outbox rows that could not be published, delivery counts.

``outbox.error``: why RabbitMQ refused a message (for any reason but a lost connection); such a
row is kept for the operator and no longer published. ``deliveries``: how often a message came
back from RabbitMQ, so that one redelivered too often is dead-lettered. An index on the
definition of each instance, so that definitions no instance runs can be pruned.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
    op.create_table(
        "deliveries",
        sa.Column("message_id", sa.String(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name="pk_deliveries"),
    )
    op.create_index("ix_deliveries_last_at", "deliveries", ["last_at"])
    op.create_index("ix_instances_definition_hash", "instances", ["definition_hash"])


def downgrade() -> None:
    op.drop_index("ix_instances_definition_hash", table_name="instances")
    op.drop_index("ix_deliveries_last_at", table_name="deliveries")
    op.drop_table("deliveries")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("error")
