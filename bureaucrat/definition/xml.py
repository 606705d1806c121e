"""The XML reader: definition text in, an immutable ``Definition`` (see ``model``) out.

The text is untrusted: lxml parses it without entities, network access, DTDs or huge trees, and
every problem raises ``DefinitionError`` with the line of the offending element. Each activity
is read by a short function found through a table from tag name to reader (``_READERS``); paths
and parents are assigned on the way down, as ``model`` describes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal, TypedDict, TypeVar

from bureaucrat.bounds import MAX_ACTIVITY_PATH
from bureaucrat.definition import elements as el
from bureaucrat.definition import values
from bureaucrat.definition.elements import Element
from bureaucrat.definition.expressions import Expression, compile_expression
from bureaucrat.definition.model import (
    Action,
    Activity,
    All,
    Assign,
    Await,
    Call,
    Case,
    Context,
    Definition,
    Delay,
    Fault,
    FaultHandler,
    Foreach,
    Process,
    Property,
    Sequence,
    Switch,
    While,
)

MAX_DEPTH = 32
"""Activities nested deeper than this are refused: the engine recurses once per level, and an
activity's id, which grows with its depth, is part of every workitem id (``bounds``)."""
MAX_ACTIVITIES = 100_000
"""A definition with more activities (switch cases and the root included) is refused."""

A = TypeVar("A", bound=Activity)
Conditions = Literal["none", "optional", "required"]
Reader = Callable[["_Builder", Element, "_At"], A]

_SELECT = re.compile(r"[^\s.]+(\.[^\s.]+)*")
_CALLED = re.compile(r"\$([^\s$]+)")
_CONDITION = ("condition",)
_ENGINE_PREFIX = el.ENGINE_PREFIX


def is_xml_text(text: str) -> bool:
    """Whether ``text`` is a definition's XML rather than the path of a file holding one (what
    the launcher and the local runner accept either way); a byte order mark may lead."""
    return text.lstrip("\ufeff \t\r\n").startswith("<")


def parse_definition(source: str | bytes) -> Definition:
    """Read a definition; ``DefinitionError`` (with the line) if it cannot be accepted."""
    root = el.parse_xml(source)
    if root.tag != "process":
        raise el.error(root, f"the root element must be <process>, not {el.name(root)}")
    builder = _Builder()
    process = builder.build(_process, root, _At("", None, 0))
    return Definition(root=process, activities=builder.activities, handlers=builder.handlers)


@dataclass(frozen=True, slots=True)
class _At:
    """Where an activity goes: its path, its parent's path and its nesting depth."""

    path: str
    parent: str | None
    depth: int

    def child(self, index: int | str, parent: str | None = None) -> _At:
        """The place of child ``index``; its parent is this place unless ``parent`` is given."""
        path = f"{self.path}_{index}" if self.path else str(index)
        return _At(path, self.path if parent is None else parent, self.depth + 1)


class _Where(TypedDict):
    path: str
    parent: str | None
    line: int


def _where(element: Element, at: _At) -> _Where:
    return {"path": at.path, "parent": at.parent, "line": el.line(element)}


