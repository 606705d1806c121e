"""Lexically scoped contexts: which properties an activity sees, and where a write lands.

Scopes are kept by the path of the block that owns them (the root's is ``""``). Reads walk from
the innermost enclosing scope outward; a write updates the innermost scope that declares the
name, and a name nobody declares is created in the root scope, so results survive the block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bureaucrat.definition.model import Definition
from bureaucrat.engine import sizes

if TYPE_CHECKING:
    from bureaucrat.engine.runtime import Runtime

PROTOCOL_KEYS = frozenset({"status", "error"})
"""Payload keys that belong to the wire protocol, never to the context."""

ENGINE_PREFIX = "inst:"
"""Properties the engine maintains (``inst:current``, ``inst:fault``...): not participants'."""


def chain(definition: Definition, scopes: dict[str, Any], path: str) -> list[str]:
    """The scopes visible from ``path``, innermost first, ending with the root's."""
    found: list[str] = []
    current: str | None = path
    while current is not None:
        if current in scopes:
            found.append(current)
        current = definition.activities[current].parent
    if not found or found[-1] != "":
        found.append("")
    return found


def visible(scopes: dict[str, dict[str, Any]], scope_chain: list[str]) -> dict[str, Any]:
    if len(scope_chain) == 1:  # the root's scope alone: the usual case
        return dict(scopes.get(scope_chain[0], {}))
    merged: dict[str, Any] = {}
    for scope in reversed(scope_chain):
        merged.update(scopes.get(scope, {}))
    return merged


def target(scopes: dict[str, dict[str, Any]], scope_chain: list[str], name: str) -> str:
    """The scope a write of ``name`` lands in: the innermost that declares it, else the root."""
    for scope in scope_chain:
        if name in scopes.get(scope, {}):
            return scope
    return ""


def write(runtime: Runtime, scope_chain: list[str], name: str, value: Any, origin: str) -> bool:
    """Write ``name``; False after a fault at ``origin`` (the state would be too big)."""
    writes = [(target(runtime.scopes, scope_chain, name), name, value)]
    return sizes.store(runtime, writes, origin, f"setting {name}")


def same(a: Any, b: Any) -> bool:
    """JSON equality: ``1``, ``1.0`` and ``True`` are different values.

    Iterative: a participant may answer with values nested deeper than Python's stack."""
    pairs = [(a, b)]
    while pairs:
        x, y = pairs.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, dict):
            if x.keys() != y.keys():
                return False
            pairs.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            pairs.extend(zip(x, y, strict=True))
        elif x != y:
            return False
    return True


def changes(sent: dict[str, Any], received: dict[str, Any]) -> dict[str, Any]:
    """What a participant changed: the keys it added or whose value differs from what it got
    (names that are not strings are no properties: they are left out)."""
    try:
        return {
            name: value
            for name, value in received.items()
            if name not in PROTOCOL_KEYS
            and not name.startswith(ENGINE_PREFIX)
            and (name not in sent or not same(sent[name], value))
        }
    except AttributeError:  # a name that is not a string has no startswith
        named = {name: value for name, value in received.items() if isinstance(name, str)}
        return changes(sent, named)


def apply_changes(
    runtime: Runtime,
    scope_chain: list[str],
    sent: dict[str, Any],
    received: dict[str, Any],
    origin: str,
) -> bool:
    """Write every change, or none when they would not fit the state (False, after a fault)."""
    found = changes(sent, received)
    if not found:
        return True
    writes = [(target(runtime.scopes, scope_chain, name), name, v) for name, v in found.items()]
    return sizes.store(runtime, writes, origin, f"the changes to {_names(found)}")


def _names(changed: dict[str, Any]) -> str:
    names = sorted(changed)
    shown = ", ".join(name[:40] for name in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")
