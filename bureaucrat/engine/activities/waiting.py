"""Activities that wait for the outside world: ``action``, ``call``, ``delay`` and ``await``,
and how each reacts to what it waits for.

Their nodes hold the ids of what they wait on (``wi`` a workitem, ``timer`` and ``retry_timer``
timers, ``child`` a subprocess), also kept in the state's indexes so that an incoming message
finds its activity without a search. ``discard`` releases all of them when the activity is
cancelled. A node that keeps a copy of what it sent, or an error, keeps its size in ``sz``:
its share of the state's size (``sizes``).

Whatever goes out counts against the step's output and whatever comes back against the
state's size: a workitem, a subprocess or an answer that would pass a limit faults
``LimitExceeded`` at its activity instead.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from bureaucrat.bounds import MAX_PROCESS_ID, utf8_length
from bureaucrat.definition.model import Action, Activity, Await, Call, Delay
from bureaucrat.engine import commands as cmd
from bureaucrat.engine import sizes
from bureaucrat.engine.budget import error_text
from bureaucrat.engine.commands import TimerKind

if TYPE_CHECKING:
    from bureaucrat.engine.runtime import Node, Runtime

DONE, CRITICAL, ERROR = "done", "critical", "error"


def _start_timer(runtime: Runtime, path: str, seconds: float, kind: TimerKind) -> str:
    timer_id = f"{runtime.aid(path)}.{runtime.next_id()}"
    runtime.state["timers"][timer_id] = path
    runtime.emit(cmd.StartTimer(timer_id, runtime.aid(path), runtime.now + seconds, kind))
    return timer_id


def _cancel_timer(runtime: Runtime, timer_id: str | None) -> None:
    path = runtime.state["timers"].pop(timer_id, None) if timer_id is not None else None
    if timer_id is not None and path is not None:
        runtime.emit(cmd.CancelTimer(timer_id, runtime.aid(path)))


def discard(runtime: Runtime, spec: Activity, node: Node) -> None:
    """Release the workitem, timers, subscription or subprocess the activity waits on."""
    aid = runtime.aid(spec.path)
    workitem = node.get("wi")
    if workitem is not None and runtime.state["workitems"].pop(workitem, None) is not None:
        runtime.emit(cmd.CancelWorkitem(workitem, aid))
    for key in ("timer", "retry_timer"):
        timer = node.get(key)
        if timer is not None and runtime.state["timers"].pop(timer, None) is not None:
            runtime.emit(cmd.CancelTimer(timer, aid))
    event = runtime.state["awaits"].pop(spec.path, None)
    if event is not None:
        runtime.sizes.structure -= len(event) + 8
        runtime.emit(cmd.Unsubscribe(event, aid))
    child = node.get("child")
    if child is not None and runtime.state["children"].pop(child, None) is not None:
        runtime.emit(cmd.TerminateChild(child, aid))


# action -----------------------------------------------------------------------------------------


def start_action(runtime: Runtime, spec: Action) -> None:
    """``<action participant=...>``: dispatches a workitem; completes on a ``done`` answer."""
    dispatch(runtime, spec, attempt=1)


def dispatch(runtime: Runtime, spec: Action, attempt: int) -> None:
    path, aid = spec.path, runtime.aid(spec.path)
    context = runtime.context(path)
    size = sizes.send(runtime, path, "the workitem", context, 3 * len(aid) + sizes.ENVELOPE)
    if size is None:
        return
    workitem_id = f"{aid}.{runtime.next_id()}"
    message = {
        "name": "response",
        "target": aid,
        "origin": aid,
        "payload": {**context, "status": DONE},
        "workitem_id": workitem_id,
        "process_id": runtime.process_id,
    }
    node: Node = {"n": runtime.nodes[path]["n"], "wi": workitem_id, "sent": context}
    node["attempt"] = attempt
    node["sz"] = size
    runtime.state["workitems"][workitem_id] = path
    if spec.timeout is not None:
        node["timer"] = _start_timer(runtime, path, spec.timeout, TimerKind.TIMEOUT)
    runtime.set_node(path, node)
    kind = spec.kind.value if spec.kind is not None else None
    runtime.emit(
        cmd.DispatchWorkitem(workitem_id, aid, spec.participant, kind, spec.queue, message, attempt)
    )
    runtime.record("dispatched", path, participant=spec.participant, workitem=workitem_id)


def answer(runtime: Runtime, spec: Action, payload: dict[str, Any]) -> None:
    """A participant answered the workitem the action waits for."""
    path = spec.path
    node = runtime.nodes[path]
    status = payload.get("status")
    if status not in (DONE, CRITICAL, ERROR):  # progress: journalled, still waiting
        shown = status if status is None or isinstance(status, int | float) else error_text(status)
        runtime.record("reported", path, status=shown)
        runtime.ignored = True
        return
    runtime.state["workitems"].pop(node["wi"], None)
    _cancel_timer(runtime, node.get("timer"))
    runtime.record("answered", path, status=status, workitem=node["wi"])
    error = payload.get("error")
    if status == DONE:
        if runtime.apply_changes(path, node["sent"], payload):
            runtime.complete(path)
    elif status == CRITICAL:
        runtime.fault(path, "ActionError", "" if error is None else error_text(error))
    else:
        _failed(runtime, spec, node, "" if error is None else error_text(error))


def _failed(runtime: Runtime, spec: Action, node: Node, error: str) -> None:
    attempt = int(node["attempt"])
    base: Node = {"n": node["n"], "attempt": attempt}
    if attempt <= spec.retries:
        runtime.record("retry", spec.path, attempt=attempt + 1, error=error)
        if spec.retry_delay > 0:
            timer = _start_timer(runtime, spec.path, spec.retry_delay, TimerKind.RETRY)
            runtime.set_node(spec.path, {**base, "retry_timer": timer})
        else:
            dispatch(runtime, spec, attempt + 1)
        return
    size = 6 * len(error) + 2  # at most 6 bytes a character: a control character's \u escape
    runtime.set_node(spec.path, {**base, "failed": True, "error": error, "sz": size})
    runtime.sizes.held += size
    runtime.sizes.clean = False
    runtime.record("failed", spec.path, attempts=attempt, error=error)


def retry(runtime: Runtime, spec: Action) -> None:
    """An operator asked to retry a failed action: dispatch it afresh, retries renewed."""
    runtime.record("retry", spec.path, attempt=1, operator=True)
    dispatch(runtime, spec, attempt=1)


def action_timer(runtime: Runtime, spec: Action, timer_id: str) -> None:
    node = runtime.nodes[spec.path]
    if node.get("retry_timer") == timer_id:
        dispatch(runtime, spec, int(node["attempt"]) + 1)
    elif node.get("timer") == timer_id:
        discard(runtime, spec, {"wi": node.get("wi")})
        runtime.fault(
            spec.path,
            "TimeoutError",
            f"participant {spec.participant} did not answer within {spec.timeout:g} s",
        )


# delay, await, call -----------------------------------------------------------------------------


def start_delay(runtime: Runtime, spec: Delay) -> None:
    """``<delay duration="s"/>``: completes when its timer fires."""
    timer = _start_timer(runtime, spec.path, spec.duration, TimerKind.DELAY)
    runtime.update_node(spec.path, timer=timer)


def start_await(runtime: Runtime, spec: Await) -> None:
    """``<await event="e">``: completes on an event ``e`` for which a condition holds."""
    runtime.state["awaits"][spec.path] = spec.event
    runtime.sizes.structure += len(spec.event) + 8
    runtime.emit(cmd.Subscribe(spec.event, runtime.aid(spec.path)))
    if spec.timeout is not None:
        timer = _start_timer(runtime, spec.path, spec.timeout, TimerKind.TIMEOUT)
        runtime.update_node(spec.path, timer=timer)


def await_event(runtime: Runtime, spec: Await, data: dict[str, Any]) -> None:
    """Offer an event to a waiting ``await``, which takes it when a condition holds. An event
    on which a condition cannot be evaluated is not taken (the journal says why): the await
    waits on."""
    holds, problem = runtime.test(spec.conditions, spec.path, data)
    if not holds:
        reason = {} if problem is None else {"reason": problem}
        runtime.record("event", spec.path, event=spec.event, taken=False, **reason)
        return
    runtime.record("event", spec.path, event=spec.event, taken=True)
    discard(runtime, spec, runtime.nodes[spec.path])
    runtime.complete(spec.path)


def await_timeout(runtime: Runtime, spec: Await) -> None:
    discard(runtime, spec, {})
    runtime.fault(
        spec.path,
        "TimeoutError",
        f"event {spec.event} did not arrive within {spec.timeout:g} s",
    )


def start_call(runtime: Runtime, spec: Call) -> None:
    """``<call process="$p"/>``: runs the definition in property ``p`` as a subprocess with the
    caller's visible context as fields; completes with the subprocess, taking its changes."""
    context = runtime.context(spec.path)
    source = context.get(spec.process)
    if not isinstance(source, str) or not source.strip():
        runtime.fault(
            spec.path,
            "CallError",
            f'call process="${spec.process}": the property holds no process definition',
        )
        return
    extra = 4 * len(source) + 2 * len(runtime.aid(spec.path)) + sizes.ENVELOPE
    size = sizes.send(runtime, spec.path, "the subprocess's launch", context, extra)
    if size is None:
        return
    child = child_id(runtime.process_id, runtime.next_id())
    runtime.state["children"][child] = spec.path
    digest = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
    runtime.update_node(spec.path, child=child, sent=context, definition=digest, sz=size)
    runtime.emit(cmd.LaunchChild(child, runtime.aid(spec.path), source, context))
    runtime.record("launched", spec.path, child=child)


def child_id(process_id: str, number: int) -> str:
    """The id of a subprocess: ``<pid>.<n>``; where a chain of calls would make it longer than
    a process id may be, a prefix of the caller's id and a digest of the whole of it."""
    child = f"{process_id}.{number}"
    if utf8_length(child) <= MAX_PROCESS_ID:
        return child
    encoded = process_id.encode("utf-8", "surrogatepass")
    prefix = encoded[:48].decode("utf-8", "ignore")
    return f"{prefix}~{hashlib.sha256(encoded).hexdigest()[:32]}.{number}"


def child_finished(
    runtime: Runtime,
    spec: Call,
    status: str,
    context: dict[str, Any],
    fault: dict[str, Any] | None,
) -> None:
    node = runtime.nodes[spec.path]
    child = node["child"]
    runtime.record("child", spec.path, child=child, status=status)
    if status == "completed":
        if runtime.apply_changes(spec.path, node["sent"], context):
            runtime.complete(spec.path)
    elif status == "faulted":
        fault = fault or {}
        code = error_text(fault.get("code", "Fault"))
        runtime.fault(spec.path, code, error_text(fault.get("message", "")))
    else:
        runtime.fault(spec.path, "TerminatedError", f"subprocess {child} was terminated")