@dataclass
class _Builder:
    """Reads elements into specs, recording every activity and fault handler by path."""

    activities: dict[str, Activity] = field(default_factory=dict)
    handlers: dict[str, FaultHandler] = field(default_factory=dict)
    count: int = 0

    def build(self, read: Reader[A], element: Element, at: _At) -> A:
        if at.depth > MAX_DEPTH:
            raise el.error(element, f"activities are nested more than {MAX_DEPTH} levels deep")
        if len(at.path) > MAX_ACTIVITY_PATH:
            raise el.error(
                element,
                f"this activity's id ({at.path}) is longer than {MAX_ACTIVITY_PATH} characters: "
                "nest fewer blocks, or fewer activities in one block",
            )
        self.count += 1
        if self.count > MAX_ACTIVITIES:
            raise el.error(element, f"the definition has more than {MAX_ACTIVITIES} activities")
        spec = read(self, element, at)
        self.activities[at.path] = spec
        return spec

    def children(
        self, elements: list[Element], at: _At, parent: str | None = None
    ) -> tuple[Activity, ...]:
        """Read ``elements`` as the activities at ``at``'s children paths, under ``parent``."""
        return tuple(
            self.build(_READERS[child.tag], child, at.child(index, parent))
            for index, child in enumerate(elements)
        )

    def context(self, element: Element | None, at: _At) -> Context | None:
        if element is None:
            return None
        el.attributes(element)
        properties: list[Property] = []
        faults: list[Element] = []
        for child in el.children(element):
            if child.tag == "property":
                properties.append(el.property_spec(child, properties))
            elif child.tag == "faults" and not faults:
                faults.append(child)
            elif child.tag == "faults":
                raise el.error(child, "<context> can have only one <faults>")
            else:
                raise el.misplaced(child, element, context=False)
        handlers = self.faults(faults[0], at) if faults else ()
        return Context(tuple(properties), handlers)

    def faults(self, element: Element, at: _At) -> tuple[FaultHandler, ...]:
        el.attributes(element)
        cases = _cases(element, need_case=False)
        return tuple(self.handler(case, at, index) for index, case in enumerate(cases))

    def handler(self, element: Element, block: _At, index: int) -> FaultHandler:
        codes = el.fault_codes(element)
        body = _body(element, context=False)
        at = replace(block.child(f"f{index}"), depth=block.depth)  # not an activity itself
        activities = self.children(body.activities, at, parent=block.path)
        handler = FaultHandler(codes, activities, at.path, el.line(element))
        self.handlers[at.path] = handler
        return handler


@dataclass(frozen=True, slots=True)
class _Body:
    """A block's children, sorted: its ``<context>``, its conditions, its activities."""

    context: Element | None
    conditions: tuple[Expression, ...]
    activities: list[Element]


def _body(
    element: Element, *, context: bool, conditions: Conditions = "none", activities: bool = True
) -> _Body:
    """Sort the children: the ``<context>`` if ``context``, conditions, activities."""
    children = el.children(element)
    start = 1 if context and children and children[0].tag == "context" else 0
    end = start
    while conditions != "none" and end < len(children) and children[end].tag == "condition":
        end += 1
    for child in children[end:]:
        if not (activities and child.tag in _READERS):
            accepted = _CONDITION if conditions != "none" else ()
            raise el.misplaced(child, element, context=context, conditions=accepted)
    if conditions == "required" and end == start:
        raise el.error(element, f"{el.name(element)} needs at least one <condition>")
    owned = children[0] if start else None
    return _Body(owned, tuple(el.condition(child) for child in children[start:end]), children[end:])


def _cases(element: Element, *, need_case: bool) -> list[Element]:
    """The children of ``<switch>`` or ``<faults>``: cases, then at most one default, last."""
    children = el.children(element)
    for index, child in enumerate(children):
        if child.tag not in ("case", "default"):
            raise el.misplaced(child, element, context=False)
        if child.tag == "default" and index != len(children) - 1:
            raise el.error(child, f"<default> must be the last child of {el.name(element)}")
    if need_case and (not children or children[0].tag != "case"):
        raise el.error(element, f"{el.name(element)} needs at least one <case>")
    return children


# readers, one per activity element --------------------------------------------------------------


def _process(builder: _Builder, element: Element, at: _At) -> Process:
    name = el.name_attribute(element, el.attributes(element, "name"), "name", needed=False)
    body = _body(element, context=True)
    context = builder.context(body.context, at)
    children = builder.children(body.activities, at)
    return Process(**_where(element, at), context=context, children=children, name=name)


def _sequence(builder: _Builder, element: Element, at: _At) -> Sequence:
    el.attributes(element)
    body = _body(element, context=True)
    context = builder.context(body.context, at)
    children = builder.children(body.activities, at)
    return Sequence(**_where(element, at), context=context, children=children)


def _all(builder: _Builder, element: Element, at: _At) -> All:
    el.attributes(element)
    body = _body(element, context=True)
    context = builder.context(body.context, at)
    children = builder.children(body.activities, at)
    return All(**_where(element, at), context=context, children=children)


def _while(builder: _Builder, element: Element, at: _At) -> While:
    el.attributes(element)
    body = _body(element, context=True, conditions="required")
    context = builder.context(body.context, at)
    children = builder.children(body.activities, at)
    conditions = body.conditions
    return While(**_where(element, at), context=context, children=children, conditions=conditions)


