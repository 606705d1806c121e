"""Schedules, the I/O part: firing due schedules and applying the operations on them, each in
the service's transaction.

``fire_due`` claims due schedules (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL), creates
the instances of their occurrences and writes each schedule's next due time, all in one
transaction: either the launches and the new due time are committed together or neither is,
so each occurrence is launched exactly once, across restarts and between daemons sharing the
database (and its process id, derived from the schedule and the due time, would make a second
launch a no-op anyway). ``control`` applies a ``schedule`` control message (add, pause,
resume, delete, trigger). The pure part, timings and policies, is ``bureaucrat.schedules``.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from bureaucrat import schedules as pure
from bureaucrat.engine.state import TERMINAL, Status
from bureaucrat.errors import BrokerError, DefinitionError, StoreDataError, StoreError
from bureaucrat.schedules import CatchUp, Kind, Overlap, Timing
from bureaucrat.store import schedules as rows
from bureaucrat.store.schedules import ScheduleRecord

if TYPE_CHECKING:
    from bureaucrat.messages import Control
    from bureaucrat.service import Key
    from bureaucrat.store import Store, Tx

LOG = logging.getLogger(__name__)


class Starter(Protocol):
    """What firing needs of the service: instances created and terminated in ``tx``."""

    @property
    def store(self) -> Store: ...

    def start_occurrence(
        self, tx: Tx, process_id: str, source: str, fields: dict[str, Any]
    ) -> bool: ...

    def terminate_occurrence(self, tx: Tx, process_id: str, reason: str) -> bool: ...

    def savepoint(self, tx: Tx) -> AbstractContextManager[None]:
        """A savepoint that also forgets the messages its block staged, if it is undone."""
        ...


def timing_of(record: ScheduleRecord) -> Timing:
    return Timing(Kind(record.kind), record.cron, record.timezone, record.interval, record.at)


# firing ---------------------------------------------------------------------------------------


def fire_due(tx: Tx, starter: Starter, now: float, limit: int) -> int:
    """Launch the due occurrences of up to ``limit`` due schedules in ``tx``; how many were
    launched. A schedule that cannot fire (its definition is gone, its data undecodable, a
    defect) is paused with the reason, alone: the others fire."""
    launched = 0
    for record in rows.claim_due(tx.connection, now, limit):
        try:
            with starter.savepoint(tx):
                launched += _fire(tx, starter, record, now)
        except StoreDataError as error:
            _set_aside(tx, record.name, str(error), now)
        except DefinitionError as error:  # stored valid, refused by this bureaucrat's reader
            _set_aside(tx, record.name, f"its definition is not valid (any more): {error}", now)
        except (StoreError, BrokerError):
            raise  # lost the database: nothing of this pass is kept, the next one does it
        except Exception as error:  # a defect must not stop the daemon at every pass
            LOG.exception("internal error firing schedule %s", record.name)
            _set_aside(tx, record.name, f"internal error: {type(error).__name__}: {error}", now)
    return launched


def _fire(tx: Tx, starter: Starter, record: ScheduleRecord, now: float) -> int:
    assert record.next_due is not None  # claimed because it is due
    if record.fields is None or record.source is None:
        what = "its fields cannot be decoded" if record.fields is None else "its definition"
        raise StoreDataError(f"schedule {record.name}: {what} is missing or damaged")
    plan = pure.plan(timing_of(record), record.next_due, now, CatchUp(record.catch_up))
    if plan.missed:
        LOG.warning(
            "schedule %s: %d occurrence(s) from %s missed (catch-up %s)",
            record.name,
            plan.missed,
            pure.iso(record.next_due),
            record.catch_up,
        )
    previous, last_due = record.last_instance_id, record.last_due
    launched = skipped = 0
    for due in plan.launch:
        process_id = pure.occurrence_id(record.name, due)
        last_due = due
        if not _make_room(tx, starter, record, previous, process_id):
            skipped += 1
            continue
        if starter.start_occurrence(tx, process_id, record.source, record.fields):
            launched += 1
            LOG.info("schedule %s: launched %s", record.name, process_id)
        previous = process_id
    rows.update(
        tx.connection,
        record.name,
        next_due=plan.next_due,
        last_due=last_due,
        last_instance_id=previous,
        launched=record.launched + launched,
        skipped=record.skipped + skipped + plan.missed,
        updated_at=now,
    )
    return launched


def _make_room(
    tx: Tx, starter: Starter, record: ScheduleRecord, previous: str | None, process_id: str
) -> bool:
    """Apply the overlap policy before ``process_id`` starts; whether it may start."""
    overlap = Overlap(record.overlap)
    if previous is None or overlap is Overlap.ALLOW or not _unfinished(tx, previous):
        return True
    if overlap is Overlap.SKIP:
        LOG.warning(
            "schedule %s: %s skipped, the previous occurrence %s has not finished",
            record.name,
            process_id,
            previous,
        )
        return False
    reason = f"schedule {record.name}: terminated for the next occurrence, {process_id}"
    starter.terminate_occurrence(tx, previous, reason)
    LOG.info("schedule %s: terminated %s to start %s", record.name, previous, process_id)
    return True


def _unfinished(tx: Tx, process_id: str) -> bool:
    """Whether the instance still runs (or waits: paused, suspended); one that is gone or set
    aside as broken does not hold the next occurrence back."""
    record = tx.instance(process_id)
    return record is not None and record.status not in TERMINAL | {Status.BROKEN.value}


def _set_aside(tx: Tx, name: str, reason: str, now: float) -> None:
    LOG.error("schedule %s paused: %s", name, reason)
    rows.update(tx.connection, name, paused=True, error=reason, updated_at=now)


# operations -----------------------------------------------------------------------------------


def control(tx: Tx, starter: Starter, message: Control, key: Key | None, now: float) -> str | None:
    """Apply a ``schedule`` control message in ``tx``; why it must be dead-lettered, or None.

    Its id is remembered as processed, so a redelivered ``trigger`` launches nothing twice."""
    body = message.body
    action, name = body["action"], body["schedule"]
    spec = pure.spec_of(body) if action == "add" else None
    source_digest = None
    if spec is not None:
        try:
            source_digest = starter.store.parse(spec.definition)
        except DefinitionError as error:
            return f"schedule add {name}: invalid definition: {error}"
    if key is not None and not tx.first_time(key.id, now) and key.trusted:
        LOG.info("message %s was processed already: dropped", key.id)
        return None
    if spec is not None and source_digest is not None:
        _add(tx, spec, *source_digest, now=now)
    elif action == "trigger":
        _trigger(tx, starter, name, now)
    elif action == "delete":
        _found(rows.delete(tx.connection, name), action, name)
    else:
        paused = action == "pause"
        changes: dict[str, Any] = {"paused": paused, "updated_at": now}
        if not paused:
            changes["error"] = None
        _found(rows.update(tx.connection, name, **changes), action, name)
    return None


def _found(found: bool, action: str, name: str) -> None:
    if found:
        LOG.info("schedule %s: %s", name, action)
    else:
        LOG.warning("schedule %s %s: no such schedule, ignored", action, name)


def _add(tx: Tx, spec: pure.Spec, digest: str, definition: Any, *, now: float) -> None:
    tx.insert_definition(digest, definition.name, spec.definition, now)
    timing = spec.timing
    due = timing.first_due(now)
    values: dict[str, Any] = {
        "name": spec.name,
        "definition_hash": digest,
        "fields": spec.fields,
        "kind": timing.kind.value,
        "cron": timing.cron,
        "timezone": timing.timezone,
        "interval": timing.interval,
        "at": timing.at,
        "overlap": spec.overlap.value,
        "catch_up": spec.catch_up.value,
        "paused": False,
        "next_due": due,
    }
    rows.save(tx.connection, values, now)
    LOG.info("schedule %s added, next due %s", spec.name, "never" if due is None else pure.iso(due))


def _trigger(tx: Tx, starter: Starter, name: str, now: float) -> None:
    """Launch one occurrence now, outside the timing (the overlap policy does not apply: an
    operator asked for it); it becomes the schedule's last occurrence."""
    record = rows.lock(tx.connection, name)
    if record is None:
        _found(False, "trigger", name)
        return
    source = rows.read_source(tx.connection, record.definition_hash)
    if record.fields is None or source is None:
        LOG.error("schedule %s trigger: its definition or fields are missing or damaged", name)
        return
    process_id = pure.trigger_id(name, now)
    if starter.start_occurrence(tx, process_id, source, record.fields):
        LOG.info("schedule %s: triggered %s", name, process_id)
        changes = {"last_instance_id": process_id, "launched": record.launched + 1}
        rows.update(tx.connection, name, updated_at=now, **changes)
