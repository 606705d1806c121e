"""The engine's one entry point: ``step(definition, state, event, now) -> Step``.

Pure: no I/O, no clock, no randomness. The same definition, state, event and time always give
the same new state and commands; the state passed in is never modified. Domain outcomes (faults,
failed actions, messages that arrive too late) are state and ``Record`` commands, not exceptions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bureaucrat.definition.model import Action, Await, Call, Definition, Delay
from bureaucrat.engine import commands as cmd
from bureaucrat.engine import events as ev
from bureaucrat.engine.activities import waiting
from bureaucrat.engine.runtime import Runtime
from bureaucrat.engine.state import State, Status, new_state, path_of


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of one event: the instance's next state and the commands to carry out."""

    state: State
    commands: tuple[cmd.Command, ...]


def step(definition: Definition, state: State | None, event: ev.Event, now: float) -> Step:
    """Apply ``event`` to the instance in ``state`` (None before ``Start``) at time ``now``."""
    if state is None:
        if not isinstance(event, ev.Start):
            raise TypeError(f"an instance without state can only be started, not {event!r}")
        parent = None if event.parent is None else _link(event.parent)
        state = new_state(event.process_id, parent)
    elif isinstance(event, ev.Start):
        return Step(state, (cmd.Record("ignored", state["id"], {"reason": "already started"}),))
    runtime = Runtime(definition, state, now)
    if runtime.running:
        _HANDLERS[type(event)](runtime, event)
        runtime.drain()
    else:
        _ignore(runtime, "", f"the instance is {runtime.state['status']}")
    if runtime.ignored:  # a late, repeated or stray message: the state stays as it was
        return Step(state, tuple(runtime.commands))
    runtime.state["steps"] = int(runtime.state["steps"]) + 1
    return Step(runtime.state, tuple(runtime.commands))


def _link(parent: ev.ParentLink) -> dict[str, str]:
    return {"process_id": parent.process_id, "activity": parent.activity}


def _ignore(runtime: Runtime, path: str, reason: str, **details: Any) -> None:
    """Journal an event that changes nothing (call it before any change)."""
    runtime.record("ignored", path, reason=reason, **details)
    runtime.ignored = True


def _start(runtime: Runtime, event: ev.Start) -> None:
    root = runtime.definition.root
    initial = root.context.initial_values() if root.context is not None else {}
    runtime.scopes[""] = {**initial, **event.fields}
    runtime.record("launched", "", name=root.name, fields=sorted(event.fields))
    runtime.schedule("", None)


def _response(runtime: Runtime, event: ev.ParticipantResponse) -> None:
    message = event.workitem
    workitem_id = message.get("workitem_id")
    target = message.get("target")
    path: str | None
    if isinstance(workitem_id, str):
        path = runtime.state["workitems"].get(workitem_id)
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
            runtime, "", "no action waits for this workitem", workitem=workitem_id, target=target
        )
        return
    payload = message.get("payload")
    if not isinstance(payload, Mapping):
        _ignore(runtime, path, "the payload is not an object", workitem=workitem_id)
        return
    spec = runtime.spec(path)
    assert isinstance(spec, Action)
    waiting.answer(runtime, spec, dict(payload))


def _timer(runtime: Runtime, event: ev.TimerFired) -> None:
    path = runtime.state["timers"].get(event.timer_id)
    if path is None or path not in runtime.nodes:
        _ignore(runtime, "", "no activity waits for this timer", timer=event.timer_id)
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
    data = dict(event.data)
    for path in waiting_paths:
        if path in runtime.state["awaits"] and runtime.running:
            spec = runtime.spec(path)
            assert isinstance(spec, Await)
            waiting.await_event(runtime, spec, data)
    if not waiting_paths:
        _ignore(runtime, "", "no await waits for this event", event=event.name)


def _child(runtime: Runtime, event: ev.ChildFinished) -> None:
    path = runtime.state["children"].pop(event.child_id, None)
    if path is None:
        _ignore(runtime, "", "no call waits for this subprocess", child=event.child_id)
        return
    spec = runtime.spec(path)
    assert isinstance(spec, Call)
    fault = None if event.fault is None else dict(event.fault)
    waiting.child_finished(runtime, spec, event.status, dict(event.context), fault)


def _terminate(runtime: Runtime, event: ev.Terminate) -> None:
    runtime.record("terminating", "", reason=event.reason)
    runtime.finish(Status.TERMINATED, None)


def _retry(runtime: Runtime, event: ev.Retry) -> None:
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
    ev.Terminate: _terminate,
    ev.Retry: _retry,
}
