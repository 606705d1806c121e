"""Where an instance stands: the activity tree of its definition, each activity with its state.

``describe(definition, state, journal)`` is what ``bureaucratctl show --tree`` prints and what the
web console draws. It is pure, like the rest of the engine, and reads the state without trusting
it (a ``broken`` instance may hold anything): what it cannot read it leaves out.

The state keeps a node only for the activities in progress, so the rest is inferred:

- in a sequence-like block (process, sequence, case, while, foreach, a handler) whose node runs
  child ``i``, the children before it are done and those after it not started;
- in an ``all`` in progress, a child without a node is done, unless the journal says it was
  ``skipped`` (a sibling faulted as it started) or a suspended instance has it still to start;
- in a switch in progress, the case with a node runs and the others are skipped;
- a block running a fault handler was cut short: its other children were cancelled (or done
  before the fault, which only the journal tells), its other handlers are skipped;
- in a completed instance everything that ran is done; a ``faulted`` one has the activity that
  raised the fault, and every block the fault went up through, ``faulted``; a ``terminated`` one
  has what was pending ``cancelled``. A ``suspended`` instance has its incident's activity
  ``faulted``, everything else as it stands; a ``paused`` one keeps every state.

What the state forgets, the journal (``(activity id, kind)`` pairs, oldest first) refines: which
switch case or loop body ran in a finished block (an activity that waits, or raises a fault,
always leaves a record, so a subtree that holds one and left none did not run), what was done
or cancelled when an instance or a block was cut short. Without it, a finished switch's cases
and an unused handler are ``skipped`` and what a cut-short block held is ``cancelled``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bureaucrat.definition.model import (
    Action,
    Activity,
    All,
    Assign,
    Await,
    Block,
    Call,
    Case,
    Definition,
    Delay,
    Fault,
    FaultHandler,
    Foreach,
    Switch,
    While,
)
from bureaucrat.engine.state import State, activity_id, path_of

Journal = Iterable[tuple[str, str] | tuple[str, str, Mapping[str, Any]]]
"""The instance's journal as ``(activity id, kind)`` pairs, oldest first, or ``(activity id,
kind, details)``: then a ``handled`` record also tells which handler ran."""


class ActivityState(enum.StrEnum):
    NOT_STARTED = "not_started"
    ACTIVE = "active"
    """A block in progress."""
    WAITING = "waiting"
    """An activity waiting for the outside world: see ``WaitingOn``."""
    DONE = "done"
    FAULTED = "faulted"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    """Not run, and will not run: a switch case not chosen, a fault handler not needed."""


class WaitingOn(enum.StrEnum):
    WORKITEM = "workitem"
    TIMER = "timer"
    RETRY = "retry"
    """A timer before the next attempt of an action that answered ``error``."""
    EVENT = "event"
    SUBPROCESS = "subprocess"
    FAILED = "failed"
    """An action that answered ``error`` past its retries: it waits for an operator's retry."""


class Role(enum.StrEnum):
    """How a view hangs from its parent: an activity child, a switch's case, a fault handler."""

    ACTIVITY = "activity"
    CASE = "case"
    HANDLER = "handler"


