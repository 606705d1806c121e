"""The XML reader: definition text in, an immutable ``Definition`` (see ``model``) out.

The text is untrusted: lxml parses it without entities, network access, DTDs or huge trees.
The reading is as lenient as the original's where that is harmless: a block's ``<context>`` and
``<condition>``s may stand anywhere among its children, ``<default>`` anywhere in ``<faults>``,
and an unknown attribute is ignored with a warning (``Definition.warnings``). What has no
meaning is a problem; every problem is reported at once, each with its line, by one
``InvalidDefinitionError`` (a ``DefinitionError``). Each activity is read by a short function found
through a table from tag name to reader (``_READERS``); paths and parents are assigned on the
way down, as ``model`` describes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Literal, TypedDict, TypeVar, cast

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
from bureaucrat.errors import DefinitionError

MAX_DEPTH = 32
"""Activities nested deeper than this are refused: the engine recurses once per level, and an
activity's id, which grows with its depth, is part of every workitem id (``bounds``)."""
MAX_ACTIVITIES = 100_000
"""A definition with more activities (switch cases and the root included) is refused."""

TERMINATE = "terminate"
"""The code of a ``<fault/>`` that names none, as in the original."""
ON_FAULT = ("fault", "suspend")
"""What ``<process on-fault=...>`` may say an uncaught fault does."""

A = TypeVar("A", bound=Activity)
T = TypeVar("T")
Conditions = Literal["none", "optional", "required"]
Reader = Callable[["_Builder", Element, "_At"], A]

_SELECT = re.compile(r"[^\s.]+(\.[^\s.]+)*")
_CALLED = re.compile(r"\$([^\s$]+)")
_ENGINE_PREFIX = el.ENGINE_PREFIX


def is_xml_text(text: str) -> bool:
    """Whether ``text`` is a definition's XML rather than the path of a file holding one (what
    the launcher and the local runner accept either way); a byte order mark may lead."""
    return text.lstrip("\ufeff \t\r\n").startswith("<")


