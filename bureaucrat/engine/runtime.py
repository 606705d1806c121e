"""The machinery of one step: a working copy of the state, the agenda and the commands.

A ``Runtime`` is created for one event and thrown away after it. It copies the parts of the state
it changes (never the caller's dicts), derives ids from the state's counter, and collects the
commands of the step in order. Activities start through an agenda rather than by recursion, so a
sequence of thousands of instantaneous activities needs no deep stack; completion climbs the tree
directly, which is bounded by the nesting depth of the definition.

It also keeps the step within its ``Limits`` (``budget``): every start and every expression
spends from one ``Budget``; what is written and sent is measured by ``sizes``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from bureaucrat.definition.expressions import Expression
from bureaucrat.definition.limits import Budget, json_size
from bureaucrat.definition.model import Activity, All, Block, Definition, Foreach, While
from bureaucrat.engine import commands as cmd
from bureaucrat.engine.activities import child_done, discard, start
from bureaucrat.engine.activities.blocks import catch
from bureaucrat.engine.budget import LIMIT_EXCEEDED, Limits, error_text, over_budget
from bureaucrat.engine.context import apply_changes, chain, visible, write
from bureaucrat.engine.sizes import Sizes, final_context, scope_size
from bureaucrat.engine.state import State, Status, activity_id
from bureaucrat.errors import ExpressionError

START_UNITS = 100
"""Budget units an activity start costs: the engine's work to start it and to complete it
(about 5 microseconds)."""
EVAL_UNITS = 20
"""Budget units an expression costs before its first node: its context gathered, an evaluator
taken and given back (about a microsecond)."""
FAULT_UNITS = 600
"""Budget units a fault costs: its message and record, the search for a handler, what it
cancels (about 30 microseconds)."""

_RUNNING = Status.RUNNING.value
Node = dict[str, Any]
Token = tuple[int | None, int | None]
"""What a scheduled start remembers of its parent's node: its number and its fault handler."""