@dataclass(frozen=True, slots=True)
class ActivityView:
    """One activity (or switch case, or fault handler) of an instance, and where it stands.

    ``id`` is the wire id, ``path`` the path in the definition, ``element`` the XML element,
    ``label`` what tells it apart (participant, event, condition...). ``waiting_on`` says what
    a ``waiting`` activity waits for and ``detail`` names it (workitem, timer, event, subprocess
    id, or the error of a failed action; a fault's code and message). ``round`` is a running
    loop's round (from 1) and ``of`` a foreach's number of elements.
    """

    id: str
    path: str
    element: str
    label: str
    role: Role
    line: int
    state: ActivityState
    waiting_on: WaitingOn | None = None
    detail: str | None = None
    round: int | None = None
    of: int | None = None
    children: tuple[ActivityView, ...] = ()

    def walk(self) -> Iterator[ActivityView]:
        """This view and every view below it, depth first, in document order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, path: str) -> ActivityView | None:
        return next((view for view in self.walk() if view.path == path), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "element": self.element,
            "label": self.label,
            "role": self.role.value,
            "line": self.line,
            "state": self.state.value,
            "waiting_on": None if self.waiting_on is None else self.waiting_on.value,
            "detail": self.detail,
            "round": self.round,
            "of": self.of,
            "children": [child.to_json() for child in self.children],
        }


class _Cut(enum.Enum):
    """What a child inherits from a block that was cut short (terminated, faulted, or caught a
    fault): its own fate is in the journal."""

    SHORT = "cut short"


_ENDED = _Cut.SHORT
Implied = ActivityState | _Cut
_WAITERS = (Action, Await, Call, Delay, Fault)
"""Activities that always leave a journal record when they run to the end."""


def describe(definition: Definition, state: State, journal: Journal | None = None) -> ActivityView:
    """The activity tree of ``definition`` with the states read from the instance's ``state``
    (and its ``journal``, if given, for what the state no longer holds)."""
    return _Describer(definition, state, journal).root()


class _Describer:
    def __init__(self, definition: Definition, state: State, journal: Journal | None) -> None:
        self.definition = definition
        self.pid = str(state.get("id", ""))
        self.status = state.get("status")
        self.nodes = _dict(state.get("nodes"))
        self.scopes = _dict(state.get("scopes"))
        self.awaits = _dict(state.get("awaits"))
        self.fault_path, self.fault_text = self._fault(state)
        self.incident_path, self.incident_text = self._incident(state)
        self.pending = self._agenda(state)
        self.has_journal = journal is not None
        self.last: dict[str, str] = {}
        self.ran: set[str] = set()
        self.handled: set[str] = set()
        self.skipped: dict[str, set[str]] = {}
        """The branches of each ``all`` that its last run did not start."""
        for record in journal or ():
            self._learn(record[0], record[1], record[2] if len(record) > 2 else {})

    # what the state and the journal say -------------------------------------------------------

    def _fault(self, state: State) -> tuple[str | None, str | None]:
        fault = state.get("fault")
        if self.status != "faulted" or not isinstance(fault, dict):
            return None, None
        return self._path(fault.get("activity")), _fault_text(fault)

    def _incident(self, state: State) -> tuple[str | None, str | None]:
        incident = state.get("incident")
        if self.status != "suspended" or not isinstance(incident, dict):
            return None, None
        return self._path(incident.get("activity")), _fault_text(incident)

    def _agenda(self, state: State) -> set[str]:
        """What a suspended instance's incident has still to start when it resumes."""
        incident = state.get("incident")
        agenda = incident.get("agenda") if isinstance(incident, dict) else None
        if self.status != "suspended" or not isinstance(agenda, list):
            return set()
        return {e[0] for e in agenda if isinstance(e, list) and e and isinstance(e[0], str)}

    def _path(self, activity: Any) -> str | None:
        return path_of(self.pid, activity) if isinstance(activity, str) else None

    def _learn(self, activity: str, kind: str, details: Mapping[str, Any]) -> None:
        path = self._path(activity)
        if path is None:
            return
        handler = self._path(details.get("handler")) if isinstance(details, Mapping) else None
        if kind == "handled" and handler is not None:
            self.ran.update(_prefixes(handler))
        if not (kind in ("cancelled", "incident") and self.last.get(path) == "fault"):
            self.last[path] = kind  # what faults is then cancelled, or an incident: it faulted
        if kind == "handled":
            self.handled.add(path)
        if kind == "skipped":
            self.skipped.setdefault(path.rpartition("_")[0], set()).add(path)
        elif kind != "ignored":
            self.ran.update(_prefixes(path))
            if self.skipped:  # a record in one of its branches: a later run of the all
                for prefix in _prefixes(path):
                    block, _, index = prefix.rpartition("_")
                    if index.isdigit():
                        self.skipped.pop(block, None)

    def _faulted_through(self, path: str, child: ActivityView) -> bool:
        """Whether a fault of ``child`` went up through the block at ``path``: a fault in a
        handler always does, one in its body unless the block caught it."""
        if child.state is not ActivityState.FAULTED:
            return False
        return child.role is Role.HANDLER or path not in self.handled

    def _fault_went_through(self, path: str) -> bool:
        """Whether the fault that ended the instance went up through ``path`` (a block or a
        handler above the activity that raised it: nothing there caught it)."""
        fault = self.fault_path
        return fault is not None and (path == "" or fault.startswith(path + "_"))

    def _evidence(self, path: str) -> bool:
        """Whether the journal shows the activity at ``path`` (or one below it) running."""
        return path in self.ran

    # the tree ---------------------------------------------------------------------------------

    def root(self) -> ActivityView:
        implied: Implied
        if self.status == "completed":
            implied = ActivityState.DONE
        elif self.status in ("faulted", "terminated"):
            implied = _ENDED
        else:
            implied = ActivityState.NOT_STARTED
        return self.view(self.definition.root, Role.ACTIVITY, implied)

    def view(self, spec: Activity, role: Role, implied: Implied) -> ActivityView:
        path = spec.path
        node = _dict(self.nodes.get(path)) if path in self.nodes else None
        fields: dict[str, Any] = {}
        if node is not None:
            state, fields = self._live(spec, node)
            children = self._children(spec, node, state)
        else:
            children = self._children(spec, None, implied)
            state = self._settle(spec, implied, children)
        if path == self.incident_path:
            state, fields = ActivityState.FAULTED, {"detail": self.incident_text}
        elif path == self.fault_path:
            state, fields = ActivityState.FAULTED, {"detail": self.fault_text}
        elif self._fault_went_through(path):
            state, fields = ActivityState.FAULTED, {}
        element = "default" if isinstance(spec, Case) and spec.is_default else spec.tag
        return ActivityView(
            id=activity_id(self.pid, path),
            path=path,
            element=element,
            label=_label(spec),
            role=role,
            line=spec.line,
            state=state,
            children=children,
            **fields,
        )

    def _live(self, spec: Activity, node: dict[str, Any]) -> tuple[ActivityState, dict[str, Any]]:
        """The state of an activity that has a node, and what it waits on."""
        waiting = ActivityState.WAITING
        if isinstance(spec, Action):
            if node.get("failed"):
                return waiting, _on(WaitingOn.FAILED, node.get("error"))
            if "retry_timer" in node:
                return waiting, _on(WaitingOn.RETRY, node["retry_timer"])
            if "wi" in node:
                return waiting, _on(WaitingOn.WORKITEM, node["wi"])
        elif isinstance(spec, Delay) and "timer" in node:
            return waiting, _on(WaitingOn.TIMER, node["timer"])
        elif isinstance(spec, Await) and spec.path in self.awaits:
            return waiting, _on(WaitingOn.EVENT, self.awaits[spec.path])
        elif isinstance(spec, Call) and "child" in node:
            return waiting, _on(WaitingOn.SUBPROCESS, node["child"])
        elif isinstance(spec, While):
            return ActivityState.ACTIVE, {"round": _count(node.get("r"))}
        elif isinstance(spec, Foreach):
            return ActivityState.ACTIVE, self._iteration(spec.path)
        return ActivityState.ACTIVE, {}

    def _iteration(self, path: str) -> dict[str, Any]:
        scope = _dict(self.scopes.get(path))
        selection = scope.get("inst:selection")
        return {
            "round": _count(scope.get("inst:iteration")),
            "of": len(selection) if isinstance(selection, list) else None,
        }

    def _settle(
        self, spec: Activity, implied: Implied, children: tuple[ActivityView, ...]
    ) -> ActivityState:
        """The state of an activity without a node, from what its parent implies."""
        if isinstance(implied, ActivityState):
            return implied
        path = spec.path
        kind = self.last.get(path)
        if path == "" and self.status == "terminated":
            return ActivityState.CANCELLED
        if kind == "fault" or any(self._faulted_through(path, child) for child in children):
            return ActivityState.FAULTED  # raised here, or went up through here
        if kind == "cancelled" or any(child.state is ActivityState.CANCELLED for child in children):
            return ActivityState.CANCELLED
        if self._evidence(path):
            return ActivityState.DONE
        return ActivityState.NOT_STARTED if self.has_journal else ActivityState.CANCELLED

    # children ---------------------------------------------------------------------------------

    def _children(
        self, spec: Activity, node: dict[str, Any] | None, state: Implied
    ) -> tuple[ActivityView, ...]:
        if isinstance(spec, Switch):
            return self._cases(spec, node, state)
        if not isinstance(spec, Block):
            return ()
        handlers = spec.context.handlers if spec.context is not None else ()
        running = node.get("h") if node is not None else None
        body = self._body(spec, node, state, running)
        if isinstance(running, int) and 0 <= running < len(handlers):
            views = [
                self._handler(handler, spec, ActivityState.SKIPPED, node if k == running else None)
                for k, handler in enumerate(handlers)
            ]
        else:
            views = [
                self._handler(handler, spec, self._handler_fate(handler, node, state), None)
                for handler in handlers
            ]
        return (*body, *views)

    def _body(
        self, spec: Block, node: dict[str, Any] | None, state: Implied, running: Any
    ) -> list[ActivityView]:
        children = spec.children
        implied: list[Implied]
        if node is not None and running is not None:
            implied = self._after_end(spec, children)  # cut short by the handler now running
        elif node is not None:
            implied = self._in_progress(spec, node, len(children))
        elif state is ActivityState.DONE and spec.path in self.handled and self.has_journal:
            implied = self._after_end(spec, children)  # it caught a fault: how far had it come?
        elif state is ActivityState.DONE:
            implied = [self._after_done(spec)] * len(children)
        elif state is _ENDED:
            implied = self._after_end(spec, children)
        else:
            implied = [state] * len(children)
        return [
            self.view(child, Role.ACTIVITY, fate)
            for child, fate in zip(children, implied, strict=True)
        ]

    def _after_done(self, spec: Block) -> ActivityState:
        """What the children of a finished block did: they ran, unless it is a loop that (the
        journal shows) ran no round. Without a journal, or when nothing in its body would leave
        a record, assume it ran."""
        if not isinstance(spec, While | Foreach) or not self.has_journal:
            return ActivityState.DONE
        if self._evidence(spec.path) or not any(_records(child) for child in spec.children):
            return ActivityState.DONE
        return ActivityState.SKIPPED

    def _after_end(self, block: Block, children: tuple[Activity, ...]) -> list[Implied]:
        """What the children of a block cut short did: in an ``all`` that ran, every child
        started (one the journal does not show finished at once); in a sequence, those before
        the last one the journal shows running are done; the journal tells the others' fate."""
        if isinstance(block, All) and self._evidence(block.path) and children is block.children:
            return [
                ActivityState.NOT_STARTED
                if self._unstarted(block, k)
                else _ENDED
                if self._evidence(c.path)
                else ActivityState.DONE
                for k, c in enumerate(children)
            ]
        shown = [k for k, child in enumerate(children) if self._evidence(child.path)]
        last = max(shown, default=-1)
        return [ActivityState.DONE if k < last else _ENDED for k in range(len(children))]

    def _in_progress(self, block: Block, node: dict[str, Any], count: int) -> list[Implied]:
        """What the children of a block in progress imply: in an ``all``, a child without a
        node is done, unless it is still to start; in a sequence-like block, those before
        ``i`` are done, the others not started."""
        if isinstance(block, All) and "h" not in node:
            return [
                ActivityState.NOT_STARTED if self._unstarted(block, k) else ActivityState.DONE
                for k in range(count)
            ]
        index = node.get("i")
        index = index if isinstance(index, int) else 0
        return [
            ActivityState.DONE if k < index else ActivityState.NOT_STARTED for k in range(count)
        ]

    def _unstarted(self, block: All, k: int) -> bool:
        """Whether branch ``k`` of ``block`` never started: the journal says the all's last
        run skipped it, or it is on a suspended instance's agenda, to start on resume."""
        path = block.children[k].path
        return path in self.skipped.get(block.path, ()) or path in self.pending

    def _cases(
        self, spec: Switch, node: dict[str, Any] | None, state: Implied
    ) -> tuple[ActivityView, ...]:
        cases = spec.cases
        if node is not None:
            running = [case.path in self.nodes for case in cases]
            fates: list[Implied] = [
                ActivityState.NOT_STARTED if r or not any(running) else ActivityState.SKIPPED
                for r in running
            ]
        elif state is ActivityState.DONE:
            fates = [
                ActivityState.DONE if self._evidence(case.path) else ActivityState.SKIPPED
                for case in cases
            ]
        elif state is _ENDED:
            chosen = any(self._evidence(case.path) for case in cases)
            fates = [
                _ENDED if self._evidence(case.path) or not chosen else ActivityState.SKIPPED
                for case in cases
            ]
        else:
            fates = [state] * len(cases)
        return tuple(
            self.view(case, Role.CASE, fate) for case, fate in zip(cases, fates, strict=True)
        )

    def _handler_fate(
        self, handler: FaultHandler, node: dict[str, Any] | None, state: Implied
    ) -> Implied:
        """A handler of a block that runs none: not started while the block runs (a fault may
        come), else skipped, unless the journal shows it ran."""
        if node is not None or state is ActivityState.NOT_STARTED:
            return ActivityState.NOT_STARTED
        if self._evidence(handler.path):
            return ActivityState.DONE if state is ActivityState.DONE else _ENDED
        return ActivityState.SKIPPED

    def _handler(
        self,
        handler: FaultHandler,
        block: Block,
        implied: Implied,
        node: dict[str, Any] | None,
    ) -> ActivityView:
        """A fault handler of ``block``: running (``node`` is the block's), or as implied."""
        activities = handler.activities
        fates: list[Implied]
        if node is not None:
            fates = self._in_progress(block, node, len(activities))
        elif implied is _ENDED:
            fates = self._after_end(block, activities)
        else:
            fates = [implied] * len(activities)
        children = tuple(
            self.view(child, Role.ACTIVITY, fate)
            for child, fate in zip(activities, fates, strict=True)
        )
        state = _handler_state(node, implied, children)
        if self._fault_went_through(handler.path):
            state = ActivityState.FAULTED
        return ActivityView(
            id=activity_id(self.pid, handler.path),
            path=handler.path,
            element="default" if handler.is_default else "case",
            label=", ".join(handler.codes) if handler.codes else "default",
            role=Role.HANDLER,
            line=handler.line,
            state=state,
            children=children,
        )