def _foreach(builder: _Builder, element: Element, at: _At) -> Foreach:
    select = el.required(element, el.attributes(element, "select"), "select")
    if not _SELECT.fullmatch(select):
        raise el.error(element, f'<foreach select="{select}">: expected a dotted path like a.b')
    body = _body(element, context=True)
    context = builder.context(body.context, at)
    children = builder.children(body.activities, at)
    return Foreach(**_where(element, at), context=context, children=children, select=select)


def _switch(builder: _Builder, element: Element, at: _At) -> Switch:
    el.attributes(element)
    cases = _cases(element, need_case=True)
    specs = tuple(builder.build(_case, case, at.child(k)) for k, case in enumerate(cases))
    return Switch(**_where(element, at), cases=specs)


def _case(builder: _Builder, element: Element, at: _At) -> Case:
    el.attributes(element)
    is_default = element.tag == "default"
    body = _body(element, context=True, conditions="none" if is_default else "required")
    context = builder.context(body.context, at)
    children = builder.children(body.activities, at)
    conditions = body.conditions
    return Case(
        **_where(element, at),
        context=context,
        children=children,
        conditions=conditions,
        is_default=is_default,
    )


def _action(builder: _Builder, element: Element, at: _At) -> Action:
    names = ("participant", "kind", "queue", "timeout", "retries", "retry-delay")
    found = el.attributes(element, *names)
    el.leaf(element)
    return Action(
        **_where(element, at),
        participant=str(el.name_attribute(element, found, "participant", needed=True)),
        kind=el.optional(element, found, "kind", values.participant_kind),
        queue=_queue(element, found),
        timeout=el.optional(element, found, "timeout", values.positive_seconds),
        retries=el.optional(element, found, "retries", values.count) or 0,
        retry_delay=el.optional(element, found, "retry-delay", values.non_negative_seconds) or 0.0,
    )


def _queue(element: Element, found: dict[str, str]) -> str | None:
    queue = el.name_attribute(element, found, "queue", needed=False)
    if queue is not None and queue.startswith("amq."):
        raise el.error(
            element, f'<action queue="{queue}">: names starting amq. are RabbitMQ\'s own'
        )
    return queue


def _call(builder: _Builder, element: Element, at: _At) -> Call:
    process = el.required(element, el.attributes(element, "process"), "process")
    el.leaf(element)
    called = _CALLED.fullmatch(process)
    if called is None:
        problem = 'expected $ followed by a property name, as in process="$definition"'
        raise el.error(element, f'<call process="{process}">: {problem}')
    return Call(**_where(element, at), process=called.group(1))


def _delay(builder: _Builder, element: Element, at: _At) -> Delay:
    found = el.attributes(element, "duration")
    el.required(element, found, "duration")
    el.leaf(element)
    duration = el.optional(element, found, "duration", values.non_negative_seconds)
    return Delay(**_where(element, at), duration=duration or 0.0)


def _await(builder: _Builder, element: Element, at: _At) -> Await:
    found = el.attributes(element, "event", "timeout")
    event = str(el.name_attribute(element, found, "event", needed=True))
    timeout = el.optional(element, found, "timeout", values.positive_seconds)
    body = _body(element, context=False, conditions="optional", activities=False)
    return Await(**_where(element, at), event=event, conditions=body.conditions, timeout=timeout)


def _fault(builder: _Builder, element: Element, at: _At) -> Fault:
    found = el.attributes(element, "code", "message")
    el.leaf(element)
    code = el.required(element, found, "code") if "code" in found else "Fault"
    return Fault(**_where(element, at), code=code, message=found.get("message", ""))


def _assign(builder: _Builder, element: Element, at: _At) -> Assign:
    name = el.required(element, el.attributes(element, "property"), "property")
    if name.startswith(_ENGINE_PREFIX):
        raise el.error(
            element, f'<assign property="{name}">: {_ENGINE_PREFIX} properties are read-only'
        )
    source = el.text(element)
    if not source.strip():
        raise el.error(element, "<assign> needs an expression as its text")
    expression = compile_expression(source, el.line(element))
    return Assign(**_where(element, at), property=name, expression=expression)


_READERS: dict[str, Reader[Activity]] = {
    "sequence": _sequence,
    "action": _action,
    "switch": _switch,
    "while": _while,
    "foreach": _foreach,
    "all": _all,
    "call": _call,
    "delay": _delay,
    "await": _await,
    "fault": _fault,
    "assign": _assign,
}