class Runtime:
    """The state being evolved by one step, with the operations activities use."""

    def __init__(self, definition: Definition, state: State, now: float, bounds: Limits) -> None:
        self.definition = definition
        self.now = now
        self.state: State = dict(state)
        for key in ("scopes", "nodes", "workitems", "timers", "awaits", "children"):
            self.state[key] = dict(state[key])
        self.nodes: dict[str, Node] = self.state["nodes"]
        self.scopes: dict[str, dict[str, Any]] = self.state["scopes"]
        self._copied_scopes: set[str] = set()
        self.commands: list[cmd.Command] = []
        self._agenda: deque[tuple[str, str | None, Token | None]] = deque()
        self._starts = 0
        self._started_by: dict[tuple[str, int | None], int] = {}
        """Activities started in this step by each block, by its path and node number."""
        self.ignored = False
        """Set when the event changes nothing: the step then returns the state it was given."""
        self.limits = bounds
        self._start_limit = bounds.max_starts
        self.budget = Budget(bounds.step_budget)
        self._budget_renewed = False
        self.sizes = Sizes(self.state, bounds)
        self._pid = str(state["id"])

    # ids and commands -------------------------------------------------------------------------

    @property
    def process_id(self) -> str:
        return self._pid

    @property
    def running(self) -> bool:
        return bool(self.state["status"] == _RUNNING)

    def aid(self, path: str) -> str:
        return activity_id(self._pid, path)

    def next_id(self) -> int:
        self.state["seq"] = int(self.state["seq"]) + 1
        return int(self.state["seq"])

    def emit(self, command: cmd.Command) -> None:
        self.commands.append(command)

    def record(self, kind: str, path: str, **details: Any) -> None:
        self.commands.append(cmd.Record(kind, activity_id(self._pid, path), details))

    def spec(self, path: str) -> Activity:
        return self.definition.activities[path]

    # nodes and the agenda ---------------------------------------------------------------------

    def set_node(self, path: str, node: Node) -> None:
        """Replace the node at ``path``; what the old one held no longer counts (``sizes``)."""
        old = self.nodes.get(path)
        if old is not None and "sz" in old:
            self.sizes.held -= old["sz"]
        self.nodes[path] = node

    def add_node(self, path: str) -> None:
        """The activity at ``path`` is in progress: its node, with its number."""
        self.nodes[path] = {"n": self.next_id()}
        sizes = self.sizes
        sizes.structure += sizes.node_base + 7 * len(path)
        sizes.clean = False

    def _forget(self, path: str, node: Node) -> None:
        """A node has gone: what it took of the state's size no longer counts."""
        sizes = self.sizes
        sizes.structure -= sizes.node_base + 7 * len(path)
        sizes.credit = 0
        if "sz" in node:
            sizes.held -= node["sz"]

    def update_node(self, path: str, **changes: Any) -> Node:
        node = {**self.nodes[path], **changes}
        self.nodes[path] = node
        return node

    def schedule(self, path: str, parent: str | None) -> None:
        """Start the activity at ``path`` after the work in hand, if its parent still runs as it
        does now: not cancelled, restarted, or switched to a fault handler meanwhile."""
        token = None if parent is None else _token(self.nodes[parent])
        self._agenda.append((path, parent, token))

    def drain(self) -> None:
        while self._agenda and self.running:
            path, parent, token = self._agenda.popleft()
            if parent is not None and _token(self.nodes.get(parent, {})) != token:
                # the parent was cancelled, restarted or caught a fault meanwhile
                self._unstarted(path, parent)
                continue
            self._starts += 1
            origin = parent if parent is not None else path
            if token is not None:
                rounds = self._started_by
                key = (origin, token[0])
                rounds[key] = rounds.get(key, 0) + 1
            if self._starts > self._start_limit:
                self._put_back(path, parent, token)
                self._too_many_starts(self._culprit(origin))
                continue
            budget = self.budget
            budget.left -= START_UNITS
            if budget.left < 0:
                self._put_back(path, parent, token)
                self.budget_spent(origin)
                continue
            self.add_node(path)
            start(self, self.spec(path))

    def _put_back(self, path: str, parent: str | None, token: Token | None) -> None:
        """A start that met a limit goes back on the agenda, for the fault the limit raises (at
        its parent, or a loop above) to decide its fate, as it does for the rest: whatever
        catches the fault cancels or restarts that parent, so the start is dropped."""
        if parent is not None:
            self._agenda.appendleft((path, parent, token))

    def _unstarted(self, path: str, parent: str | None) -> None:
        """A start scheduled in this step that will not happen. For a branch of an ``all`` the
        journal says so (``skipped``): its siblings started, and a branch that finished at once
        leaves no record, so nothing else would tell the two apart."""
        if parent is None or path.rpartition("_")[0] != parent:
            return  # the root, or a handler's activity (``<block>_f<n>_<k>``): no branch
        if isinstance(self.definition.activities.get(parent), All):
            self.record("skipped", path)

    def _culprit(self, origin: str) -> str:
        """The activity to blame for too many starts: of the loops in progress around
        ``origin``, the one that started the most activities in its current run (an endless
        loop outside a finite one, or inside it), else ``origin``."""
        found, most = origin, 0
        path: str | None = origin
        while path is not None:
            spec = self.spec(path)
            node = self.nodes.get(path)
            if node is not None and isinstance(spec, While | Foreach):
                count = self._started_by.get((path, node.get("n")), 0)
                if count > most:
                    found, most = path, count
            path = spec.parent
        return found

    def _too_many_starts(self, origin: str) -> None:
        """Fault ``StepLimitError`` at ``origin``, the block whose child was about to start.

        A handler may catch the fault, and gets as many starts again to run in; the rest of the
        agenda stays (what the fault cancelled is skipped). Past those, the instance faults
        without handlers, so that a loop around a handler that catches it still ends.
        """
        message = (
            f"more than {self.limits.max_starts} activities started without waiting once; "
            "is a loop missing a way out?"
        )
        if self._start_limit > self.limits.max_starts:
            self.record("fault", origin, code="StepLimitError", message=message)
            fault = {"code": "StepLimitError", "message": message, "activity": self.aid(origin)}
            self.uncaught(origin, fault)
            return
        self._start_limit += self.limits.max_starts
        self.fault(origin, "StepLimitError", message)

    # limits -----------------------------------------------------------------------------------

    def charge(self, units: int, origin: str) -> bool:
        """Spend ``units`` of the step's budget; False after faulting at ``origin`` if spent."""
        budget = self.budget
        budget.left -= units
        if budget.left >= 0:
            return True
        self.budget_spent(origin)
        return False

    def budget_spent(self, origin: str) -> None:
        """Fault ``LimitExceeded`` at ``origin``: the step's budget is spent.

        Like ``_too_many_starts``: a handler may catch the fault and gets a budget as large again
        to run in; when that is spent too, the instance faults without handlers, so that a loop
        around a handler that catches it still ends.
        """
        message = over_budget(self.limits)
        if self._budget_renewed:
            self.record("fault", origin, code=LIMIT_EXCEEDED, message=message)
            fault = {"code": LIMIT_EXCEEDED, "message": message, "activity": self.aid(origin)}
            self.uncaught(origin, fault)
            return
        self._budget_renewed = True
        self.budget.left = self.limits.step_budget
        self.fault(origin, LIMIT_EXCEEDED, message)

    # contexts ---------------------------------------------------------------------------------

    def open_scope(self, block: Block) -> None:
        """Create the scope of a block that owns a context (or is a foreach).

        The root's scope is made when the instance starts, from the fields it was given."""
        if block.path and (block.context is not None or isinstance(block, Foreach)):
            values = block.context.initial_values() if block.context is not None else {}
            self.scopes[block.path] = values
            self._copied_scopes.add(block.path)
            self.sizes.scoped += scope_size(block.path, values, self.limits.max_state_size)
            self.sizes.clean = False

    def forget_fault(self, path: str) -> None:
        """Drop ``inst:fault`` from the scope of block ``path``: its handler is done with."""
        scope = self.scopes.get(path)
        if scope is not None and "inst:fault" in scope:
            caught = self.scope_for_write(path).pop("inst:fault")
            # as ``sizes.store`` counted it: the value, the quoted name, a colon and a comma
            self.sizes.scoped -= json_size(caught, self.limits.max_state_size)[0] + 14

    def _close_scope(self, path: str) -> None:
        values = self.scopes.pop(path)
        self.sizes.scoped -= scope_size(path, values, self.limits.max_state_size)

    def scope_for_write(self, path: str) -> dict[str, Any]:
        if path not in self._copied_scopes:
            self.scopes[path] = dict(self.scopes[path])
            self._copied_scopes.add(path)
        return self.scopes[path]

    def context(self, path: str) -> dict[str, Any]:
        """Every property visible from the activity at ``path``."""
        return visible(self.scopes, chain(self.definition, self.scopes, path))

    def write(self, path: str, name: str, value: Any) -> bool:
        """Set property ``name`` as seen from ``path``; False after a fault (state too big)."""
        return write(self, chain(self.definition, self.scopes, path), name, value, path)

    def apply_changes(self, path: str, sent: dict[str, Any], received: dict[str, Any]) -> bool:
        """Apply what a participant or subprocess changed; False after a fault."""
        return apply_changes(self, chain(self.definition, self.scopes, path), sent, received, path)

    def evaluate(self, expression: Expression, path: str, event: Any = None) -> tuple[bool, Any]:
        """(True, value), or (False, None) after raising ``ExpressionError`` (or
        ``LimitExceeded`` when the step's budget ran out) at ``path``."""
        self.budget.left -= EVAL_UNITS
        try:
            return True, expression.evaluate(self._names(path, event), self.budget)
        except ExpressionError as error:
            self._failed(path, error)
            return False, None

    def _failed(self, path: str, error: ExpressionError) -> None:
        if self.budget.spent:
            self.budget_spent(path)
        else:
            self.fault(path, "ExpressionError", str(error))

    def _names(self, path: str, event: Any) -> dict[str, Any]:
        names: dict[str, Any] = {"context": self.context(path)}
        if event is not None:
            names["event"] = event
        return names

    def holds(
        self, conditions: tuple[Expression, ...], path: str, event: Any = None
    ) -> bool | None:
        """Whether any condition holds (True when there are none); None after a fault."""
        if not conditions:
            return True
        names = self._names(path, event)
        for condition in conditions:
            self.budget.left -= EVAL_UNITS
            try:
                if condition.holds(names, self.budget):
                    return True
            except ExpressionError as error:
                self._failed(path, error)
                return None
        return False

    def test(
        self, conditions: tuple[Expression, ...], path: str, event: Any
    ) -> tuple[bool, str | None]:
        """Whether any condition holds for ``event``, without faulting: (False, why) when a
        condition cannot be evaluated on it (a missing key, the budget spent), so that one
        malformed event is not taken instead of faulting whoever waits for it. What a failed
        evaluation spent of the budget is given back."""
        if not conditions:
            return True, None
        names = self._names(path, event)
        for condition in conditions:
            before = self.budget.left
            self.budget.left -= EVAL_UNITS
            try:
                if condition.holds(names, self.budget):
                    return True, None
            except ExpressionError as error:
                self.budget.left = before
                return False, error_text(str(error))
        return False, None

    # completion, faults, cancellation ---------------------------------------------------------

    def complete(self, path: str) -> None:
        """The activity at ``path`` is done: drop it and let its parent carry on."""
        spec = self.spec(path)
        node = self.nodes.pop(path)
        self._forget(path, node)
        if spec.parent is None:
            if "h" in node:  # a handler of the root's ran: the fault is dealt with
                self.forget_fault(path)
            self.finish(Status.COMPLETED, None)
            return
        if path in self.scopes:
            self._close_scope(path)
        child_done(self, self.spec(spec.parent), path)

    def fault(self, origin: str, code: str, message: str) -> None:
        """Raise a fault at ``origin``: the nearest enclosing handler catches it, else the root.

        A fault costs ``FAULT_UNITS`` of the budget, taken without a check (the next start or
        expression finds the budget spent), so that faulting never faults again."""
        self.budget.left -= FAULT_UNITS
        message = error_text(message)
        fault = {"code": code, "message": message, "activity": self.aid(origin)}
        self.record("fault", origin, code=code, message=message)
        path: str | None = origin
        while path is not None:
            spec = self.spec(path)
            node = self.nodes.get(path)
            if node is not None and isinstance(spec, Block) and "h" not in node:
                handlers = spec.context.handlers if spec.context is not None else ()
                index = spec.context.handler_for(code) if spec.context is not None else None
                if handlers and index is not None:
                    catch(self, spec, index, fault)
                    return
            path = spec.parent
        self.uncaught(origin, fault)

    def uncaught(self, origin: str, fault: dict[str, Any]) -> None:
        """A fault no handler catches: the instance ends ``faulted``, or, where the definition
        (``<process on-fault="suspend">``) or the configuration asks for it, it stops
        ``suspended`` at ``origin`` as it stands, for an operator: an incident.

        The incident keeps what the step had still to start (the agenda), so that ``resume``
        can go on where the fault stopped it."""
        policy = self.definition.root.on_fault or self.limits.on_fault
        if policy != "suspend":
            self.finish(Status.FAULTED, fault)
            return
        agenda = [
            [path, parent, None if token is None else list(token)]
            for path, parent, token in self._agenda
        ]
        self._agenda.clear()
        incident = {**fault, "path": origin, "agenda": agenda}
        self.state["incident"] = incident
        self.state["status"] = Status.SUSPENDED.value
        self.sizes.held += json_size(incident, self.limits.max_state_size)[0] + 16
        self.sizes.clean = False
        self.record("incident", origin, code=fault["code"], message=fault["message"])

    def resume_incident(self) -> None:
        """Go on after an incident: the activity that faulted starts again (what it waited
        on is released, what ran under it cancelled), then what the step had still to start."""
        incident = self.state.pop("incident")
        self.sizes.held -= json_size(incident, self.limits.max_state_size)[0] + 16
        self.state["status"] = _RUNNING
        for path, parent, token in incident.get("agenda", ()):
            self._agenda.append((path, parent, None if token is None else tuple(token)))
        origin = incident.get("path", "")
        if origin not in self.definition.activities:
            origin = ""
        self.restart_at(origin)

    def restart_at(self, path: str) -> None:
        """Start the activity at ``path`` afresh: its node (if it has one) and everything
        under it are cancelled, then it is scheduled under its parent as it stands (from the
        nearest enclosing activity still in progress, should its parent not be)."""
        parent = self.spec(path).parent
        while parent is not None and parent not in self.nodes:
            path, parent = parent, self.spec(parent).parent
        self.cancel_below(path)
        node = self.nodes.pop(path, None)
        if node is not None:
            self._forget(path, node)
            if _waits(node) or path in self.state["awaits"]:
                self.record("cancelled", path)
            discard(self, self.spec(path), node)
        if path in self.scopes and path:
            self._close_scope(path)
        self.schedule(path, parent)

    def cancel_below(self, path: str) -> None:
        """Cancel every activity in progress under ``path`` (``path`` itself is kept)."""
        prefix = path + "_" if path else ""
        self.cancel_nodes([p for p in self.nodes if p != path and p.startswith(prefix)])

    def cancel_nodes(self, doomed: list[str]) -> None:
        """Cancel the activities in progress at ``doomed``: what they wait on is released."""
        for p in sorted(doomed, key=len, reverse=True):
            node = self.nodes.pop(p)
            self._forget(p, node)
            if _waits(node) or p in self.state["awaits"]:
                self.record("cancelled", p)
            discard(self, self.spec(p), node)
            if p and p in self.scopes:  # the root's scope is the instance's context: it stays
                self._close_scope(p)

    def finish(self, status: Status, fault: dict[str, Any] | None) -> None:
        """The instance ends: release everything it waits on and tell the world."""
        self.cancel_below("")
        for key in ("held", "incident"):
            self.state.pop(key, None)
        self.nodes.clear()
        self.sizes.structure = self.sizes.held = 0
        for path, parent, _ in self._agenda:
            self._unstarted(path, parent)
        self._agenda.clear()
        copies = 1 if self.state["parent"] is None else 2
        status, fault, context = final_context(self, status, fault, copies)
        self.state["status"] = status.value
        self.state["fault"] = fault
        public_fault = None if fault is None else {k: fault[k] for k in ("code", "message")}
        self.record(status.value, "", **({"fault": public_fault} if public_fault else {}))
        self.emit(cmd.ProcessFinished(status.value, context, public_fault))
        parent = self.state["parent"]
        if parent is not None:
            self.emit(
                cmd.NotifyParent(
                    parent["process_id"],
                    parent["activity"],
                    self.process_id,
                    status.value,
                    context,
                    public_fault,
                )
            )


def _token(node: Node) -> Token:
    return node.get("n"), node.get("h")


def _waits(node: Node) -> bool:
    return any(key in node for key in ("wi", "timer", "retry_timer", "child"))
