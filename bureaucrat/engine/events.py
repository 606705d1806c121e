"""What the shell hands the engine: one event per step.

Events are plain frozen data. Their JSON-like fields are owned by the engine once handed over:
callers must not mutate them afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ParentLink:
    """The parent of a subprocess: its instance and the ``call`` activity waiting for it."""

    process_id: str
    activity: str


@dataclass(frozen=True, slots=True)
class Start:
    """Create the instance: the definition's root context overridden by ``fields``."""

    process_id: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    parent: ParentLink | None = None


@dataclass(frozen=True, slots=True)
class ParticipantResponse:
    """A participant's answer: the workitem it was sent, with ``payload`` updated."""

    workitem: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer the engine started has come due."""

    timer_id: str


@dataclass(frozen=True, slots=True)
class EventReceived:
    """An external event: ``{"event": name, ...data}``."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChildFinished:
    """A subprocess launched by a ``call`` has finished."""

    child_id: str
    status: str
    context: Mapping[str, Any] = field(default_factory=dict)
    fault: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Terminate:
    """Stop the instance, cancelling everything it waits on."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class Retry:
    """Re-dispatch failed actions: the one with this activity id, or every one when None."""

    activity: str | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    """Dispatch nothing new: what arrives meanwhile is held, in order, until ``Resume``."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class Resume:
    """Go on after ``Pause``, or after an incident (the faulting activity runs again); what
    was held is applied, in the order it arrived."""


@dataclass(frozen=True, slots=True)
class SetContext:
    """An operator sets context properties: each where it is declared, else in the root."""

    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Rerun:
    """Run again from ``activity`` (a wire id): what is pending is cancelled, the activity's
    subtree starts afresh, the context is kept with ``values`` set."""

    activity: str
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Restart:
    """Run again from the beginning, with ``fields`` (those it was launched with)."""

    fields: Mapping[str, Any] = field(default_factory=dict)


Operation = Terminate | Pause | Resume | SetContext | Rerun | Restart
"""What only an operator asks: applied whatever the instance is doing, never held."""

Event = (
    Start
    | ParticipantResponse
    | TimerFired
    | EventReceived
    | ChildFinished
    | Terminate
    | Retry
    | Pause
    | Resume
    | SetContext
    | Rerun
    | Restart
)