def _handler_state(
    node: dict[str, Any] | None, implied: Implied, children: tuple[ActivityView, ...]
) -> ActivityState:
    if node is not None:
        return ActivityState.ACTIVE
    if isinstance(implied, ActivityState):
        return implied
    states = {child.state for child in children}
    if ActivityState.FAULTED in states:
        return ActivityState.FAULTED
    return ActivityState.CANCELLED if ActivityState.CANCELLED in states else ActivityState.DONE


def _records(spec: Activity) -> bool:
    """Whether running ``spec`` to its end always leaves a journal record."""
    if isinstance(spec, _WAITERS):
        return True
    if isinstance(spec, Switch):
        return bool(spec.cases) and all(_records(case) for case in spec.cases)
    if isinstance(spec, Block) and not isinstance(spec, While | Foreach):
        return any(_records(child) for child in spec.children)
    return False


def _label(spec: Activity) -> str:
    match spec:
        case Action():
            return spec.participant
        case Await():
            return spec.event + (f" if {_conditions(spec.conditions)}" if spec.conditions else "")
        case Case():
            return "default" if spec.is_default else _conditions(spec.conditions)
        case While():
            return _conditions(spec.conditions)
        case Foreach():
            return spec.select
        case Delay():
            return f"{spec.duration:g} s"
        case Call():
            return f"${spec.process}"
        case Assign():
            return spec.property
        case Fault():
            return spec.code
        case Block() if spec.parent is None:
            return getattr(spec, "name", None) or ""
    return ""


def _conditions(conditions: tuple[Any, ...]) -> str:
    return " or ".join(condition.source for condition in conditions)


def _on(what: WaitingOn, detail: Any) -> dict[str, Any]:
    return {"waiting_on": what, "detail": None if detail is None else str(detail)}


def _fault_text(fault: dict[str, Any]) -> str:
    code, message = fault.get("code"), fault.get("message")
    return f"{code}: {message}" if message else str(code)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _prefixes(path: str) -> Iterator[str]:
    """``path`` and the paths of every activity (or handler) above it, the root's included."""
    yield path
    while path:
        path = path.rpartition("_")[0]
        yield path
