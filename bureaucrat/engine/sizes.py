"""What one step writes and sends, measured against the state's size and the step's output.

The state keeps its own size as an upper estimate (``state["size"]``: the JSON bytes of its
scopes, of the copies that waiting activities hold, and a bound on its nodes), updated as values
are written, so that no step serialises the whole state to know where it stands: ``store``
measures only what it writes and what that replaces, ``send`` only the messages that would come
near the output limit, and the state is measured whole only when the estimate says a write would
not fit, and at the end of a step whose estimate is over the limit (``settle``). Every measure is
paid for from the step's budget. What would pass a limit faults ``LimitExceeded`` at the
activity that attempted it, and is not done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bureaucrat.definition.limits import json_size, walk_cost
from bureaucrat.engine import budget
from bureaucrat.engine.budget import LIMIT_EXCEEDED, Limits
from bureaucrat.engine.state import Status

if TYPE_CHECKING:
    from bureaucrat.engine.runtime import Runtime

ENVELOPE = 1_000
"""Bytes of a message besides the context it carries and its ids: keys, status, attempt."""


class Sizes:
    """The running estimate of one state's JSON size, and the bytes its step has sent so far.

    Three counts, kept in the state between steps: ``scoped``, the bytes of the scopes (their
    values and names), to which writes add what they write and from which they take what they
    replace; ``held``, the copies that waiting activities keep (the context an action or a call
    sent, a failed action's error), each node's share in its ``sz``, given back when the node
    goes; and ``structure``, the nodes in progress with the ids and index entries they own, each
    counted at ``node_size``, a bound that depends only on the lengths of the process id and of
    the node's path (an ``await`` adds its event's name). So the estimate is never below the
    state's real size, and when it says a write would not fit, the engine measures the state
    exactly before it refuses. What that measure finds the estimate to be over is credited for
    the rest of the step, as long as no node goes (the bound of a node that goes may be more
    than it took).
    """

    __slots__ = (
        "_fixed",
        "_saved",
        "clean",
        "credit",
        "held",
        "limit",
        "node_base",
        "output",
        "scoped",
        "state",
        "structure",
    )

    def __init__(self, state: dict[str, Any], bounds: Limits) -> None:
        self.state = state
        self.limit = bounds.max_state_size
        self.output = 0
        self.clean = False
        """Whether the state is known to be within its limit since the last change; anything
        that grows the state unchecked (a start, a scope opened) sets it back to False."""
        pid = len(state["id"])
        self.node_base = 4 * pid + 120
        self.credit = 0
        self._fixed = 4 * pid + 1_000  # the state's own keys, its ids and counters
        saved: Any = state.get("size")
        self._saved: Any = saved
        self.scoped = self.held = self.structure = 0
        if saved is None:  # a new state (or one from before sizes were kept)
            self._measure()
            return
        try:
            self.scoped = saved["scopes"] + 0
            self.held = saved["held"] + 0
            self.structure = saved["nodes"] + 0
        except (TypeError, KeyError):  # a state edited by hand
            self._measure()

    def node_size(self, path: str) -> int:
        """At most the bytes of the node at ``path`` and of the index entries it owns: at most
        two ids (``<pid>_<path>.<n>``), each in the node and in an index, counters, its key."""
        return self.node_base + 7 * len(path)

    def _measure(self) -> None:
        state, bound = self.state, self.limit
        self._saved = None
        if not state["scopes"] and not state["nodes"]:
            return  # a new state: nothing to measure yet
        self.scoped = sum(json_size(scope, bound)[0] for scope in state["scopes"].values())
        self.held = sum(held_by(node, bound) for node in state["nodes"].values())
        self.structure = sum(self.node_size(path) for path in state["nodes"])
        self.structure += sum(len(event) + 8 for event in state["awaits"].values())

    def estimate(self) -> int:
        """An upper estimate of the state's JSON size now, in bytes."""
        return self.scoped + self.held + self.structure + self._fixed - self.credit

    def exact(self) -> tuple[int, int]:
        """(bytes, values visited): the state measured, no further than past its limit; the
        estimate's excess over it is credited."""
        size, seen = json_size(self.state, self.limit)
        self.credit = max(0, self.credit + self.estimate() - size)
        return size, seen

    def save(self) -> None:
        """Keep the counts in the state for its next step (unchanged: as they were)."""
        saved = self._saved
        if (
            saved is None
            or saved["held"] != self.held
            or saved["scopes"] != self.scoped
            or saved["nodes"] != self.structure
        ):
            self.state["size"] = {"scopes": self.scoped, "held": self.held, "nodes": self.structure}


def held_by(node: dict[str, Any], bound: int) -> int:
    """The bytes a node keeps besides its ids: what it sent, its error."""
    if "sent" not in node and "error" not in node:
        return 0
    return json_size(node.get("sent"), bound)[0] + json_size(node.get("error"), bound)[0]


def measure(runtime: Runtime, value: Any, bound: int, origin: str) -> int | None:
    """The JSON bytes of ``value`` (counted no further than past ``bound``), paid for from
    the budget; None after faulting at ``origin`` if the budget is spent."""
    size, seen = json_size(value, bound)
    return size if runtime.charge(walk_cost(size, seen), origin) else None


