"""What one engine ``Step`` changes in the tables, as batches of rows (pure, no database).

The commands of a step are folded into their net effect first, in order: a timer started and
cancelled in the same step is not inserted; an event subscription dropped and taken again (an
``await`` inside a loop) ends as one row; a workitem dispatched and cancelled at once is inserted
as cancelled. Each batch then becomes one statement (``executemany``), so applying a step costs
the same few statements whatever it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, assert_never

from bureaucrat.engine import commands as cmd
from bureaucrat.store.codec import dumps
from bureaucrat.store.records import Outgoing

Row = dict[str, Any]

PENDING = "pending"
ANSWERED = "answered"
CANCELLED = "cancelled"


@dataclass
class Changes:
    """The rows to write for one step of instance ``instance_id`` at time ``now``."""

    instance_id: str
    now: float
    timers: dict[str, Row | None] = field(default_factory=dict)  # None: delete
    subscriptions: dict[str, str | None] = field(default_factory=dict)  # activity -> event
    new_workitems: dict[str, Row] = field(default_factory=dict)
    workitem_updates: dict[str, str] = field(default_factory=dict)  # id -> status
    journal: list[Row] = field(default_factory=list)
    outbox: list[Row] = field(default_factory=list)

    def timer_deletes(self) -> list[Row]:
        return [{"tid": tid} for tid, row in self.timers.items() if row is None]

    def timer_inserts(self) -> list[Row]:
        return [row for row in self.timers.values() if row is not None]

    def subscription_deletes(self) -> list[Row]:
        return [{"iid": self.instance_id, "act": activity} for activity in self.subscriptions]

    def subscription_inserts(self) -> list[Row]:
        return [
            {"instance_id": self.instance_id, "activity": activity, "event": event}
            for activity, event in self.subscriptions.items()
            if event is not None
        ]

    def workitem_rows(self) -> list[Row]:
        return list(self.new_workitems.values())

    def workitem_status_updates(self) -> list[Row]:
        return [
            {"wid": wid, "new_status": status, "at": self.now if status == ANSWERED else None}
            for wid, status in self.workitem_updates.items()
        ]


def changes_of(
    instance_id: str,
    commands: Sequence[cmd.Command],
    now: float,
    outbox: Sequence[Outgoing] = (),
    fired_timer: str | None = None,
) -> Changes:
    """Fold ``commands`` (and the timer that fired, and the messages to send) into ``Changes``."""
    changes = Changes(instance_id, now)
    if fired_timer is not None:
        changes.timers[fired_timer] = None
    for command in commands:
        _fold(changes, command)
    changes.outbox = [_outbox_row(instance_id, message, now) for message in outbox]
    return changes


def _start_timer(changes: Changes, command: cmd.StartTimer) -> None:
    changes.timers[command.timer_id] = {
        "id": command.timer_id,
        "instance_id": changes.instance_id,
        "activity": command.activity,
        "kind": str(command.kind),
        "due": float(command.due),
        "claimed_until": None,
    }


def _cancel_timer(changes: Changes, command: cmd.CancelTimer) -> None:
    changes.timers[command.timer_id] = None


def _subscribe(changes: Changes, command: cmd.Subscribe) -> None:
    changes.subscriptions[command.activity] = command.event


def _unsubscribe(changes: Changes, command: cmd.Unsubscribe) -> None:
    changes.subscriptions[command.activity] = None


def _dispatch(changes: Changes, command: cmd.DispatchWorkitem) -> None:
    changes.new_workitems[command.workitem_id] = {
        "id": command.workitem_id,
        "instance_id": changes.instance_id,
        "activity": command.activity,
        "participant": command.participant,
        "attempt": command.attempt,
        "status": PENDING,
        "dispatched_at": changes.now,
        "answered_at": None,
    }


def _set_workitem(changes: Changes, workitem_id: str, status: str) -> None:
    row = changes.new_workitems.get(workitem_id)
    if row is None:
        changes.workitem_updates[workitem_id] = status
        return
    row["status"] = status
    row["answered_at"] = changes.now if status == ANSWERED else None


def _cancel_workitem(changes: Changes, command: cmd.CancelWorkitem) -> None:
    _set_workitem(changes, command.workitem_id, CANCELLED)


def _record(changes: Changes, command: cmd.Record) -> None:
    changes.journal.append(
        {
            "instance_id": changes.instance_id,
            "at": changes.now,
            "activity": command.activity,
            "kind": command.kind,
            "details": dumps(command.details),
        }
    )
    workitem = command.details.get("workitem")
    if command.kind == ANSWERED and isinstance(workitem, str):
        _set_workitem(changes, workitem, ANSWERED)


def _outbox_row(instance_id: str, message: Outgoing, now: float) -> Row:
    return {
        "message_id": message.message_id,
        "instance_id": instance_id,
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "properties": dumps(message.properties),
        "body": message.body,
        "created_at": now,
        "sent_at": None,
    }


def _fold(changes: Changes, command: cmd.Command) -> None:
    """What ``command`` changes in the tables, added to ``changes``."""
    match command:
        case cmd.StartTimer():
            _start_timer(changes, command)
        case cmd.CancelTimer():
            _cancel_timer(changes, command)
        case cmd.Subscribe():
            _subscribe(changes, command)
        case cmd.Unsubscribe():
            _unsubscribe(changes, command)
        case cmd.DispatchWorkitem():
            _dispatch(changes, command)
        case cmd.CancelWorkitem():
            _cancel_workitem(changes, command)
        case cmd.Record():
            _record(changes, command)
        case cmd.LaunchChild() | cmd.TerminateChild() | cmd.NotifyParent() | cmd.ProcessFinished():
            pass  # messages only: the outbox rows come from their encoding
        case _:
            assert_never(command)


@dataclass
class Pending:
    """The changes of several steps (of one or more instances) not yet written, folded into
    their net effect in the order the steps came, so that a batch of messages writes each
    table with one statement: a workitem dispatched by one step and answered by the next is
    inserted as answered; a timer started and cancelled is not written at all."""

    timers: dict[str, Row | None] = field(default_factory=dict)  # None: delete
    subscriptions: dict[tuple[str, str], str | None] = field(default_factory=dict)
    new_workitems: dict[str, Row] = field(default_factory=dict)
    workitem_updates: dict[str, Row] = field(default_factory=dict)
    journal: list[Row] = field(default_factory=list)
    outbox: list[Row] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.timers
            or self.subscriptions
            or self.new_workitems
            or self.workitem_updates
            or self.journal
            or self.outbox
        )

    def add(self, changes: Changes) -> None:
        self.timers.update(changes.timers)
        for activity, event in changes.subscriptions.items():
            self.subscriptions[(changes.instance_id, activity)] = event
        for wid, new in changes.new_workitems.items():
            self.new_workitems[wid] = dict(new)
        for update in changes.workitem_status_updates():
            known = self.new_workitems.get(update["wid"])
            if known is None:
                self.workitem_updates[update["wid"]] = update
            else:
                known["status"], known["answered_at"] = update["new_status"], update["at"]
        self.journal.extend(changes.journal)
        self.outbox.extend(changes.outbox)

    def timer_deletes(self) -> list[Row]:
        return [{"tid": tid} for tid, row in self.timers.items() if row is None]

    def timer_inserts(self) -> list[Row]:
        return [row for row in self.timers.values() if row is not None]

    def subscription_deletes(self) -> list[Row]:
        return [{"iid": iid, "act": activity} for iid, activity in self.subscriptions]

    def subscription_inserts(self) -> list[Row]:
        return [
            {"instance_id": iid, "activity": activity, "event": event}
            for (iid, activity), event in self.subscriptions.items()
            if event is not None
        ]

    def workitem_rows(self) -> list[Row]:
        return list(self.new_workitems.values())

    def workitem_status_updates(self) -> list[Row]:
        return list(self.workitem_updates.values())