def parse_definition(source: str | bytes) -> Definition:
    """Read a definition; ``DefinitionError`` (an ``InvalidDefinitionError``, with every
    problem and its line) if it cannot be accepted. What was ignored is in its ``warnings``."""
    try:
        root = el.parse_xml(source)
        if root.tag != "process":
            raise el.error(root, f"the root element must be <process>, not {el.name(root)}")
    except DefinitionError as error:  # malformed XML: the parser's first error is all there is
        raise el.InvalidDefinitionError([(error.line, error.problem)]) from None
    builder = _Builder()
    process = builder.build(_process, root, _At("", None, 0))
    builder.report.check()
    warnings = builder.report.kept_warnings()
    return Definition(process, builder.activities, builder.handlers, warnings)


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
    """Reads elements into specs, recording every activity and fault handler by path.

    A problem in one element is kept in ``report`` and the reading goes on with the next
    element, so that one reading finds every problem; the specs built meanwhile are never
    returned (``parse_definition`` raises them all at the end).
    """

    activities: dict[str, Activity] = field(default_factory=dict)
    handlers: dict[str, FaultHandler] = field(default_factory=dict)
    report: el.Report = field(default_factory=el.Report)
    count: int = 0

    def build(self, read: Reader[A], element: Element, at: _At) -> A:
        try:
            self._bounds(element, at)
            spec = read(self, element, at)
        except DefinitionError as problem:
            self.report.problem(problem)
            spec = cast(A, Sequence(**_where(element, at)))  # never returned: there is a problem
        self.activities[at.path] = spec
        return spec

    def _bounds(self, element: Element, at: _At) -> None:
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
            self.report.problem(
                el.error(element, f"the definition has more than {MAX_ACTIVITIES} activities")
            )
            raise self.report.failure()  # no reading on: the rest may be as large

    def attempt(self, check: Callable[[], T], default: T) -> T:
        """``check()``, or ``default`` after keeping the problem it raised."""
        try:
            return check()
        except DefinitionError as problem:
            self.report.problem(problem)
            return default

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
        el.attributes(self.report, element)
        properties: list[Property] = []
        faults: list[Element] = []
        for child in el.children(self.report, element):
            if child.tag == "property":
                spec = self.attempt(partial(el.property_spec, self.report, child, properties), None)
                if spec is not None:
                    properties.append(spec)
            elif child.tag == "faults" and not faults:
                faults.append(child)
            elif child.tag == "faults":
                self.report.problem(el.error(child, "<context> can have only one <faults>"))
            else:
                self.report.problem(el.misplaced(child, element))
        handlers = self.faults(faults[0], at) if faults else ()
        return Context(tuple(properties), handlers)

    def faults(self, element: Element, at: _At) -> tuple[FaultHandler, ...]:
        """The handlers of ``<faults>``: its cases in document order, then its ``<default>``,
        wherever it stands (as the original, which tried it last)."""
        el.attributes(self.report, element)
        cases = _cases(self, element, need_case=False, default_last=False)
        cases.sort(key=lambda case: case.tag == "default")
        return tuple(self.handler(case, at, index) for index, case in enumerate(cases))

    def handler(self, element: Element, block: _At, index: int) -> FaultHandler:
        codes: tuple[str, ...] = ("?",)  # only when there is a problem: never returned
        codes = self.attempt(partial(el.fault_codes, self.report, element), codes)
        body = _body(self, element, context=False)
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
    builder: _Builder,
    element: Element,
    *,
    context: bool,
    conditions: Conditions = "none",
    activities: bool = True,
) -> _Body:
    """Sort the children: the ``<context>`` if ``context`` (at most one), the conditions
    (if ``conditions`` says they may be there), the activities; each may stand anywhere, as
    in the original. Anything else is a problem, kept in the builder's report."""
    report = builder.report
    owned: Element | None = None
    found: list[Expression] = []
    seen = 0
    acts: list[Element] = []
    for child in el.children(report, element):
        if child.tag == "context" and context:
            if owned is None:
                owned = child
            else:
                report.problem(el.error(child, f"{el.name(element)} can have only one <context>"))
        elif child.tag == "condition" and conditions != "none":
            seen += 1
            expression = builder.attempt(partial(el.condition, report, child), None)
            if expression is not None:
                found.append(expression)
        elif activities and child.tag in _READERS:
            acts.append(child)
        else:
            report.problem(el.misplaced(child, element))
    if conditions == "required" and not seen:
        report.problem(el.error(element, f"{el.name(element)} needs at least one <condition>"))
    return _Body(owned, tuple(found), acts)


def _cases(
    builder: _Builder, element: Element, *, need_case: bool, default_last: bool
) -> list[Element]:
    """The children of ``<switch>`` or ``<faults>``: cases and at most one default (the last
    child if ``default_last``)."""
    report = builder.report
    children = el.children(report, element)
    accepted: list[Element] = []
    defaults = 0
    for index, child in enumerate(children):
        if child.tag not in ("case", "default"):
            report.problem(el.misplaced(child, element))
            continue
        if child.tag == "default":
            defaults += 1
            if default_last and index != len(children) - 1:
                where = el.name(element)
                report.problem(el.error(child, f"<default> must be the last child of {where}"))
                continue
            if defaults > 1:
                report.problem(el.error(child, f"{el.name(element)} can have only one <default>"))
                continue
        accepted.append(child)
    if need_case and not any(child.tag == "case" for child in children):
        report.problem(el.error(element, f"{el.name(element)} needs at least one <case>"))
    return accepted


# readers, one per activity element --------------------------------------------------------------


class _Parts(_Where):
    context: Context | None
    children: tuple[Activity, ...]


def _block(
    builder: _Builder, element: Element, at: _At, conditions: Conditions = "none"
) -> tuple[_Parts, tuple[Expression, ...]]:
    """What every block has: its place, its ``<context>`` and its activities; its conditions."""
    body = _body(builder, element, context=True, conditions=conditions)
    context = builder.context(body.context, at)
    children = builder.children(body.activities, at)
    return {**_where(element, at), "context": context, "children": children}, body.conditions


