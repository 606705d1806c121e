"""The plain, immutable values the store hands out and takes in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish after the transaction commits (a row of the outbox).

    ``properties`` holds pika ``BasicProperties`` fields as JSON-friendly values
    (``content_type``, ``headers``, ``correlation_id``, ``delivery_mode``, ...).
    """

    message_id: str
    exchange: str
    routing_key: str
    body: bytes
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """An outbox row not yet sent: its id (for ``mark_sent``) and the message."""

    id: int
    message: Outgoing
    instance_id: str | None = None


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
