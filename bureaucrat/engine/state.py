"""The JSON state of one process instance, and read-only questions about it.

The state is a plain dict that survives a JSON round trip unchanged::

    {"version": 1, "id": "<pid>", "parent": null | {"process_id": ..., "activity": ...},
     "status": "running" | "paused" | "suspended" | "completed" | "faulted" | "terminated",
     "seq": 7,                      # counter behind every id the engine derives
     "steps": 12,                   # events applied so far
     "scopes": {"": {...}, "0": {...}},   # context properties by owning block path
     "nodes": {"": {...}, "0": {...}},    # the activities in progress, by path
     "workitems": {"<wid>": "<path>"},    # dispatched and not yet answered
     "timers": {"<tid>": "<path>"},
     "awaits": {"<path>": "<event name>"},
     "children": {"<child pid>": "<path>"},
     "fault": null | {"code": ..., "message": ..., "activity": ...},
     "held": [{"type": "response", ...}],   # paused or suspended: what arrived, in order
     "incident": {"code": ..., "message": ..., "activity": ..., "agenda": [...]},  # suspended
     "size": {"scopes": ..., "held": ..., "nodes": ...}}   # bytes, estimated from above

``size`` keeps an upper estimate of the state's size as JSON, kept up to date by every write
(``bureaucrat.engine.sizes``), so that no step has to serialise the whole state to enforce
``max_state_size``; a waiting action or call keeps its share in its node's ``sz``.

Only activities in progress have a node, so the size of the state depends on what is running,
never on the size of the definition.
"""

from __future__ import annotations

import enum
from typing import Any

State = dict[str, Any]

STATE_VERSION = 1


class Status(enum.StrEnum):
    """The status of an instance: the engine's six, and ``broken`` (set aside by the store
    when a defect or data it cannot keep stops the instance; the engine never sets it).

    ``paused`` (by an operator) and ``suspended`` (at an incident: a fault nothing caught, in a
    process that asks for it) hold what arrives until ``resume``."""

    RUNNING = "running"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    FAULTED = "faulted"
    TERMINATED = "terminated"
    BROKEN = "broken"


TERMINAL = frozenset({Status.COMPLETED.value, Status.FAULTED.value, Status.TERMINATED.value})
LIVE = frozenset({Status.RUNNING.value, Status.PAUSED.value, Status.SUSPENDED.value})
"""An instance that is neither ended nor set aside: it still waits for what it started."""


def new_state(process_id: str, parent: dict[str, str] | None = None) -> State:
    return {
        "version": STATE_VERSION,
        "id": process_id,
        "parent": parent,
        "status": Status.RUNNING.value,
        "seq": 0,
        "steps": 0,
        "scopes": {},
        "nodes": {},
        "workitems": {},
        "timers": {},
        "awaits": {},
        "children": {},
        "fault": None,
    }


def activity_id(process_id: str, path: str) -> str:
    """The wire id of the activity at ``path``: ``<pid>`` for the root, else ``<pid>_<path>``."""
    return f"{process_id}_{path}" if path else process_id


def path_of(process_id: str, activity: str) -> str | None:
    """The path named by wire id ``activity`` of instance ``process_id``, or None if not ours."""
    if activity == process_id:
        return ""
    prefix = process_id + "_"
    if not activity.startswith(prefix):
        return None
    return activity[len(prefix) :]


def is_finished(state: State) -> bool:
    return state["status"] in TERMINAL


def root_context(state: State) -> dict[str, Any]:
    return dict(state["scopes"].get("", {}))
