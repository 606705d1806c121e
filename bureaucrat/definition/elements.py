"""Safe XML parsing, and the reading of single elements: attributes, text, children, values.

Every check raises ``DefinitionError`` at the element's line, with the problem said the way a
person who wrote the XML would say it (``<action> needs the attribute participant``). What is
harmless is not refused: an attribute nobody reads is ignored, with a warning kept in the
``Report`` of the reading, which also collects the problems found so far, so that one reading
reports every problem of a definition (``InvalidDefinitionError``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from lxml import etree

from bureaucrat.bounds import MAX_NAME, check_id
from bureaucrat.definition import values
from bureaucrat.definition.expressions import Expression, compile_expression
from bureaucrat.definition.model import DefinitionWarning, Property
from bureaucrat.errors import DefinitionError

ENGINE_PREFIX = "inst:"
"""Properties the engine maintains (``inst:current``, ``inst:fault``...): read-only to users."""

Element = etree._Element
T = TypeVar("T")

ACTIVITY_TAGS = frozenset(
    {"sequence", "action", "switch", "while", "foreach", "all", "call", "delay", "await"}
    | {"fault", "assign"}
)
KNOWN_TAGS = ACTIVITY_TAGS | {"process", "context", "property", "faults", "case", "default"}
KNOWN_TAGS |= {"condition"}
"""Tags with a meaning somewhere: out of place, they are "not allowed", not "unknown"."""

_DECLARATION = re.compile(r"""^(\ufeff?<\?xml[^>]*?encoding\s*=\s*)(["'])[^"']*\2""")
_LOCATION = re.compile(r", line \d+, column \d+$")


MAX_PROBLEMS = 100
"""A reading stops after this many problems: they are reported, the rest is not read."""
MAX_WARNINGS = 100
"""Warnings kept for one definition; more are only counted."""
_SHOWN = 10
"""Problems spelled out in an ``InvalidDefinitionError``'s message (``problems`` holds them all)."""


class InvalidDefinitionError(DefinitionError):
    """Every problem found in a definition, in the order of their lines.

    ``line`` and ``problem`` are those of the first one, as for any ``DefinitionError``;
    ``problems`` holds (line, problem) for each of them.
    """

    def __init__(self, problems: list[tuple[int | None, str]]) -> None:
        line, problem = problems[0]
        super().__init__(problem, line)
        self.problems = tuple(problems)
        if len(problems) > 1:
            shown = [f"line {at}: {text}" if at is not None else text for at, text in problems]
            more = len(problems) - _SHOWN
            text = "; ".join(shown[:_SHOWN]) + (f"; and {more} more" if more > 0 else "")
            self.args = (text,)


@dataclass
class Report:
    """What reading one definition found: problems (it is refused) and warnings (it is not)."""

    problems: list[tuple[int | None, str]] = field(default_factory=list)
    warnings: list[DefinitionWarning] = field(default_factory=list)
    unshown: int = 0
    """Warnings past ``MAX_WARNINGS``, counted only."""

    def problem(self, error: DefinitionError) -> None:
        """Keep ``error`` and read on; at ``MAX_PROBLEMS``, stop the reading."""
        if isinstance(error, InvalidDefinitionError):
            raise error  # the reading was stopped: pass it on
        self.problems.append((error.line, error.problem))
        if len(self.problems) >= MAX_PROBLEMS:
            raise self.failure()

    def warn(self, element: Element, text: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(DefinitionWarning(line(element), text))
        else:
            self.unshown += 1

    def kept_warnings(self) -> tuple[DefinitionWarning, ...]:
        """The warnings in the order of their lines; past ``MAX_WARNINGS``, how many more."""
        kept = sorted(self.warnings, key=lambda warning: warning.line)
        if self.unshown:
            last = kept[-1].line
            kept.append(DefinitionWarning(last, f"and {self.unshown} more warnings, not shown"))
        return tuple(kept)

    def failure(self) -> InvalidDefinitionError:
        return InvalidDefinitionError(sorted(self.problems, key=lambda found: found[0] or 0))

    def check(self) -> None:
        """Raise what was found, if anything."""
        if self.problems:
            raise self.failure()


def parse_xml(source: str | bytes) -> Element:
    """Parse with a hardened parser; the root element, or ``DefinitionError``."""
    data = _as_bytes(source)
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        remove_comments=True,
        remove_pis=True,
        huge_tree=False,
    )
    try:
        root: Element = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as error:
        problem = _LOCATION.sub("", error.msg or str(error))
        raise DefinitionError(f"malformed XML: {problem}", error.lineno) from None
    doctype: str = getattr(root.getroottree().docinfo, "doctype", "")
    if doctype:
        raise DefinitionError("DOCTYPE declarations are not allowed", _line_of(data, b"<!DOCTYPE"))
    return root


def _as_bytes(source: str | bytes) -> bytes:
    """lxml refuses a str with an encoding declaration: encode it to UTF-8, and say so."""
    if isinstance(source, bytes):
        return source
    try:
        return _DECLARATION.sub(r"\1\2utf-8\2", source, count=1).encode("utf-8")
    except UnicodeEncodeError:
        raise DefinitionError("the definition is not valid Unicode text") from None


def _line_of(data: bytes, marker: bytes) -> int:
    index = data.find(marker)
    return data.count(b"\n", 0, index) + 1 if index >= 0 else 1


def line(element: Element) -> int:
    number = element.sourceline
    return number if isinstance(number, int) else 0


def error(element: Element, problem: str) -> DefinitionError:
    return DefinitionError(problem, line(element))


def name(element: Element) -> str:
    return f"<{element.tag}>"


def attributes(report: Report, element: Element, *allowed: str) -> dict[str, str]:
    """The element's attributes in ``allowed``; any other is ignored, with a warning."""
    found: dict[str, str] = {}
    for raw, value in element.attrib.items():
        key = str(raw)
        if key in allowed:
            found[key] = str(value)
        else:
            expected = f"expected {', '.join(allowed)}" if allowed else "it takes none"
            shown = key if len(key) <= 40 else key[:37] + "..."
            report.warn(
                element, f"unknown attribute {shown} on {name(element)} ignored ({expected})"
            )
    return found


def required(element: Element, found: dict[str, str], key: str) -> str:
    """Attribute ``key``, stripped; it must be present and not blank."""
    value = found.get(key)
    if value is None:
        raise error(element, f"{name(element)} needs the attribute {key}")
    if not value.strip():
        raise error(element, f"{name(element)}: the attribute {key} is empty")
    return value.strip()


def optional(
    element: Element, found: dict[str, str], key: str, convert: Callable[[str], T]
) -> T | None:
    """Attribute ``key`` converted, or None when absent; conversion errors name the attribute."""
    if key not in found:
        return None
    try:
        return convert(found[key])
    except ValueError as problem:
        raise error(element, f"{name(element)} attribute {key}: {problem}") from None


def name_attribute(
    element: Element, found: dict[str, str], key: str, *, needed: bool
) -> str | None:
    """Attribute ``key``, a name that ends up in AMQP short strings or database keys: at most
    ``bounds.MAX_NAME`` bytes, without control characters."""
    if needed:
        required(element, found, key)
    value = optional(element, found, key, not_blank)
    if value is not None:
        problem = check_id(value, f"the attribute {key}", MAX_NAME)
        if problem is not None:
            raise error(element, f"{name(element)}: {problem}")
    return value


def not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("the value is empty")
    return text.strip()


def children(report: Report, element: Element) -> list[Element]:
    """The child elements; text between them (whitespace is fine) is a problem."""
    try:
        check_text(element, element.text)
    except DefinitionError as problem:
        report.problem(problem)
    found: list[Element] = []
    for child in element:
        try:
            if not isinstance(child.tag, str):
                raise error(child, f"unexpected content inside {name(element)}")
            check_text(child, child.tail, inside=element)
        except DefinitionError as problem:
            report.problem(problem)
        if isinstance(child.tag, str):
            found.append(child)
    return found


def check_text(element: Element, text: str | None, inside: Element | None = None) -> None:
    if text and text.strip():
        shown = " ".join(text.split())
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise error(
            element,
            f'unexpected text "{shown}" inside {name(element if inside is None else inside)}',
        )


def text(element: Element) -> str:
    """The text of an element that holds text only (``<condition>``, ``<property>``...)."""
    for child in element:
        raise error(child, f"{name(element)} cannot contain {name(child)}")
    return element.text or ""


def leaf(element: Element) -> None:
    """Refuse any content in an element that has none (``<action/>``, ``<delay/>``...)."""
    text(element)
    check_text(element, element.text)


def misplaced(child: Element, parent: Element) -> DefinitionError:
    """The error for a child that is not allowed where it is."""
    where = name(parent)
    if child.tag in KNOWN_TAGS:
        return error(child, f"{name(child)} is not allowed inside {where}")
    return error(child, f"unknown element {name(child)} inside {where}")


# elements that hold a value ----------------------------------------------------------------------


def condition(report: Report, element: Element) -> Expression:
    """``<condition>expression</condition>``."""
    attributes(report, element)
    source = text(element)
    if not source.strip():
        raise error(element, "<condition> is empty: it needs an expression")
    return compile_expression(source, line(element))


def property_spec(report: Report, element: Element, earlier: list[Property]) -> Property:
    """``<property name= type=>value</property>``; ``earlier``: the context's properties so far."""
    found = attributes(report, element, "name", "type")
    prop = required(element, found, "name")
    if prop.startswith(ENGINE_PREFIX):
        raise error(element, f'property "{prop}": {ENGINE_PREFIX} properties are the engine\'s own')
    problem = check_id(prop, "the property name", MAX_NAME)
    if problem is not None:
        raise error(element, problem)
    if any(known.name == prop for known in earlier):
        raise error(element, f'property "{prop}" is declared twice in this <context>')
    try:
        kind = values.property_type(found.get("type", "str"))
        value = values.CONVERTERS[kind](text(element))
    except ValueError as problem:
        raise error(element, f'property "{prop}": {problem}') from None
    return Property(prop, kind, value, line(element))


def choice(
    element: Element, found: dict[str, str], key: str, allowed: tuple[str, ...]
) -> str | None:
    """Attribute ``key`` if present: one of ``allowed``."""
    value = found.get(key)
    if value is None:
        return None
    if value.strip() not in allowed:
        raise error(
            element, f'{name(element)}: {key}="{value[:40]}" is not one of {", ".join(allowed)}'
        )
    return value.strip()


def fault_code(element: Element, code: str) -> str:
    """A fault code a handler can catch: without a comma (``<case code="A, B">`` lists
    codes, so no handler could catch one)."""
    if "," in code:
        raise error(
            element,
            f'{name(element)} code="{code[:40]}": a fault raises one code, without commas '
            "(no handler could catch it)",
        )
    return code


def fault_codes(report: Report, element: Element) -> tuple[str, ...]:
    """The codes of a ``<faults>`` child: ``<case code="A, B">`` or ``<default>`` (none)."""
    if element.tag == "default":
        attributes(report, element)
        return ()
    raw = required(element, attributes(report, element, "code"), "code")
    codes = tuple(code.strip() for code in raw.split(","))
    if not all(codes):
        raise error(element, f'<case code="{raw}">: one of the fault codes is empty')
    return codes
