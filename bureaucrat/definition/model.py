"""The parsed form of a process definition: an immutable tree of activity specs.

A definition is data about a process, never about one of its instances: the engine keeps each
instance's progress in its own JSON state and looks specs up by their path.

Paths name activities inside a definition. The root ``<process>`` is ``""``; its n-th activity
child is ``"n"``; a grandchild is ``"n_m"``, and so on (``<context>`` and ``<condition>`` take no
index, wherever they stand). A switch's ``<case>`` and ``<default>`` elements are indexed like
activities. The k-th fault handler of a block (``<faults>`` cases in document order, then the
``<default>``, wherever it stands) runs its activities at ``<block>_f<k>_<i>``. The activity id
seen on the wire is the process id, then ``_`` and the path when the path is not empty.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bureaucrat.definition.expressions import Expression

JSON = Any
"""A value that survives a JSON round trip (None, bool, int, float, str, list, dict)."""


class PropertyType(enum.StrEnum):
    """The types a ``<property type=...>`` may declare."""

    INT = "int"
    FLOAT = "float"
    STR = "str"
    BOOL = "bool"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class Property:
    """``<property name="n" type="int">5</property>``: a context property and its initial value."""

    name: str
    type: PropertyType
    value: JSON
    line: int


@dataclass(frozen=True, slots=True)
class FaultHandler:
    """One ``<case code="A, B">`` (or the ``<default>``, with ``codes == ()``) of ``<faults>``.

    ``path`` is the prefix of its activities' paths: ``<block>_f<k>``.
    """

    codes: tuple[str, ...]
    activities: tuple[Activity, ...]
    path: str
    line: int

    @property
    def is_default(self) -> bool:
        return not self.codes

    def matches(self, code: str) -> bool:
        return self.is_default or code in self.codes


@dataclass(frozen=True, slots=True)
class Context:
    """``<context>``: the properties a block declares and the fault handlers it owns."""

    properties: tuple[Property, ...] = ()
    handlers: tuple[FaultHandler, ...] = ()

    def initial_values(self) -> dict[str, JSON]:
        return {prop.name: prop.value for prop in self.properties}

    def handler_for(self, code: str) -> int | None:
        """The index of the first handler that catches ``code``, or None."""
        for index, handler in enumerate(self.handlers):
            if not handler.is_default and handler.matches(code):
                return index
        for index, handler in enumerate(self.handlers):
            if handler.is_default:
                return index
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Activity:
    """What every activity spec has: its path, its parent's path and its XML line."""

    path: str
    parent: str | None
    line: int

    @property
    def tag(self) -> str:
        return type(self).__name__.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class Block(Activity):
    """An activity with activity children and, optionally, a ``<context>`` of its own."""

    context: Context | None = None
    children: tuple[Activity, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Process(Block):
    """``<process name="..." on-fault="suspend">``: the root; its activities run in sequence.

    ``on_fault``: what an uncaught fault does: ``fault`` ends the instance ``faulted``,
    ``suspend`` stops it ``suspended`` at the faulting activity for an operator (an incident);
    None leaves it to the configuration."""

    name: str | None = None
    on_fault: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Sequence(Block):
    """``<sequence>``: children one after the other; completes after the last."""


@dataclass(frozen=True, slots=True, kw_only=True)
class All(Block):
    """``<all>``: children in parallel; completes when every child has."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Case(Block):
    """``<case>`` (with conditions) or ``<default>`` (none) of a switch; runs like a sequence."""

    conditions: tuple[Expression, ...] = ()
    is_default: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Switch(Activity):
    """``<switch>``: runs the first case whose conditions hold (any of them), else the default."""

    cases: tuple[Case, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class While(Block):
    """``<while>``: a pre-tested loop; runs its children while any of its conditions holds."""

    conditions: tuple[Expression, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Foreach(Block):
    """``<foreach select="a.b">``: runs its children once per element of a list property."""

    select: str


class ParticipantKind(enum.StrEnum):
    """How an action's workitem reaches its participant."""

    CELERY = "celery"
    TASKQUEUE = "taskqueue"


@dataclass(frozen=True, slots=True, kw_only=True)
class Action(Activity):
    """``<action participant="p" [kind= queue= timeout= retries= retry-delay=]/>``."""

    participant: str
    kind: ParticipantKind | None = None
    queue: str | None = None
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Call(Activity):
    """``<call process="$prop"/>``: runs the definition held in property ``prop`` as a child."""

    process: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Delay(Activity):
    """``<delay duration="seconds"/>``: waits on a timer."""

    duration: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Await(Activity):
    """``<await event="name" [timeout=]>``: waits for an event for which a condition holds."""

    event: str
    conditions: tuple[Expression, ...] = ()
    timeout: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault(Activity):
    """``<fault code="C" message="M"/>``: raises a fault; ``<fault/>`` raises ``terminate``."""

    code: str
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Assign(Activity):
    """``<assign property="p">expression</assign>``: sets a property."""

    property: str
    expression: Expression


@dataclass(frozen=True, slots=True)
class DefinitionWarning:
    """Something in a definition that was accepted but ignored (an unknown attribute), at
    ``line``; ``bureaucratctl validate`` prints it."""

    line: int
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


@dataclass(frozen=True, slots=True)
class Definition:
    """A whole parsed definition: the root, every activity by path, and what was ignored."""

    root: Process
    activities: Mapping[str, Activity] = field(repr=False)
    handlers: Mapping[str, FaultHandler] = field(repr=False)
    warnings: tuple[DefinitionWarning, ...] = field(default=(), repr=False)

    @property
    def name(self) -> str | None:
        return self.root.name

    def activity(self, path: str) -> Activity:
        return self.activities[path]
