"""Each activity's behaviour, looked up by the type of its spec.

An activity behaviour is up to three functions of the runtime, the spec and the path:
``start`` (its node has just been created), ``child_done`` (for blocks: a child completed) and
``discard`` (it is being cancelled: release what it waits on). Events addressed to waiting
activities (responses, timers, events, subprocesses) are handled in ``bureaucrat.engine.step``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bureaucrat.definition.model import (
    Action,
    Activity,
    All,
    Assign,
    Await,
    Block,
    Call,
    Case,
    Delay,
    Fault,
    Foreach,
    Process,
    Sequence,
    Switch,
    While,
)
from bureaucrat.engine.activities import blocks, simple, waiting

if TYPE_CHECKING:
    from bureaucrat.engine.runtime import Runtime

Starter = Callable[["Runtime", Any], None]
ChildDone = Callable[["Runtime", Any, str], None]
Discard = Callable[["Runtime", Any, dict[str, Any]], None]

_STARTERS: dict[type[Activity], Starter] = {
    Process: blocks.start_sequence,
    Sequence: blocks.start_sequence,
    Case: blocks.start_sequence,
    All: blocks.start_all,
    While: blocks.start_while,
    Foreach: blocks.start_foreach,
    Switch: blocks.start_switch,
    Action: waiting.start_action,
    Call: waiting.start_call,
    Delay: waiting.start_delay,
    Await: waiting.start_await,
    Fault: simple.start_fault,
    Assign: simple.start_assign,
}

_CHILD_DONE: dict[type[Activity], ChildDone] = {
    Process: blocks.sequence_child_done,
    Sequence: blocks.sequence_child_done,
    Case: blocks.sequence_child_done,
    All: blocks.all_child_done,
    While: blocks.while_child_done,
    Foreach: blocks.foreach_child_done,
    Switch: blocks.switch_child_done,
}


def start(runtime: Runtime, spec: Activity) -> None:
    _STARTERS[type(spec)](runtime, spec)


def child_done(runtime: Runtime, parent: Activity, child: str) -> None:
    if isinstance(parent, Block) and "h" in runtime.nodes[parent.path]:
        blocks.handler_child_done(runtime, parent, child)
    else:
        _CHILD_DONE[type(parent)](runtime, parent, child)


def discard(runtime: Runtime, spec: Activity, node: dict[str, Any]) -> None:
    waiting.discard(runtime, spec, node)
