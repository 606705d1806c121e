"""What the engine asks the shell to do: the commands of one step, in order.

Every command carries the stable ids the engine derived from the instance state, so that carrying
a command out twice (after a crash, say) can be recognised and made harmless.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class TimerKind(enum.StrEnum):
    DELAY = "delay"
    TIMEOUT = "timeout"
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class DispatchWorkitem:
    """Send ``message`` (the workitem of the wire protocol) to ``participant``.

    ``kind`` and ``queue`` are the action's own choices, None when the action left them to the
    configuration.
    """

    workitem_id: str
    activity: str
    participant: str
    kind: str | None
    queue: str | None
    message: dict[str, Any]
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class CancelWorkitem:
    """A dispatched workitem is no longer awaited; a late answer to it will be ignored."""

    workitem_id: str
    activity: str


@dataclass(frozen=True, slots=True)
class StartTimer:
    timer_id: str
    activity: str
    due: float
    kind: TimerKind


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer_id: str
    activity: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Deliver events named ``event`` to this instance."""

    event: str
    activity: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    event: str
    activity: str


@dataclass(frozen=True, slots=True)
class LaunchChild:
    """Start ``definition`` as subprocess ``process_id`` of this instance, with ``fields``."""

    process_id: str
    activity: str
    definition: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TerminateChild:
    process_id: str
    activity: str


@dataclass(frozen=True, slots=True)
class NotifyParent:
    """Tell the parent instance that this subprocess has finished."""

    parent_id: str
    activity: str
    child_id: str
    status: str
    context: dict[str, Any]
    fault: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ProcessFinished:
    """The instance has reached a terminal status: completed, faulted or terminated."""

    status: str
    context: dict[str, Any]
    fault: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Record:
    """A line for the instance's journal: what happened, where, with details."""

    kind: str
    activity: str
    details: dict[str, Any] = field(default_factory=dict)


Command = (
    DispatchWorkitem
    | CancelWorkitem
    | StartTimer
    | CancelTimer
    | Subscribe
    | Unsubscribe
    | LaunchChild
    | TerminateChild
    | NotifyParent
    | ProcessFinished
    | Record
)