def _process(builder: _Builder, element: Element, at: _At) -> Process:
    # parent=: the original's <call> set it on the definition it launched; it means nothing here
    found = el.attributes(builder.report, element, "name", "parent", "on-fault")
    name = builder.attempt(lambda: el.name_attribute(element, found, "name", needed=False), None)
    on_fault = builder.attempt(lambda: el.choice(element, found, "on-fault", ON_FAULT), None)
    parts, _ = _block(builder, element, at)
    return Process(**parts, name=name, on_fault=on_fault)


def _sequence(builder: _Builder, element: Element, at: _At) -> Sequence:
    el.attributes(builder.report, element)
    parts, _ = _block(builder, element, at)
    return Sequence(**parts)


def _all(builder: _Builder, element: Element, at: _At) -> All:
    el.attributes(builder.report, element)
    parts, _ = _block(builder, element, at)
    return All(**parts)


def _while(builder: _Builder, element: Element, at: _At) -> While:
    el.attributes(builder.report, element)
    parts, conditions = _block(builder, element, at, conditions="required")
    return While(**parts, conditions=conditions)


def _foreach(builder: _Builder, element: Element, at: _At) -> Foreach:
    found = el.attributes(builder.report, element, "select")
    select = builder.attempt(lambda: _select(element, found), "")
    parts, _ = _block(builder, element, at)
    return Foreach(**parts, select=select)


def _select(element: Element, found: dict[str, str]) -> str:
    select = el.required(element, found, "select")
    if not _SELECT.fullmatch(select):
        raise el.error(element, f'<foreach select="{select}">: expected a dotted path like a.b')
    return select


def _switch(builder: _Builder, element: Element, at: _At) -> Switch:
    el.attributes(builder.report, element)
    cases = _cases(builder, element, need_case=True, default_last=True)
    specs = tuple(builder.build(_case, case, at.child(k)) for k, case in enumerate(cases))
    return Switch(**_where(element, at), cases=specs)


def _case(builder: _Builder, element: Element, at: _At) -> Case:
    el.attributes(builder.report, element)
    is_default = element.tag == "default"
    conditions: Conditions = "none" if is_default else "required"
    parts, found = _block(builder, element, at, conditions=conditions)
    return Case(**parts, conditions=found, is_default=is_default)


def _action(builder: _Builder, element: Element, at: _At) -> Action:
    names = ("participant", "kind", "queue", "timeout", "retries", "retry-delay")
    found = el.attributes(builder.report, element, *names)
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
    process = el.required(element, el.attributes(builder.report, element, "process"), "process")
    el.leaf(element)
    called = _CALLED.fullmatch(process)
    if called is None:
        problem = 'expected $ followed by a property name, as in process="$definition"'
        raise el.error(element, f'<call process="{process}">: {problem}')
    return Call(**_where(element, at), process=called.group(1))


def _delay(builder: _Builder, element: Element, at: _At) -> Delay:
    found = el.attributes(builder.report, element, "duration")
    el.required(element, found, "duration")
    el.leaf(element)
    duration = el.optional(element, found, "duration", values.non_negative_seconds)
    return Delay(**_where(element, at), duration=duration or 0.0)


def _await(builder: _Builder, element: Element, at: _At) -> Await:
    found = el.attributes(builder.report, element, "event", "timeout")
    event = str(el.name_attribute(element, found, "event", needed=True))
    timeout = el.optional(element, found, "timeout", values.positive_seconds)
    body = _body(builder, element, context=False, conditions="optional", activities=False)
    return Await(**_where(element, at), event=event, conditions=body.conditions, timeout=timeout)


def _fault(builder: _Builder, element: Element, at: _At) -> Fault:
    """``<fault/>`` without ``code`` raises ``terminate``, the original's code."""
    found = el.attributes(builder.report, element, "code", "message")
    el.leaf(element)
    code = (
        el.fault_code(element, el.required(element, found, "code"))
        if "code" in found
        else TERMINATE
    )
    return Fault(**_where(element, at), code=code, message=found.get("message", ""))


def _assign(builder: _Builder, element: Element, at: _At) -> Assign:
    found = el.attributes(builder.report, element, "property")
    name = el.required(element, found, "property")
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
