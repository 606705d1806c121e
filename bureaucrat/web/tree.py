"""The activity tree of an instance, with each activity's state, for the console's diagram.

A stand-in with the interface of ``bureaucrat.engine.describe.describe`` until it is merged:
``describe(definition, state) -> ActivityView``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bureaucrat.definition.model import (
    Action,
    Activity,
    All,
    Await,
    Block,
    Call,
    Definition,
    Delay,
    Switch,
)
from bureaucrat.engine.state import activity_id


@dataclass(frozen=True, slots=True)
class ActivityView:
    id: str
    path: str
    element: str
    label: str
    state: str
    waiting_on: str | None
    round: int | None
    children: tuple[ActivityView, ...]


_WAITING = {Action: "workitem", Delay: "timer", Await: "event", Call: "subprocess"}


def describe(definition: Definition, state: dict[str, Any] | None) -> ActivityView:
    pid = "" if state is None else str(state.get("id", ""))
    nodes: dict[str, Any] = {} if state is None else state.get("nodes", {})
    status = None if state is None else state.get("status")
    finished = "done" if status == "completed" else "cancelled"

    def view(activity: Activity, hint: str | None) -> ActivityView:
        node = nodes.get(activity.path)
        own = hint or ("not_started" if status in (None, "running") else finished)
        waiting = None
        if node is not None:
            own = "active"
            waiting = next((w for t, w in _WAITING.items() if isinstance(activity, t)), None)
            if waiting is not None:
                own = "waiting"
        kids: tuple[Activity, ...] = activity.cases if isinstance(activity, Switch) else ()
        if isinstance(activity, Block):
            kids = activity.children
        index = node.get("i") if node is not None else None
        children = []
        for number, child in enumerate(kids):
            child_hint = None
            if node is not None and isinstance(index, int) and not isinstance(activity, All):
                child_hint = "done" if number < index else None
            elif (node is not None and isinstance(activity, All)) or own == "done":
                child_hint = "done"
            children.append(view(child, child_hint))
        return ActivityView(
            activity_id(pid, activity.path),
            activity.path,
            activity.tag,
            "",
            own,
            waiting,
            None,
            tuple(children),
        )

    return view(definition.root, None)