def fits(runtime: Runtime, growth: int, origin: str, what: str) -> bool:
    """Whether the state may grow by ``growth`` bytes; else fault at ``origin``.

    The running estimate decides when it can; when it says no, the state is measured."""
    sizes, limit = runtime.sizes, runtime.limits.max_state_size
    if sizes.estimate() + growth <= limit:
        sizes.clean = True
        return True
    size, seen = sizes.exact()
    if not runtime.charge(walk_cost(size, seen), origin):
        return False
    if size + growth <= limit:
        sizes.clean = True
        return True
    message = budget.over_state_size(runtime.limits, size + growth, what)
    runtime.fault(origin, LIMIT_EXCEEDED, message)
    return False


def send(runtime: Runtime, origin: str, what: str, content: Any, extra: int) -> int | None:
    """Count a message that carries ``content`` and ``extra`` bytes more (ids, envelope)
    against the step's output, and the copy of ``content`` that its sender keeps against the
    state's size: the size counted for that copy (the node's ``sz``), or None after a fault at
    ``origin``.

    ``content`` is a context: its size is at most that of all the scopes, which is used as it
    is while it leaves room enough; near a limit ``content`` is measured."""
    sizes, output_limit = runtime.sizes, runtime.limits.max_step_output
    bound = sizes.scoped
    output = sizes.output + bound + extra
    if output <= output_limit and sizes.estimate() + bound <= sizes.limit:
        sizes.output = output  # the usual case: far from both limits
        sizes.held += bound
        sizes.clean = True
        return bound
    room = output_limit - sizes.output - extra
    size = measure(runtime, content, room, origin) if room >= 0 else room + 1
    if size is None:
        return None
    if size > room:
        total = sizes.output + extra + size
        runtime.fault(origin, LIMIT_EXCEEDED, budget.over_output(runtime.limits, total, what))
        return None
    if not fits(runtime, size, origin, what):
        return None
    sizes.output += extra + size
    sizes.held += size
    return size


def store(runtime: Runtime, writes: list[tuple[str, str, Any]], origin: str, what: str) -> bool:
    """Write each (scope, name, value) if the state stays within its size limit; else fault
    ``LimitExceeded`` at ``origin`` and write nothing. False after a fault."""
    bound = runtime.limits.max_state_size
    growth, deltas = 0, []
    for scope, name, value in writes:
        size = measure(runtime, value, bound, origin)
        if size is None:
            return False
        current = runtime.scopes[scope]
        if name in current:
            old = measure(runtime, current[name], bound, origin)
            if old is None:
                return False
            delta = size - old
        else:
            delta = size + json_size(name, bound)[0] + 2
        growth += delta
        deltas.append(delta)
    if growth > 0 and not fits(runtime, growth, origin, what):
        return False
    for (scope, name, value), delta in zip(writes, deltas, strict=True):
        runtime.scope_for_write(scope)[name] = value
        runtime.sizes.scoped += delta
    return True


def scope_size(path: str, values: dict[str, Any], bound: int) -> int:
    """The JSON bytes of the scope ``path`` holding ``values``, its key included."""
    return (json_size(values, bound)[0] if values else 2) + len(path) + 4


def settle(runtime: Runtime) -> None:
    """The end of the step: the state must be within its size limit, else its contexts are
    emptied and, if it still runs, the instance faults."""
    limit = runtime.limits.max_state_size
    fault = runtime.state["fault"]
    if runtime.sizes.clean and fault is None:
        runtime.sizes.save()
        return
    growth = 0 if fault is None else json_size(fault, limit)[0]
    if runtime.sizes.estimate() + growth > limit:
        size, _ = runtime.sizes.exact()
        if size > limit:
            overflow(runtime, budget.over_state_size(runtime.limits, size, "this step"))
    runtime.sizes.save()


def overflow(runtime: Runtime, message: str) -> None:
    """The state cannot be kept as it is: its contexts are emptied and, if it still runs, the
    instance faults ``LimitExceeded`` (no handler could run without its context)."""
    for path in list(runtime.scopes):
        runtime.scopes[path] = {}
        runtime.scope_for_write(path)
    runtime.sizes.scoped = sum(scope_size(path, {}, 0) for path in runtime.scopes)
    if not runtime.running:
        runtime.record("emptied", "", reason=message)
        return
    runtime.record("fault", "", code=LIMIT_EXCEEDED, message=message)
    fault = {"code": LIMIT_EXCEEDED, "message": message, "activity": runtime.aid("")}
    runtime.finish(Status.FAULTED, fault)


def final_context(
    runtime: Runtime, status: Status, fault: dict[str, Any] | None, copies: int
) -> tuple[Status, dict[str, Any] | None, dict[str, Any]]:
    """The status, fault and context that the end's ``copies`` notifications carry: as they
    are, unless the context would take them past the step's output limit. Then they carry no
    context, and an instance that would have completed faults instead."""
    context = dict(runtime.scopes.get("", {}))
    sizes = runtime.sizes
    room = runtime.limits.max_step_output - sizes.output - copies * ENVELOPE
    if copies * sizes.scoped <= room or copies * json_size(context, room)[0] <= room:
        return status, fault, context
    total = sizes.output + copies * ENVELOPE + max(room + 1, 0)  # at least: past the limit
    message = budget.over_output(runtime.limits, total, "the final context")
    if status != Status.COMPLETED:
        runtime.record("emptied", "", reason=message)
        return status, fault, {}
    runtime.record("fault", "", code=LIMIT_EXCEEDED, message=message)
    fault = {"code": LIMIT_EXCEEDED, "message": message, "activity": runtime.aid("")}
    return Status.FAULTED, fault, {}
