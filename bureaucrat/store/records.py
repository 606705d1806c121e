"""The plain, immutable values the store hands out and takes in."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from bureaucrat.messages import Outgoing
from bureaucrat.store.codec import UndecodableError, loads_object

__all__ = [
    "InstanceRecord",
    "JournalEntry",
    "OutboxRecord",
    "Outgoing",
    "TimerRecord",
    "WorkitemRecord",
]

LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """An outbox row not yet sent: its id (for ``mark_sent``) and the message."""

    id: int
    message: Outgoing
    instance_id: str | None = None


def outbox_record(row: Any) -> OutboxRecord:
    """An ``OutboxRecord`` from an ``outbox`` row (properties that cannot be decoded are
    logged and dropped: the message still goes out)."""
    try:
        properties = loads_object(row.properties)
    except UndecodableError as error:
        LOG.error("outbox message %s: properties dropped, %s", row.message_id, error)
        properties = {}
    message = Outgoing(
        message_id=row.message_id,
        exchange=row.exchange,
        routing_key=row.routing_key,
        body=bytes(row.body),
        properties=properties,
    )
    return OutboxRecord(id=row.id, message=message, instance_id=row.instance_id)


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One process instance. ``state`` is None when the stored state cannot be decoded."""

    id: str
    definition_hash: str
    name: str | None
    parent_id: str | None
    parent_activity: str | None
    status: str
    state: dict[str, Any] | None
    version: int
    error: str | None
    created_at: float
    updated_at: float
    fields: str | None = None
    """The fields it was launched with, as JSON text (None for instances from before 0.2)."""


@dataclass(frozen=True, slots=True)
class WorkitemRecord:
    id: str
    instance_id: str
    activity: str
    participant: str
    attempt: int
    status: str
    dispatched_at: float
    answered_at: float | None


@dataclass(frozen=True, slots=True)
class TimerRecord:
    id: str
    instance_id: str
    activity: str
    kind: str
    due: float
    claimed_until: float | None


@dataclass(frozen=True, slots=True)
class JournalEntry:
    id: int
    instance_id: str
    at: float
    activity: str
    kind: str
    details: dict[str, Any]
