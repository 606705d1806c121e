"""Schedules: processes launched on a cron expression, an interval or a date.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("definition_hash", sa.String(64), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("cron", sa.Text(), nullable=True),
        sa.Column("timezone", sa.String(), nullable=True),
        sa.Column("interval", sa.Integer(), nullable=True),
        sa.Column("at", sa.Double(), nullable=True),
        sa.Column("overlap", sa.String(24), nullable=False),
        sa.Column("catch_up", sa.String(8), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("next_due", sa.Double(), nullable=True),
        sa.Column("last_due", sa.Double(), nullable=True),
        sa.Column("last_instance_id", sa.String(), nullable=True),
        sa.Column("launched", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_schedules"),
    )
    op.create_index("ix_schedules_definition_hash", "schedules", ["definition_hash"])
    op.create_index("ix_schedules_paused_next_due", "schedules", ["paused", "next_due"])


def downgrade() -> None:
    op.drop_index("ix_schedules_paused_next_due", table_name="schedules")
    op.drop_index("ix_schedules_definition_hash", table_name="schedules")
    op.drop_table("schedules")
