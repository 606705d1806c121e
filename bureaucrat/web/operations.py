"""The operations the console offers, each one call of the client (``bureaucrat.launcher``).

An operation becomes a control message on the engine's message queue, so it is applied in
order with everything else and journalled by the engine, as the same operation sent with
``bureaucratctl``. Its arguments come from a page's form or from the API's JSON body; ``parse``
checks them (``OperationError``: 400) before anything is sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bureaucrat.errors import BureaucratError
from bureaucrat.launcher import Launcher

OPERATOR = "web console"
"""The reason the console gives the engine, for the journal."""


class OperationError(BureaucratError):
    """Arguments an operation cannot take (shown to the operator)."""


Arguments = dict[str, Any]


_LIVE = ("running", "paused", "suspended")
_ANY = (*_LIVE, "completed", "faulted", "terminated")


@dataclass(frozen=True)
class Operation:
    """One operation: its name, its client call, the arguments it takes, and the statuses in
    which the engine applies it (in others it ignores it, saying so in the journal: the pages
    disable its button)."""

    name: str
    title: str
    call: Callable[[Launcher, str, Arguments], None]
    fields: tuple[str, ...] = ()
    statuses: tuple[str, ...] = _LIVE


def _reason(arguments: Arguments) -> str:
    given = str(arguments.get("reason") or "").strip()
    return f"{OPERATOR}: {given}" if given else OPERATOR


INSTANCE_OPERATIONS: Mapping[str, Operation] = {
    op.name: op
    for op in (
        Operation(
            "terminate",
            "Terminate",
            lambda client, pid, a: client.terminate(pid, reason=_reason(a)),
            ("reason",),
        ),
        Operation(
            "pause",
            "Pause",
            lambda client, pid, a: client.pause(pid, reason=_reason(a)),
            ("reason",),
            ("running",),
        ),
        Operation(
            "resume",
            "Resume",
            lambda client, pid, a: client.resume(pid),
            (),
            ("paused", "suspended"),
        ),
        Operation(
            "retry",
            "Retry",
            lambda client, pid, a: client.retry(pid, activity=a.get("activity") or None),
            ("activity",),
        ),
        Operation(
            "set",
            "Set context",
            lambda client, pid, a: client.set_context(pid, a["values"]),
            ("values",),
        ),
        Operation(
            "rerun",
            "Rerun from activity",
            lambda client, pid, a: client.rerun(pid, a["activity"], a.get("values") or None),
            ("activity", "values"),
            _ANY,
        ),
        Operation("restart", "Restart", lambda client, pid, a: client.restart(pid), (), _ANY),
    )
}


def from_form(name: str, form: Mapping[str, str]) -> Arguments:
    """The arguments of operation ``name`` from a page's form: ``reason``, ``activity``, and
    for ``set`` one ``key`` and its ``value`` (JSON if it parses, else the text)."""
    arguments: Arguments = {}
    for key in ("reason", "activity"):
        value = str(form.get(key, "")).strip()
        if value:
            arguments[key] = value
    if name == "set":
        key = str(form.get("key", "")).strip()
        if not key:
            raise OperationError("set: name the context property to set")
        arguments["values"] = {key: _value(str(form.get("value", "")))}
    return check(name, arguments)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def check(name: str, arguments: Mapping[str, Any]) -> Arguments:
    """``arguments`` for operation ``name``, checked (an API body or a form's)."""
    operation = INSTANCE_OPERATIONS.get(name)
    if operation is None:
        raise OperationError(f"no operation {name!r}")
    unknown = sorted(set(arguments) - set(operation.fields))
    if unknown:
        raise OperationError(f"{name}: unknown argument {', '.join(map(repr, unknown))}")
    for key in ("reason", "activity"):
        if key in arguments and not isinstance(arguments[key], str):
            raise OperationError(f"{name}: {key} must be a string")
    if name == "rerun" and not arguments.get("activity"):
        raise OperationError("rerun: say from which activity (click it on the diagram)")
    values = arguments.get("values")
    if name == "set" and not values:
        raise OperationError("set: give the values to set")
    if values is not None and not isinstance(values, dict):
        raise OperationError(f"{name}: values must be an object")
    return dict(arguments)


def run(launcher: Launcher, name: str, process_id: str, arguments: Arguments) -> None:
    """Send operation ``name`` about ``process_id`` (``MessageError`` for what the engine would
    refuse, e.g. an activity id that is not one)."""
    INSTANCE_OPERATIONS[name].call(launcher, process_id, arguments)


_SCHEDULE_CALLS: Mapping[str, Callable[[Launcher, str], None]] = {
    "pause": Launcher.schedule_pause,
    "resume": Launcher.schedule_resume,
    "trigger": Launcher.schedule_trigger,
}
SCHEDULE_OPERATIONS = tuple(_SCHEDULE_CALLS)


def run_on_schedule(launcher: Launcher, name: str, schedule: str) -> None:
    """Pause, resume or trigger a schedule."""
    call = _SCHEDULE_CALLS.get(name)
    if call is None:
        raise OperationError(f"no schedule operation {name!r}")
    call(launcher, schedule)
