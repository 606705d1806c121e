"""Run a process definition in-process, with Python callables as participants.

``run_process`` is the unit-test harness for users' definitions: no broker, no database, and a
simulated clock that jumps to the next timer whenever nothing else can happen::

    result = run_process("approval.xml", {"amount": 120},
                         participants={"review": lambda payload: {**payload, "ok": True}})
    assert result.status == "completed" and result.context["ok"] is True

It drives the same pure engine as the daemon, subprocesses (``call``) included.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, assert_never

from bureaucrat.definition import Definition, is_xml_text, parse_definition
from bureaucrat.engine import commands as cmd
from bureaucrat.engine import events as ev
from bureaucrat.engine.budget import DEFAULT_LIMITS, Limits
from bureaucrat.engine.state import State, root_context
from bureaucrat.engine.step import step
from bureaucrat.errors import (
    BureaucratError,
    DefinitionError,
    ParticipantNotFoundError,
    StepLimitError,
)

Participant = Callable[[dict[str, Any]], "dict[str, Any] | None"]


@dataclass(frozen=True)
class ProcessResult:
    """How a local run ended.

    ``status`` is completed, faulted, terminated, paused, suspended (an incident), or waiting
    when nothing more could happen.
    ``calls`` lists (participant, payload sent) in dispatch order; ``trace`` the journal of
    every instance, one line each; ``state`` the root instance's final engine state.
    """

    status: str
    context: dict[str, Any]
    fault: dict[str, Any] | None
    calls: list[tuple[str, dict[str, Any]]]
    trace: list[str] = field(default_factory=list)
    state: State = field(default_factory=dict, repr=False)


def run_process(
    definition: str | Path,
    fields: dict[str, Any] | None = None,
    *,
    participants: Mapping[str, Participant] = {},
    events: Sequence[tuple[str, dict[str, Any]]] = (),
    operations: Sequence[tuple[str | None, ev.Operation]] = (),
    max_steps: int = 100_000,
    process_id: str = "process",
    check_json: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> ProcessResult:
    """Run ``definition`` (XML text or a path) to its end, or until nothing more can happen.

    A participant receives the workitem payload (the visible context plus ``"status": "done"``)
    and returns the payload to send back (None: unchanged; a missing ``status`` means done). A
    participant that raises answers ``critical`` with the exception's text as ``error``.
    ``events`` are delivered in order, each when the process has nothing else to do now and an
    ``await`` is waiting (or nothing else will ever happen). With ``check_json`` the state makes
    a JSON round trip after every step, as it would through a store, and must come back equal.
    Every step runs within ``limits``, as the daemon's steps run within its configuration's.

    ``operations`` are an operator's, applied to the process in order (``events.Pause()``,
    ``events.Resume()``, ``events.SetContext({...})``, ``events.Rerun(activity_id)``,
    ``events.Restart()`` (with the launch's fields when given none), ``events.Terminate()``),
    each as soon as a journal line containing its text has been written (ahead of anything
    else waiting to be applied), or, for ``None``, when nothing else can happen::

        run_process(xml, participants=..., operations=[
            ("dispatched process_0", events.Pause()),   # the answer that follows is held
            (None, events.Resume()),                    # and applied here
        ])
    """
    runner = _Runner(participants, max_steps, check_json, limits)
    return runner.run(
        _load(definition), dict(fields or {}), list(events), process_id, list(operations)
    )


def _load(definition: str | Path) -> Definition:
    if isinstance(definition, Path) or not is_xml_text(definition):
        return parse_definition(Path(definition).read_bytes())
    return parse_definition(definition)


_SHOWN = frozenset({"completed", "faulted", "terminated", "paused", "suspended"})
"""The statuses a result shows as they are; a running process that can go no further is
``waiting``."""


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


class _Runner:
    def __init__(
        self,
        participants: Mapping[str, Participant],
        max_steps: int,
        check_json: bool,
        limits: Limits,
    ) -> None:
        self.participants = participants
        self.max_steps = max_steps
        self.check_json = check_json
        self.limits = limits
        self.now = 0.0
        self.steps = 0
        self.instances: dict[str, tuple[Definition, State]] = {}
        self.launching: dict[str, Definition] = {}
        self.queue: deque[tuple[str, ev.Event]] = deque()
        self.timers: list[tuple[float, int, str, str]] = []
        self.order = itertools.count()
        self.cancelled: set[str] = set()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.trace: list[str] = []

    def run(
        self,
        definition: Definition,
        fields: dict[str, Any],
        events: list[tuple[str, dict[str, Any]]],
        process_id: str,
        operations: list[tuple[str | None, ev.Operation]],
    ) -> ProcessResult:
        self._apply(process_id, definition, None, ev.Start(process_id, _jsonable(fields)))
        pending_events = deque(events)
        pending_ops = deque(operations)
        searched = 0  # journal lines searched for the next operation's text
        while True:
            if pending_ops and pending_ops[0][0] is not None:
                text = pending_ops[0][0]
                found = next(
                    (i for i in range(searched, len(self.trace)) if text in self.trace[i]), None
                )
                searched = len(self.trace) if found is None else found + 1
                if found is not None:
                    self._operate(process_id, pending_ops.popleft()[1], fields)
                    continue
            if self.queue:
                pid, event = self.queue.popleft()
                if pid in self.instances:
                    definition, state = self.instances[pid]
                    self._apply(pid, definition, state, event)
                elif pid in self.launching:
                    self._apply(pid, self.launching.pop(pid), None, event)
            elif pending_events and self._awaiting():
                name, data = pending_events.popleft()
                self._deliver(name, data)
            elif self._live_timers():
                due, _, pid, timer_id = heapq.heappop(self.timers)
                self.now = max(self.now, due)
                self.queue.append((pid, ev.TimerFired(timer_id)))
            elif pending_ops and pending_ops[0][0] is None:
                searched = len(self.trace)
                self._operate(process_id, pending_ops.popleft()[1], fields)
            elif pending_events:
                name, data = pending_events.popleft()
                self._deliver(name, data)
            else:
                break
        state = self.instances[process_id][1]
        status = state["status"] if state["status"] in _SHOWN else "waiting"
        fault = state["fault"]
        return ProcessResult(
            status=status,
            context=root_context(state),
            fault=None if fault is None else {"code": fault["code"], "message": fault["message"]},
            calls=self.calls,
            trace=self.trace,
            state=state,
        )

    def _operate(self, pid: str, operation: ev.Operation, fields: dict[str, Any]) -> None:
        if isinstance(operation, ev.Restart) and not operation.fields:
            operation = ev.Restart(_jsonable(fields))
        definition, state = self.instances[pid]
        self._apply(pid, definition, state, operation)

    def _awaiting(self) -> bool:
        return any(state["awaits"] for _, state in self.instances.values())

    def _live_timers(self) -> bool:
        while self.timers and self.timers[0][3] in self.cancelled:
            heapq.heappop(self.timers)
        return bool(self.timers)

    def _deliver(self, name: str, data: dict[str, Any]) -> None:
        body = _jsonable({**data, "event": name})
        targets = [pid for pid, (_, s) in self.instances.items() if name in s["awaits"].values()]
        for pid in targets or list(self.instances)[:1]:
            self.queue.append((pid, ev.EventReceived(name, body)))

    def _apply(
        self, pid: str, definition: Definition, state: State | None, event: ev.Event
    ) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise StepLimitError(f"the process did not finish within {self.max_steps} steps")
        result = step(definition, state, event, self.now, self.limits)
        new_state = result.state
        if self.check_json:
            new_state = _jsonable(result.state)
            if new_state != result.state:
                raise BureaucratError(f"state of {pid} changed through a JSON round trip")
        self.instances[pid] = (definition, new_state)
        for command in result.commands:
            self._carry_out(pid, command)

    def _carry_out(self, pid: str, command: cmd.Command) -> None:
        match command:
            case cmd.Record():
                self._trace(command)
            case cmd.DispatchWorkitem():
                self._dispatch(pid, command)
            case cmd.StartTimer():
                heapq.heappush(self.timers, (command.due, next(self.order), pid, command.timer_id))
            case cmd.CancelTimer():
                self.cancelled.add(command.timer_id)
            case cmd.LaunchChild():
                self._launch(pid, command)
            case cmd.NotifyParent():
                finished = ev.ChildFinished(
                    command.child_id, command.status, command.context, command.fault
                )
                self.queue.append((command.parent_id, finished))
            case cmd.TerminateChild():
                self.queue.append((command.process_id, ev.Terminate("the parent ended")))
            case cmd.CancelWorkitem() | cmd.Subscribe() | cmd.Unsubscribe() | cmd.ProcessFinished():
                pass  # the state says it all: events are matched against it, results read from it
            case _:
                assert_never(command)

    def _trace(self, record: cmd.Record) -> None:
        details = " ".join(
            f"{key}={json.dumps(value, sort_keys=True)}"
            for key, value in sorted(record.details.items())
        )
        self.trace.append(f"{self.now:g} {record.kind} {record.activity} {details}".rstrip())

    def _dispatch(self, pid: str, command: cmd.DispatchWorkitem) -> None:
        payload = _jsonable(command.message["payload"])
        self.calls.append((command.participant, _jsonable(payload)))
        participant = self.participants.get(command.participant)
        if participant is None:
            known = ", ".join(sorted(self.participants)) or "none"
            raise ParticipantNotFoundError(
                f"participant {command.participant!r} (activity {command.activity}) was not "
                f"given to run_process; participants given: {known}"
            )
        try:
            answer = participant(payload)
            answered = payload if answer is None else dict(answer)
            answered.setdefault("status", "done")
        except Exception as error:  # a participant's failure is the process's business
            answered = {**_jsonable(command.message["payload"])}
            answered.update(status="critical", error=str(error))
        response = {**command.message, "payload": _jsonable(answered)}
        self.queue.append((pid, ev.ParticipantResponse(response)))

    def _launch(self, pid: str, command: cmd.LaunchChild) -> None:
        try:
            definition = parse_definition(command.definition)
        except DefinitionError as error:
            fault = {"code": "DefinitionError", "message": str(error)}
            finished = ev.ChildFinished(command.process_id, "faulted", {}, fault)
            self.queue.append((pid, finished))
            return
        start = ev.Start(command.process_id, command.fields, ev.ParentLink(pid, command.activity))
        self.launching[command.process_id] = definition
        self.queue.append((command.process_id, start))
