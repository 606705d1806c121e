"""Prepared statements of the hot paths, built once (some differ between dialects)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bureaucrat.store.tables import (
    definitions,
    instances,
    journal,
    outbox,
    processed_messages,
    subscriptions,
    timers,
    workitems,
)

delete_timer = sa.delete(timers).where(timers.c.id == sa.bindparam("tid"))
delete_subscription = sa.delete(subscriptions).where(
    subscriptions.c.instance_id == sa.bindparam("iid"),
    subscriptions.c.activity == sa.bindparam("act"),
)
update_workitem = (
    sa.update(workitems)
    .where(workitems.c.id == sa.bindparam("wid"))
    .values(status=sa.bindparam("new_status"), answered_at=sa.bindparam("at"))
)
insert_journal = sa.insert(journal)
insert_timer = sa.insert(timers)
processed_among = sa.select(processed_messages.c.message_id).where(
    processed_messages.c.message_id.in_(sa.bindparam("mids", expanding=True))
)
mark_sent = (
    sa.update(outbox)
    .where(outbox.c.message_id.in_(sa.bindparam("mids", expanding=True)))
    .values(sent_at=sa.bindparam("at"))
)
insert_subscription = sa.insert(subscriptions)
insert_workitem = sa.insert(workitems)
update_state = (
    sa.update(instances)
    .where(
        instances.c.id == sa.bindparam("iid"),
        instances.c.version == sa.bindparam("expected"),
    )
    .values(
        state=sa.bindparam("state"),
        status=sa.bindparam("new_status"),
        version=sa.bindparam("expected") + 1,
        updated_at=sa.bindparam("at"),
    )
)
"""Write an instance's state if its version is still the one read (else no row changes)."""
lock_instances = (
    sa.select(instances)
    .where(instances.c.id.in_(sa.bindparam("iids", expanding=True)))
    .order_by(instances.c.id)
    .with_for_update()
)
lock_workitem_instances = (
    sa.select(instances, workitems.c.id.label("wid"))
    .join(workitems, workitems.c.instance_id == instances.c.id)
    .where(workitems.c.id.in_(sa.bindparam("wids", expanding=True)))
    .order_by(instances.c.id)
    .with_for_update(of=instances)
)
"""The instances holding some workitems, locked in id order, with the workitem of each row."""
workitem_instances = sa.select(workitems.c.id, workitems.c.instance_id).where(
    workitems.c.id.in_(sa.bindparam("wids", expanding=True))
)


@dataclass(frozen=True)
class DialectStatements:
    """The statements that need the dialect's own ``INSERT ... ON CONFLICT DO NOTHING``."""

    insert_processed: Any
    insert_processed_returning: Any
    insert_outbox: Any
    insert_definition: Any


@functools.cache
def for_dialect(name: str) -> DialectStatements:
    insert: Any = postgresql.insert if name == "postgresql" else sqlite.insert
    if name not in ("postgresql", "sqlite"):
        raise ValueError(f"unsupported database dialect {name!r}: use SQLite or PostgreSQL")
    return DialectStatements(
        insert_processed=insert(processed_messages).on_conflict_do_nothing(),
        insert_processed_returning=insert(processed_messages)
        .on_conflict_do_nothing()
        .returning(processed_messages.c.message_id),
        insert_outbox=insert(outbox).on_conflict_do_nothing(index_elements=["message_id"]),
        insert_definition=insert(definitions).on_conflict_do_nothing(),
    )
