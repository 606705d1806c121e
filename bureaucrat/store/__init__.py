"""The durable store (SQLAlchemy Core on SQLite or PostgreSQL, schema managed by Alembic).

    store = Store("sqlite:///bureaucrat.db")      # creates the schema in a fresh database
    with store.transaction() as tx:
        record = tx.lock_instance(process_id)
        tx.apply(process_id, step(definition, record.state, event, now), now, outgoing)

``upgrade(url)`` applies the migrations (``bureaucratctl db upgrade``).
"""

from bureaucrat.store.database import DEFAULT_URL, resolve_url
from bureaucrat.store.records import (
    InstanceRecord,
    JournalEntry,
    OutboxRecord,
    Outgoing,
    TimerRecord,
    WorkitemRecord,
)
from bureaucrat.store.schedules import ScheduleRecord
from bureaucrat.store.schema import UPGRADE_COMMAND, upgrade
from bureaucrat.store.store import Store
from bureaucrat.store.transaction import Tx

__all__ = [
    "DEFAULT_URL",
    "UPGRADE_COMMAND",
    "InstanceRecord",
    "JournalEntry",
    "OutboxRecord",
    "Outgoing",
    "ScheduleRecord",
    "Store",
    "TimerRecord",
    "Tx",
    "WorkitemRecord",
    "resolve_url",
    "upgrade",
]
