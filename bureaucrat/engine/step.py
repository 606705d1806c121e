"""The engine's one entry point: ``step(definition, state, event, now) -> Step``.

Pure: no I/O, no clock, no randomness. The same definition, state, event and time always give
the same new state and commands; the state passed in is never modified. Domain outcomes (faults,
failed actions, messages that arrive too late) are state and ``Record`` commands, not exceptions.

Events carry what participants, launchers and subprocesses sent, so nothing in them is trusted:
an answer must name a workitem the instance waits for (and the activity that sent it), a child's
result must have the shape the engine gives it, and a value of any other shape is ignored with
a reason in the journal rather than raised on. Every step keeps within its ``Limits``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bureaucrat.definition.model import Action, Await, Call, Definition, Delay
from bureaucrat.engine import commands as cmd
from bureaucrat.engine import events as ev
from bureaucrat.engine import operations, sizes
from bureaucrat.engine.activities import waiting
from bureaucrat.engine.budget import DEFAULT_LIMITS, Limits, over_state_size
from bureaucrat.engine.context import ENGINE_PREFIX
from bureaucrat.engine.runtime import Runtime
from bureaucrat.engine.state import State, Status, new_state, path_of

LISTED = 100
"""Names a journal record lists at most (the fields of a launch, say); it counts the rest."""
_STATUSES = frozenset({Status.COMPLETED.value, Status.FAULTED.value, Status.TERMINATED.value})


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of one event: the instance's next state and the commands to carry out."""

    state: State
    commands: tuple[cmd.Command, ...]


def step(
    definition: Definition,
    state: State | None,
    event: ev.Event,
    now: float,
    limits: Limits = DEFAULT_LIMITS,
) -> Step:
    """Apply ``event`` to the instance in ``state`` (None before ``Start``) at time ``now``,
    within ``limits``."""
    if state is None:
        if not isinstance(event, ev.Start):
            raise TypeError(f"an instance without state can only be started, not {event!r}")
        parent = None if event.parent is None else _link(event.parent)
        state = new_state(event.process_id, parent)
    elif isinstance(event, ev.Start):
        return Step(state, (cmd.Record("ignored", state["id"], {"reason": "already started"}),))
    runtime = Runtime(definition, state, now, limits)
    operation = _OPERATIONS.get(type(event))
    if operation is not None:  # an operator's: whatever the instance is doing
        operation(runtime, event)
        runtime.drain()
    elif runtime.running:
        _apply(runtime, event)
        runtime.drain()
    elif runtime.state["status"] in _HOLDING:
        operations.hold(runtime, event)
    else:
        _ignore(runtime, "", f"the instance is {runtime.state['status']}")
    if runtime.ignored:  # a late, repeated or stray message: the state stays as it was
        return Step(state, tuple(runtime.commands))
    sizes.settle(runtime)
    runtime.state["steps"] = int(runtime.state["steps"]) + 1
    return Step(runtime.state, tuple(runtime.commands))


def _link(parent: ev.ParentLink) -> dict[str, str]:
    return {"process_id": parent.process_id, "activity": parent.activity}


_ignore = operations.ignore


def _apply(runtime: Runtime, event: ev.Event) -> None:
    _HANDLERS[type(event)](runtime, event)


def _listed(names: list[str]) -> list[str]:
    if len(names) <= LISTED:
        return names
    return [*names[:LISTED], f"... and {len(names) - LISTED} more"]


def _start(runtime: Runtime, event: ev.Start) -> None:
    """Fields override the root context's values, except names of the engine's own (``inst:``)
    and names that are not strings: those are ignored, and listed in the journal."""
    root = runtime.definition.root
    initial = root.context.initial_values() if root.context is not None else {}
    given = event.fields if isinstance(event.fields, Mapping) else {}
    fields = {
        name: value
        for name, value in given.items()
        if isinstance(name, str) and not name.startswith(ENGINE_PREFIX)
    }
    scope = {**initial, **fields}
    runtime.scopes[""] = scope
    details: dict[str, Any] = {"name": root.name, "fields": _listed(sorted(fields))}
    if len(fields) < len(given):
        details["ignored"] = _listed(sorted(str(name) for name in given if name not in fields))
    runtime.record("launched", "", **details)
    size = sizes.scope_size("", scope, runtime.limits.max_state_size)
    runtime.sizes.scoped += size
    if runtime.sizes.estimate() > runtime.limits.max_state_size:
        message = over_state_size(runtime.limits, size, "the launch's fields")
        sizes.overflow(runtime, message)
        return
    runtime.schedule("", None)


