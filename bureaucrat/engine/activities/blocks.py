"""Blocks: activities that run other activities (process, sequence, case, all, while, foreach,
switch) and the fault handlers a block's ``<context>`` owns.

Block nodes keep ``i``, the index of the child running (sequence-like blocks), or ``left``, the
number of children still running (``all``); a ``while`` also counts its rounds in ``r`` (1 for
the first), so that ``describe`` can say which round runs. A block that caught a fault keeps
``h``, the index of the handler it runs; it then runs that handler's activities like a sequence
and completes after the last one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bureaucrat.definition.model import Activity, All, Block, Case, Foreach, Switch, While
from bureaucrat.engine import sizes

if TYPE_CHECKING:
    from bureaucrat.engine.runtime import Runtime


def _run_list(runtime: Runtime, block: Block, children: tuple[Activity, ...], index: int) -> None:
    """Run ``children[index]`` of ``block`` next, or complete the block after the last one."""
    if index < len(children):
        runtime.update_node(block.path, i=index)
        runtime.schedule(children[index].path, block.path)
    else:
        runtime.complete(block.path)


def _index(path: str) -> int:
    return int(path.rsplit("_", 1)[-1])


def start_sequence(runtime: Runtime, spec: Block) -> None:
    """``<process>``, ``<sequence>``, ``<case>``: children in order; completes after the last."""
    runtime.open_scope(spec)
    _run_list(runtime, spec, spec.children, 0)


def sequence_child_done(runtime: Runtime, spec: Block, child: str) -> None:
    _run_list(runtime, spec, spec.children, _index(child) + 1)


def start_all(runtime: Runtime, spec: All) -> None:
    """``<all>``: every child at once; completes when the last of them completes."""
    runtime.open_scope(spec)
    if not spec.children:
        runtime.complete(spec.path)
        return
    runtime.update_node(spec.path, left=len(spec.children))
    for child in spec.children:
        runtime.schedule(child.path, spec.path)


def all_child_done(runtime: Runtime, spec: All, child: str) -> None:
    left = runtime.nodes[spec.path]["left"] - 1
    if left:
        runtime.update_node(spec.path, left=left)
    else:
        runtime.complete(spec.path)


def start_while(runtime: Runtime, spec: While) -> None:
    """``<while>``: its context is set up once; the body runs while any condition holds."""
    runtime.open_scope(spec)
    _loop(runtime, spec)


def while_child_done(runtime: Runtime, spec: While, child: str) -> None:
    index = _index(child) + 1
    if index < len(spec.children):
        _run_list(runtime, spec, spec.children, index)
    else:
        _loop(runtime, spec)


def _loop(runtime: Runtime, spec: While) -> None:
    holds = runtime.holds(spec.conditions, spec.path)
    if holds is None:
        return
    if holds and spec.children:
        runtime.update_node(spec.path, r=int(runtime.nodes[spec.path].get("r", 0)) + 1)
        _run_list(runtime, spec, spec.children, 0)
    else:
        runtime.complete(spec.path)


def start_foreach(runtime: Runtime, spec: Foreach) -> None:
    """``<foreach select="a.b">``: the body once per element of the list ``a.b``, read from the
    scope around the foreach (as the original); ``inst:current`` is the element and
    ``inst:iteration`` counts from 1. Its own ``<context>`` is fresh for every element.
    Completes after the body ran for the last element."""
    selection = _select(runtime.context(spec.parent or ""), spec.select)
    runtime.open_scope(spec)
    if not isinstance(selection, list):
        runtime.fault(
            spec.path,
            "ExpressionError",
            f'foreach select="{spec.select}": expected a list, found {_describe(selection)}',
        )
        return
    if sizes.store(runtime, [(spec.path, "inst:selection", selection)], spec.path, "the selection"):
        _iterate(runtime, spec, 0)


def foreach_child_done(runtime: Runtime, spec: Foreach, child: str) -> None:
    index = _index(child) + 1
    if index < len(spec.children):
        _run_list(runtime, spec, spec.children, index)
    else:  # inst:iteration counts from 1: it is the index of the next element
        _iterate(runtime, spec, runtime.scopes[spec.path]["inst:iteration"])


def _iterate(runtime: Runtime, spec: Foreach, index: int) -> None:
    """Run the body for element ``index`` (from 0), in a fresh copy of the foreach's context."""
    selection = runtime.scopes[spec.path]["inst:selection"]
    if index >= len(selection) or not spec.children:
        runtime.complete(spec.path)
        return
    writes = []
    if index and spec.context is not None:  # the first element has the scope as just opened
        writes = [(spec.path, prop.name, prop.value) for prop in spec.context.properties]
    writes.append((spec.path, "inst:iteration", index + 1))
    writes.append((spec.path, "inst:current", selection[index]))
    if sizes.store(runtime, writes, spec.path, "the current element"):
        _run_list(runtime, spec, spec.children, 0)


_MISSING = object()


def _select(context: dict[str, Any], dotted: str) -> Any:
    value: Any = context
    for name in dotted.split("."):
        if not isinstance(value, dict) or name not in value:
            return _MISSING
        value = value[name]
    return value


def _describe(value: Any) -> str:
    return "nothing" if value is _MISSING else type(value).__name__


def start_switch(runtime: Runtime, spec: Switch) -> None:
    """``<switch>``: the first case whose conditions hold runs, else ``<default>``, else nothing."""
    for case in spec.cases:
        if case.is_default:
            chosen: Case | None = case
        else:
            holds = runtime.holds(case.conditions, spec.path)
            if holds is None:
                return
            chosen = case if holds else None
        if chosen is not None:
            runtime.schedule(chosen.path, spec.path)
            return
    runtime.complete(spec.path)


def switch_child_done(runtime: Runtime, spec: Switch, child: str) -> None:
    runtime.complete(spec.path)


def catch(runtime: Runtime, spec: Block, index: int, fault: dict[str, Any]) -> None:
    """``spec`` handles ``fault`` with its handler ``index``: its unfinished children are
    cancelled and the handler's activities run in its scope, ``inst:fault`` set."""
    runtime.cancel_below(spec.path)
    handler = spec.context.handlers[index] if spec.context is not None else None
    assert handler is not None
    runtime.record("handled", spec.path, code=fault["code"], handler=runtime.aid(handler.path))
    runtime.set_node(spec.path, {"n": runtime.nodes[spec.path]["n"], "h": index, "i": 0})
    caught = {"code": fault["code"], "message": fault["message"]}
    if sizes.store(runtime, [(spec.path, "inst:fault", caught)], spec.path, "the fault caught"):
        _run_list(runtime, spec, handler.activities, 0)


def handler_child_done(runtime: Runtime, spec: Block, child: str) -> None:
    assert spec.context is not None
    handler = spec.context.handlers[runtime.nodes[spec.path]["h"]]
    _run_list(runtime, spec, handler.activities, _index(child) + 1)
