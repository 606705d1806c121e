"""What operators do to an instance: pause, resume, set context values, rerun, restart, terminate;
and what a paused or suspended instance does with what arrives meanwhile (it holds it).

A paused instance (``Pause``) and a suspended one (an incident: a fault nothing caught, in a
process that asks for it) dispatch nothing new: answers, timers, events, subprocess results and
retries that arrive are kept in the state (``held``), in arrival order, and applied one after
the other on ``Resume``. What nothing in the instance waits for is not held (it would be
ignored anyway), and neither is what would take the state past its size limit (the journal says
so). A resumed incident first starts the activity that faulted again.

Operations are journalled, and refused (ignored, with the reason in the journal) where they
make no sense: resuming a running instance, setting values in a finished one...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bureaucrat.definition.limits import json_size
from bureaucrat.definition.model import All, Block, Foreach
from bureaucrat.engine import events as ev
from bureaucrat.engine.context import ENGINE_PREFIX
from bureaucrat.engine.runtime import Runtime
from bureaucrat.engine.state import TERMINAL, Status, path_of

Apply = Callable[[Runtime, ev.Event], None]
"""Applies an event to a running instance (``step``'s handlers): how held events are replayed."""

_RUNNING, _PAUSED, _SUSPENDED = Status.RUNNING.value, Status.PAUSED.value, Status.SUSPENDED.value
SHOWN = 1_000
"""Bytes of JSON up to which the journal shows a value an operator set (else its type, size)."""


def ignore(runtime: Runtime, path: str, reason: str, **details: Any) -> None:
    """Journal an event that changes nothing (call it before any change)."""
    runtime.record("ignored", path, reason=reason, **details)
    runtime.ignored = True


# holding ----------------------------------------------------------------------------------------


def hold(runtime: Runtime, event: ev.Event) -> None:
    """Keep ``event`` for ``Resume`` (the instance is paused or suspended)."""
    entry = _freeze(event) if _awaited(runtime, event) else None
    if entry is None:
        ignore(runtime, "", "nothing in the instance waits for this", status=_status(runtime))
        return
    size = _held_size(runtime, [entry])
    if not _room(runtime, size):
        ignore(runtime, "", "not held: the state would pass max_state_size", held=entry["type"])
        return
    held = list(runtime.state.get("held") or [])
    held.append(entry)
    runtime.state["held"] = held
    runtime.sizes.held += size
    runtime.record("held", "", message=entry["type"], held=len(held))


def _status(runtime: Runtime) -> str:
    return str(runtime.state["status"])


def _awaited(runtime: Runtime, event: ev.Event) -> bool:
    """Whether ``event`` concerns something the instance waits for (a cheap look: replaying
    it checks it in full)."""
    state = runtime.state
    match event:
        case ev.ParticipantResponse():
            message = event.workitem
            if not isinstance(message, Mapping):
                return False
            if message.get("workitem_id") in state["workitems"]:
                return True
            target = message.get("target")
            path = path_of(runtime.process_id, target) if isinstance(target, str) else None
            node = runtime.nodes.get(path) if path is not None else None
            return node is not None and node.get("wi") in state["workitems"]
        case ev.TimerFired():
            return event.timer_id in state["timers"]
        case ev.EventReceived():
            return event.name in state["awaits"].values()
        case ev.ChildFinished():
            return event.child_id in state["children"]
        case ev.Retry():
            return event.activity is None or isinstance(event.activity, str)
        case _:
            return False


def _freeze(event: ev.Event) -> dict[str, Any] | None:
    """``event`` as JSON data, to keep in the state."""
    match event:
        case ev.ParticipantResponse():
            return {"type": "response", "workitem": dict(event.workitem)}
        case ev.TimerFired():
            return {"type": "timer", "timer_id": event.timer_id}
        case ev.EventReceived():
            return {"type": "event", "name": event.name, "data": dict(event.data)}
        case ev.ChildFinished():
            fault = None if event.fault is None else dict(event.fault)
            context = dict(event.context)
            return {
                "type": "child",
                "child_id": event.child_id,
                "status": event.status,
                "context": context,
                "fault": fault,
            }
        case ev.Retry():
            return {"type": "retry", "activity": event.activity}
        case _:
            return None


def _thaw(entry: Any) -> ev.Event | None:
    """The event a held entry keeps, or None for an entry of no known shape."""
    if not isinstance(entry, dict):
        return None
    kind = entry.get("type")
    try:
        if kind == "response":
            return ev.ParticipantResponse(entry["workitem"])
        if kind == "timer":
            return ev.TimerFired(entry["timer_id"])
        if kind == "event":
            return ev.EventReceived(entry["name"], entry["data"])
        if kind == "child":
            return ev.ChildFinished(
                entry["child_id"], entry["status"], entry["context"], entry["fault"]
            )
        if kind == "retry":
            return ev.Retry(entry["activity"])
    except KeyError:
        return None
    return None


def _drop_held(runtime: Runtime) -> int:
    """Forget what was held (an incident too); how many messages that was."""
    held = runtime.state.pop("held", None) or []
    runtime.sizes.held -= _held_size(runtime, held)
    return len(held)


def _held_size(runtime: Runtime, entries: list[Any]) -> int:
    """What held messages add to the state's size estimate: each one's JSON and a separator,
    and the list's key (counted with each, so that the estimate stays above the size)."""
    bound = runtime.limits.max_state_size
    return sum(json_size(entry, bound)[0] + 10 for entry in entries)


def _room(runtime: Runtime, growth: int) -> bool:
    """Whether the state may grow by ``growth`` bytes; an operator's request that would pass
    the limit is refused rather than faulting the instance."""
    rt_sizes, limit = runtime.sizes, runtime.limits.max_state_size
    if rt_sizes.estimate() + growth <= limit:
        return True
    size, _ = rt_sizes.exact()
    return size + growth <= limit


# pause and resume -------------------------------------------------------------------------------


def pause(runtime: Runtime, event: ev.Pause) -> None:
    if _status(runtime) != _RUNNING:
        ignore(runtime, "", f"the instance is {_status(runtime)}, not running")
        return
    runtime.state["status"] = _PAUSED
    runtime.record("paused", "", reason=_text(event.reason))


def resume(runtime: Runtime, event: ev.Resume, apply: Apply) -> None:
    """Go on: an incident's faulting activity starts again; then what was held is applied in
    the order it came, until the instance stops again (what is left stays held) or ends."""
    status = _status(runtime)
    if status not in (_PAUSED, _SUSPENDED):
        ignore(runtime, "", f"the instance is {status}, not paused or suspended")
        return
    held = runtime.state.get("held") or []
    _drop_held(runtime)
    runtime.record("resumed", "", was=status, held=len(held))
    if status == _SUSPENDED:
        runtime.resume_incident()
    else:
        runtime.state["status"] = _RUNNING
    runtime.drain()
    for index, entry in enumerate(held):
        if not runtime.running:
            _left_over(runtime, held[index:])
            break
        event_held = _thaw(entry)
        if event_held is None:
            runtime.record("ignored", "", reason="a held message of no known shape")
            continue
        runtime.ignored = False
        apply(runtime, event_held)
        runtime.drain()
    runtime.ignored = False


def _left_over(runtime: Runtime, rest: list[Any]) -> None:
    """What was still held when the instance stopped again (held again) or ended (dropped)."""
    if runtime.state["status"] in TERMINAL:
        runtime.record("dropped", "", held=len(rest), reason=f"the instance {_status(runtime)}")
        return
    runtime.state["held"] = rest
    runtime.sizes.held += _held_size(runtime, rest)


# terminate --------------------------------------------------------------------------------------


def terminate(runtime: Runtime, event: ev.Terminate) -> None:
    status = _status(runtime)
    if status in TERMINAL:
        ignore(runtime, "", f"the instance is {status}")
        return
    dropped = _drop_held(runtime)
    details = {"held": dropped} if dropped else {}
    runtime.record("terminating", "", reason=event.reason, **details)
    runtime.finish(Status.TERMINATED, None)


# context values ---------------------------------------------------------------------------------


def set_context(runtime: Runtime, event: ev.SetContext) -> None:
    status = _status(runtime)
    if status not in (_RUNNING, _PAUSED, _SUSPENDED):
        ignore(runtime, "", f"the instance is {status}: its context can no longer change")
        return
    problem = set_values(runtime, event.values, "set")
    if problem is not None:
        ignore(runtime, "", problem)


def set_values(runtime: Runtime, values: Any, kind: str) -> str | None:
    """Set each property where it is declared in a scope in progress (the innermost), else in
    the root scope, journalling old and new values; why nothing was set, or None."""
    if not isinstance(values, Mapping):
        return "the values are not an object"
    bound = runtime.limits.max_state_size
    writes: list[tuple[str, str, Any, int]] = []
    growth = 0
    for name, value in values.items():
        if not isinstance(name, str) or not name or name.startswith(ENGINE_PREFIX):
            return f"{_text(str(name))!r} cannot be set: not a property name of the process's own"
        scope = next(
            (
                path
                for path in sorted(runtime.scopes, key=len, reverse=True)
                if name in runtime.scopes[path]
            ),
            "",
        )
        current = runtime.scopes.setdefault(scope, {})
        delta = json_size(value, bound)[0]
        delta -= json_size(current[name], bound)[0] if name in current else -len(name) - 4
        writes.append((scope, name, value, delta))
        growth += delta
    if growth > 0 and not _room(runtime, growth):
        return "the values would take the state past max_state_size"
    for scope, name, value, delta in writes:
        target = runtime.scope_for_write(scope)
        old = target.get(name)
        details = {"name": name, "old": _shown(old), "new": _shown(value)}
        if name not in target:
            details["old"] = None
            details["created"] = True
        target[name] = value
        runtime.sizes.scoped += delta
        runtime.record(kind, scope, **details)
    return None


def _shown(value: Any) -> Any:
    size = json_size(value, SHOWN)[0]
    return value if size <= SHOWN else f"(a {type(value).__name__} of {size}+ bytes)"


def _text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 300 else text[:297] + "..."


# rerun and restart ------------------------------------------------------------------------------


def rerun(runtime: Runtime, event: ev.Rerun) -> None:
    """Run again from an activity: everything pending is cancelled, the blocks around the
    activity are set as if it were their current child (an ``all`` waits for that branch only),
    the activity starts afresh, and the context is kept with ``values`` set.

    The blocks around it that have ended are entered again; a ``foreach`` among them, whose
    element would be unknown, starts again from its first element instead."""
    activity = event.activity
    path = path_of(runtime.process_id, activity) if isinstance(activity, str) else None
    definition = runtime.definition
    if path is None or path not in definition.activities:
        ignore(runtime, "", "no such activity in this process", activity=_text(activity))
        return
    if _in_handler(runtime, path):
        ignore(runtime, path, "cannot rerun inside a fault handler: rerun its block instead")
        return
    status = _status(runtime)
    _drop_incident(runtime)
    dropped = _drop_held(runtime)
    runtime.record("rerun", path, was=status, **({"held": dropped} if dropped else {}))
    ancestors = _ancestors(runtime, path)
    keep = set(ancestors)
    runtime.cancel_nodes([p for p in runtime.nodes if p not in keep])
    runtime.state["status"] = _RUNNING
    runtime.state["fault"] = None
    for block, child in zip(ancestors, [*ancestors[1:], path], strict=False):
        if not _enter(runtime, block, child):
            path = block  # a foreach that ended: it starts again
            break
    runtime.restart_at(path)
    problem = set_values(runtime, event.values, "set")
    if problem is not None:
        runtime.record("ignored", "", reason=problem)


def restart(
    runtime: Runtime, event: ev.Restart, start: Callable[[Runtime, ev.Start], None]
) -> None:
    """Run again from the beginning, in a context made afresh from the definition and the
    launch's fields; the ids it derives go on from where they were (late answers to what it
    sent before are ignored)."""
    status = _status(runtime)
    _drop_incident(runtime)
    dropped = _drop_held(runtime)
    runtime.record("restarted", "", was=status, **({"held": dropped} if dropped else {}))
    runtime.cancel_nodes(list(runtime.nodes))
    for path in list(runtime.scopes):
        runtime.scopes.pop(path)
    runtime.sizes.scoped = runtime.sizes.held = runtime.sizes.structure = 0
    runtime.sizes.clean = False
    runtime.state["status"] = _RUNNING
    runtime.state["fault"] = None
    start(runtime, ev.Start(runtime.process_id, event.fields))


def _drop_incident(runtime: Runtime) -> None:
    incident = runtime.state.pop("incident", None)
    if incident is not None:
        runtime.sizes.held -= json_size(incident, runtime.limits.max_state_size)[0] + 16


def _in_handler(runtime: Runtime, path: str) -> bool:
    """Whether ``path`` is an activity of a fault handler (``<block>_f<k>_...``)."""
    return any(segment.startswith("f") for segment in path.split("_"))


def _ancestors(runtime: Runtime, path: str) -> list[str]:
    """The blocks around ``path``, outermost (the root) first."""
    found: list[str] = []
    parent = runtime.spec(path).parent
    while parent is not None:
        found.append(parent)
        parent = runtime.spec(parent).parent
    return found[::-1]


def _enter(runtime: Runtime, block: str, child: str) -> bool:
    """Make ``child`` the current child of ``block``, whose node is made if it has ended;
    False for a ``foreach`` that has ended (it must start again)."""
    spec = runtime.spec(block)
    node = runtime.nodes.get(block)
    if node is None:
        if isinstance(spec, Foreach):
            return False
        runtime.add_node(block)
        if isinstance(spec, Block):
            runtime.open_scope(spec)
    elif "h" in node:  # it was running a fault handler: back to its own children
        runtime.set_node(block, {"n": node["n"]})
        runtime.forget_fault(block)
    if isinstance(spec, All):
        runtime.update_node(block, left=1)
    elif isinstance(spec, Block):
        children = [c.path for c in spec.children]
        runtime.update_node(block, i=children.index(child))
    return True