def _response(runtime: Runtime, event: ev.ParticipantResponse) -> None:
    """An answer names its workitem (``workitem_id``), its activity (``target``, as the
    original's workers do) or both; both must then agree."""
    message = event.workitem
    if type(message) is not dict and not isinstance(message, Mapping):
        _ignore(runtime, "", "the answer is not an object")
        return
    workitem_id = message.get("workitem_id")
    target = message.get("target")
    path: str | None
    if workitem_id is not None:
        path = runtime.state["workitems"].get(workitem_id) if type(workitem_id) is str else None
        if path is not None and target is not None and target != runtime.aid(path):
            _ignore(
                runtime,
                path,
                "the target is not the activity that sent this workitem",
                workitem=workitem_id,
                target=_shown(target),
            )
            return
    elif isinstance(target, str):
        path = path_of(runtime.process_id, target)
        node = runtime.nodes.get(path) if path is not None else None
        workitem_id = node.get("wi") if node is not None else None
        if workitem_id not in runtime.state["workitems"]:
            path = None
    else:
        path = None
    if path is None:
        _ignore(
            runtime,
            "",
            "no action waits for this workitem",
            workitem=_shown(workitem_id),
            target=_shown(target),
        )
        return
    payload = message.get("payload")
    if type(payload) is not dict and not isinstance(payload, Mapping):
        _ignore(runtime, path, "the payload is not an object", workitem=workitem_id)
        return
    spec = runtime.spec(path)
    assert isinstance(spec, Action)
    waiting.answer(runtime, spec, dict(payload))


def _shown(value: Any) -> Any:
    """``value`` as a journal may show it: short strings and numbers as they are."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= 300 else value[:297] + "..."
    return f"(a {type(value).__name__})"


def _timer(runtime: Runtime, event: ev.TimerFired) -> None:
    timer = event.timer_id
    path = runtime.state["timers"].get(timer) if isinstance(timer, str) else None
    if path is None or path not in runtime.nodes:
        _ignore(runtime, "", "no activity waits for this timer", timer=_shown(timer))
        return
    del runtime.state["timers"][event.timer_id]
    spec = runtime.spec(path)
    runtime.record("timer", path, timer=event.timer_id)
    if isinstance(spec, Action):
        waiting.action_timer(runtime, spec, event.timer_id)
    elif isinstance(spec, Delay):
        runtime.complete(path)
    elif isinstance(spec, Await):
        waiting.await_timeout(runtime, spec)


def _event(runtime: Runtime, event: ev.EventReceived) -> None:
    waiting_paths = [p for p, name in runtime.state["awaits"].items() if name == event.name]
    data = dict(event.data) if isinstance(event.data, Mapping) else {}
    for path in waiting_paths:
        if path in runtime.state["awaits"] and runtime.running:
            spec = runtime.spec(path)
            assert isinstance(spec, Await)
            waiting.await_event(runtime, spec, data)
    if not waiting_paths:
        _ignore(runtime, "", "no await waits for this event", event=event.name)


def _child(runtime: Runtime, event: ev.ChildFinished) -> None:
    """A subprocess's end: its status, its final context and, if it faulted, the fault (a code
    and a message). A result of another shape is ignored: the call keeps waiting."""
    child = event.child_id
    path = runtime.state["children"].get(child) if isinstance(child, str) else None
    if path is None:
        _ignore(runtime, "", "no call waits for this subprocess", child=_shown(child))
        return
    problem = _malformed(event)
    if problem is not None:
        _ignore(runtime, path, f"the subprocess's result {problem}", child=child)
        return
    del runtime.state["children"][child]
    spec = runtime.spec(path)
    assert isinstance(spec, Call)
    fault = None if event.fault is None else dict(event.fault)
    waiting.child_finished(runtime, spec, event.status, dict(event.context), fault)


def _malformed(event: ev.ChildFinished) -> str | None:
    """Why a child's result cannot be taken, or None."""
    if not isinstance(event.status, str) or event.status not in _STATUSES:
        return f"has an unknown status {_shown(event.status)!r}"
    if not isinstance(event.context, Mapping) or not all(
        isinstance(name, str) for name in event.context
    ):
        return "has a context that is not an object"
    fault = event.fault
    if fault is None:
        return None
    if not isinstance(fault, Mapping):
        return "has a fault that is not an object"
    if not isinstance(fault.get("code"), str) or not isinstance(fault.get("message"), str):
        return "has a fault without a code and a message"
    return None


def _retry(runtime: Runtime, event: ev.Retry) -> None:
    if event.activity is not None and not isinstance(event.activity, str):
        _ignore(runtime, "", "no failed action to retry", activity=_shown(event.activity))
        return
    wanted = None if event.activity is None else path_of(runtime.process_id, event.activity)
    failed = [
        path
        for path, node in runtime.nodes.items()
        if node.get("failed") and (event.activity is None or path == wanted)
    ]
    if not failed:
        _ignore(runtime, "", "no failed action to retry", activity=event.activity)
    for path in failed:
        spec = runtime.spec(path)
        assert isinstance(spec, Action)
        waiting.retry(runtime, spec)


_HANDLERS: dict[type[Any], Callable[[Runtime, Any], None]] = {
    ev.Start: _start,
    ev.ParticipantResponse: _response,
    ev.TimerFired: _timer,
    ev.EventReceived: _event,
    ev.ChildFinished: _child,
    ev.Retry: _retry,
}
_OPERATIONS: dict[type[Any], Callable[[Runtime, Any], None]] = {
    ev.Terminate: operations.terminate,
    ev.Pause: operations.pause,
    ev.Resume: lambda runtime, event: operations.resume(runtime, event, _apply),
    ev.SetContext: operations.set_context,
    ev.Rerun: operations.rerun,
    ev.Restart: lambda runtime, event: operations.restart(runtime, event, _start),
}
_HOLDING = frozenset({Status.PAUSED.value, Status.SUSPENDED.value})
