"""The XML reader: the README's definitions, every kind of error with its line, paths, values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bureaucrat import bounds, ctl
from bureaucrat.definition import (
    Action,
    All,
    Assign,
    Await,
    Call,
    Case,
    Definition,
    Delay,
    Fault,
    Foreach,
    InvalidDefinitionError,
    ParticipantKind,
    Process,
    PropertyType,
    Sequence,
    Switch,
    While,
    elements,
    parse_definition,
)
from bureaucrat.definition import xml as reader
from bureaucrat.errors import DefinitionError

SEED = Path(__file__).parent / "fixtures" / "seed"


def error_of(source: str | bytes) -> DefinitionError:
    with pytest.raises(DefinitionError) as raised:
        parse_definition(source)
    return raised.value


def process(body: str) -> str:
    """``body`` inside ``<process>``; its first line is line 2."""
    return f"<process>\n{body}\n</process>"


# the README's definitions ------------------------------------------------------------------------


def test_readme_await_example() -> None:
    definition = parse_definition((SEED / "await.xml").read_bytes())
    (wait,) = definition.root.children
    assert isinstance(wait, Await)
    assert (wait.path, wait.parent, wait.line, wait.event) == ("0", "", 2, "fake_event_name")
    assert [c.source for c in wait.conditions] == ['context["precondition"] is True']
    assert wait.conditions[0].evaluate({"context": {"precondition": True}}) is True


def test_readme_assign_example() -> None:
    definition = parse_definition((SEED / "assign.xml").read_text())
    root = definition.root
    assert root.context is not None
    assert root.context.initial_values() == {"prop1": 0, "prop2": 3}
    assign, action = root.children
    assert isinstance(assign, Assign) and isinstance(action, Action)
    assert assign.property == "prop1"
    assert assign.expression.evaluate({"context": root.context.initial_values()}) == 8
    assert (action.path, action.participant, action.line) == ("1", "p1", 7)


def test_readme_fault_handlers_example() -> None:
    definition = parse_definition((SEED / "faults.xml").read_text())
    sequence = definition.activity("0")
    assert isinstance(sequence, Sequence) and sequence.context is not None
    first, default = sequence.context.handlers
    assert (first.codes, first.path, first.line) == (("SomeError", "AnotherError"), "0_f0", 5)
    assert (default.codes, default.path, default.is_default) == ((), "0_f1", True)
    assert [a.path for a in first.activities] == ["0_f0_0"]
    assert [a.parent for a in default.activities] == ["0"]
    assert sequence.context.handler_for("AnotherError") == 0
    assert sequence.context.handler_for("Other") == 1
    assert definition.handlers == {"0_f0": first, "0_f1": default}
    assert [c.path for c in sequence.children] == ["0_0"]


def test_readme_fault_example_is_malformed_xml() -> None:
    # As printed in the README, <condition> is closed by </context>.
    error = error_of((SEED / "fault.xml").read_text())
    assert error.line == 6
    assert str(error) == (
        "line 6: malformed XML: Opening and ending tag mismatch: condition line 6 and context"
    )


def test_readme_fault_example_once_repaired() -> None:
    text = (SEED / "fault.xml").read_text().replace("</context>\n            <", "</condition>\n<")
    switch = parse_definition(text).activity("1")
    assert isinstance(switch, Switch)
    assert [case.path for case in switch.cases] == ["1_0", "1_1"]
    fault = switch.cases[1].children[0]
    assert isinstance(fault, Fault) and fault.code == "CustomError"


# errors, each with its line ---------------------------------------------------------------------

ERRORS = [
    # XML itself
    (
        "<process>\n<sequence>\n</process>",
        3,
        "malformed XML: Opening and ending tag mismatch: sequence line 2 and process",
    ),
    ("", 1, "malformed XML: Document is empty"),
    ("<process/>\n<process/>", 2, "malformed XML: Extra content at the end of the document"),
    ("<process>&undefined;</process>", 1, "malformed XML: Entity 'undefined' not defined"),
    (
        '<?xml version="1.0"?>\n<!DOCTYPE p [<!ENTITY a "aaaa">]>\n<process>&a;</process>',
        2,
        "DOCTYPE declarations are not allowed",
    ),
    ("<sequence/>", 1, "the root element must be <process>, not <sequence>"),
    ('<process xmlns="urn:x"/>', 1, "the root element must be <process>, not <{urn:x}process>"),
    # elements in the wrong place
    (
        process('<sequence>\n<actoin participant="p"/>\n</sequence>'),
        3,
        "unknown element <actoin> inside <sequence>",
    ),
    (
        process('<x:action xmlns:x="urn:x" participant="p"/>'),
        2,
        "unknown element <{urn:x}action> inside <process>",
    ),
    (process("<property name='a'/>"), 2, "<property> is not allowed inside <process>"),
    (process("<context/>\n<context/>"), 3, "<process> can have only one <context>"),
    (
        process("<switch>\n<context/>\n<case><condition>1</condition></case>\n</switch>"),
        3,
        "<context> is not allowed inside <switch>",
    ),
    (
        process("<context><action participant='p'/></context>"),
        2,
        "<action> is not allowed inside <context>",
    ),
    (
        process("<sequence><condition>1</condition></sequence>"),
        2,
        "<condition> is not allowed inside <sequence>",
    ),
    # text
    (
        process('<sequence>hello<action participant="p"/></sequence>'),
        2,
        'unexpected text "hello" inside <sequence>',
    ),
    (
        process('<sequence>\n<action participant="p"/> and\n more\n</sequence>'),
        3,
        'unexpected text "and more" inside <sequence>',
    ),
    (process('<action participant="p">go</action>'), 2, 'unexpected text "go" inside <action>'),
    (process('<action participant="p">\n<param/></action>'), 3, "<action> cannot contain <param>"),
    (process("<assign property='a'>1<b/></assign>"), 2, "<assign> cannot contain <b>"),
    # attributes
    (process("<action/>"), 2, "<action> needs the attribute participant"),
    (process("<action participant=' '/>"), 2, "<action>: the attribute participant is empty"),
    (
        process("<action partcipant='q'/>"),
        2,
        "<action> needs the attribute participant",
    ),
    (
        process("<action participant='p' kind='rabbit'/>"),
        2,
        '<action> attribute kind: unknown kind "rabbit" (expected celery or taskqueue)',
    ),
    (
        process("<action participant='p' queue=''/>"),
        2,
        "<action> attribute queue: the value is empty",
    ),
    (
        process("<action participant='p' timeout='0'/>"),
        2,
        '<action> attribute timeout: "0" is not a positive number of seconds',
    ),
    (
        process("<action participant='p' timeout='soon'/>"),
        2,
        '<action> attribute timeout: "soon" is not a positive number of seconds',
    ),
    (
        process("<action participant='p' retries='-1'/>"),
        2,
        '<action> attribute retries: "-1" is not a whole number >= 0',
    ),
    (
        process("<action participant='p' retry-delay='inf'/>"),
        2,
        '<action> attribute retry-delay: "inf" is not a non-negative number of seconds',
    ),
    # properties
    (
        process("<context>\n<property name='n' type='integer'>1</property>\n</context>"),
        3,
        'property "n": unknown type "integer" (expected one of int, float, str, bool, json)',
    ),
    (
        process("<context><property name='n' type='int'>abc</property></context>"),
        2,
        'property "n": "abc" is not an int',
    ),
    (
        process("<context><property name='n' type='int'/></context>"),
        2,
        'property "n": "" is not an int',
    ),
    (
        process("<context><property name='f' type='float'>nan</property></context>"),
        2,
        'property "f": "nan" is not a float',
    ),
    (
        process("<context><property name='b' type='bool'>maybe</property></context>"),
        2,
        'property "b": "maybe" is not a bool (expected one of 0, 1, true, false, yes, no)',
    ),
    (
        process("<context><property name='j' type='json'>{</property></context>"),
        2,
        'property "j": the value is not valid JSON: Expecting property name enclosed in double '
        "quotes at line 1 column 2 of the value",
    ),
    (
        process("<context><property name='j' type='json'>NaN</property></context>"),
        2,
        'property "j": the value is not valid JSON: NaN is not a JSON number',
    ),
    (
        process("<context><property type='int'>1</property></context>"),
        2,
        "<property> needs the attribute name",
    ),
    (
        process("<context>\n<property name='a'/>\n<property name='a'/>\n</context>"),
        4,
        'property "a" is declared twice in this <context>',
    ),
    (
        process("<context><property name='a'><b/></property></context>"),
        2,
        "<property> cannot contain <b>",
    ),
    # faults
    (process("<context><faults/><faults/></context>"), 2, "<context> can have only one <faults>"),
    (
        process("<context><faults>\n<case><action participant='p'/></case>\n</faults></context>"),
        3,
        "<case> needs the attribute code",
    ),
    (
        process("<context><faults>\n<case code='A, ,B'/>\n</faults></context>"),
        3,
        '<case code="A, ,B">: one of the fault codes is empty',
    ),
    (
        process("<context><faults>\n<other/>\n</faults></context>"),
        3,
        "unknown element <other> inside <faults>",
    ),
    (
        process(
            "<context><faults><case code='A'>\n<condition>1</condition>\n</case></faults></context>"
        ),
        3,
        "<condition> is not allowed inside <case>",
    ),
    (
        process("<context><faults><default><context/></default></faults></context>"),
        2,
        "<context> is not allowed inside <default>",
    ),
    # switch
    (
        process("<switch>\n<case>\n<action participant='p'/>\n</case>\n</switch>"),
        3,
        "<case> needs at least one <condition>",
    ),
    (process("<switch/>"), 2, "<switch> needs at least one <case>"),
    (process("<switch>\n<default/>\n</switch>"), 2, "<switch> needs at least one <case>"),
    (
        process(
            "<switch>\n<case><condition>1</condition></case>\n<default/>\n"
            "<case><condition>1</condition></case>\n</switch>"
        ),
        4,
        "<default> must be the last child of <switch>",
    ),
    (
        process(
            "<switch>\n<action participant='p'/>\n<case><condition>1</condition></case>\n</switch>"
        ),
        3,
        "<action> is not allowed inside <switch>",
    ),
    (
        process(
            "<switch><case><condition>1</condition></case><default>\n<condition>1</condition>"
            "\n</default></switch>"
        ),
        3,
        "<condition> is not allowed inside <default>",
    ),
    # while and conditions
    (
        process("<while>\n<action participant='p'/>\n</while>"),
        2,
        "<while> needs at least one <condition>",
    ),
    (
        process("<while>\n<condition> </condition>\n</while>"),
        3,
        "<condition> is empty: it needs an expression",
    ),
    (
        process("<while>\n<condition>context['x'] ></condition>\n</while>"),
        3,
        "expression \"context['x'] >\": syntax error: invalid syntax",
    ),
    # foreach, call, delay, await, fault, assign
    (process("<foreach/>"), 2, "<foreach> needs the attribute select"),
    (
        process("<foreach select='a..b'/>"),
        2,
        '<foreach select="a..b">: expected a dotted path like a.b',
    ),
    (
        process("<call process='definition'/>"),
        2,
        '<call process="definition">: expected $ followed by a property name, as in '
        'process="$definition"',
    ),
    (
        process("<call process='$'/>"),
        2,
        '<call process="$">: expected $ followed by a property name, as in process="$definition"',
    ),
    (process("<call/>"), 2, "<call> needs the attribute process"),
    (process("<delay/>"), 2, "<delay> needs the attribute duration"),
    (
        process("<delay duration='-1'/>"),
        2,
        '<delay> attribute duration: "-1" is not a non-negative number of seconds',
    ),
    (
        process("<delay duration='1_0'/>"),
        2,
        '<delay> attribute duration: "1_0" is not a non-negative number of seconds',
    ),
    (
        process("<delay duration='1e999'/>"),
        2,
        '<delay> attribute duration: "1e999" is not a non-negative number of seconds',
    ),
    (process("<await/>"), 2, "<await> needs the attribute event"),
    (
        process("<await event='e'>\n<action participant='p'/>\n</await>"),
        3,
        "<action> is not allowed inside <await>",
    ),
    (process("<await event='e'><context/></await>"), 2, "<context> is not allowed inside <await>"),
    (
        process("<await event='e' timeout='-5'/>"),
        2,
        '<await> attribute timeout: "-5" is not a positive number of seconds',
    ),
    (process("<fault code=''/>"), 2, "<fault>: the attribute code is empty"),
    (process("<fault code='A'><b/></fault>"), 2, "<fault> cannot contain <b>"),
    (process("<assign>1</assign>"), 2, "<assign> needs the attribute property"),
    (process("<assign property='p'>\n</assign>"), 2, "<assign> needs an expression as its text"),
    (
        process("<assign property='p'>__import__('os')</assign>"),
        2,
        "expression \"__import__('os')\": name __import__ not allowed",
    ),
    (
        process("<assign property='p'>context.__class__</assign>"),
        2,
        "expression 'context.__class__': attribute access (.__class__) not allowed; "
        "write context[...]",
    ),
]


@pytest.mark.parametrize(("source", "line", "problem"), ERRORS)
def test_errors_name_the_line_and_the_problem(source: str, line: int, problem: str) -> None:
    error = error_of(source)
    assert (error.line, error.problem) == (line, problem)
    assert str(error) == f"line {line}: {problem}"
    assert isinstance(error, InvalidDefinitionError) and error.problems == ((line, problem),)


def test_bytes_errors_name_the_line_too() -> None:
    error = error_of(process('<action participant="p" retries="x"/>').encode())
    assert str(error) == 'line 2: <action> attribute retries: "x" is not a whole number >= 0'


# encodings and lexical details ------------------------------------------------------------------


def test_str_with_an_encoding_declaration_parses() -> None:
    text = '<?xml version="1.0" encoding="ISO-8859-1"?>\n<process name="café"/>'
    assert parse_definition(text).name == "café"
    assert parse_definition(text.encode("iso-8859-1")).name == "café"
    assert parse_definition(text.replace("ISO-8859-1", "utf-8").encode()).name == "café"


def test_comments_cdata_and_processing_instructions_are_ignored() -> None:
    text = process(
        "<!-- a comment -->\n<?pi ignored?>\n"
        "<assign property='x'><![CDATA[1 < 2]]> <!-- inside --> and True</assign>"
    )
    (assign,) = parse_definition(text).root.children
    assert isinstance(assign, Assign)
    assert assign.expression.source == "1 < 2  and True"
    assert assign.line == 4


# paths and parents -------------------------------------------------------------------------------

NESTED = """<process name="nested">
  <context>
    <property name="items" type="json">[1, 2]</property>
    <faults>
      <case code="A"><action participant="h0"/></case>
      <default><action participant="h1a"/><action participant="h1b"/></default>
    </faults>
  </context>
  <sequence>
    <action participant="s"/>
    <delay duration="1"/>
  </sequence>
  <switch>
    <case>
      <condition>context["items"]</condition>
      <action participant="c"/>
    </case>
    <default>
      <context><property name="d">x</property></context>
      <while>
        <context><property name="i" type="int">0</property></context>
        <condition>context["i"] &lt; 3</condition>
        <assign property="i">context["i"] + 1</assign>
      </while>
    </default>
  </switch>
  <all>
    <foreach select="items">
      <context><faults><default><fault code="X"/></default></faults></context>
      <call process="$sub"/>
    </foreach>
    <await event="go" timeout="5"/>
  </all>
</process>
"""

NESTED_PATHS = {
    "": (Process, None),
    "f0_0": (Action, ""),
    "f1_0": (Action, ""),
    "f1_1": (Action, ""),
    "0": (Sequence, ""),
    "0_0": (Action, "0"),
    "0_1": (Delay, "0"),
    "1": (Switch, ""),
    "1_0": (Case, "1"),
    "1_0_0": (Action, "1_0"),
    "1_1": (Case, "1"),
    "1_1_0": (While, "1_1"),
    "1_1_0_0": (Assign, "1_1_0"),
    "2": (All, ""),
    "2_0": (Foreach, "2"),
    "2_0_f0_0": (Fault, "2_0"),
    "2_0_0": (Call, "2_0"),
    "2_1": (Await, "2"),
}


def test_every_activity_has_its_path_and_parent() -> None:
    definition = parse_definition(NESTED)
    found = {path: (type(spec), spec.parent) for path, spec in definition.activities.items()}
    assert found == NESTED_PATHS
    assert all(spec.path == path for path, spec in definition.activities.items())
    assert sorted(definition.handlers) == ["2_0_f0", "f0", "f1"]
    assert [h.path for h in definition.root.context.handlers] == ["f0", "f1"]  # type: ignore[union-attr]
    assert [a.path for a in definition.handlers["f1"].activities] == ["f1_0", "f1_1"]
    assert definition.handlers["2_0_f0"].activities[0].parent == "2_0"


def test_nested_specs_hold_what_the_xml_says() -> None:
    definition = parse_definition(NESTED)
    assert definition.name == "nested"
    switch = definition.activity("1")
    assert isinstance(switch, Switch)
    case, default = switch.cases
    assert (case.is_default, default.is_default) == (False, True)
    assert [c.source for c in case.conditions] == ['context["items"]']
    assert default.context is not None and default.context.initial_values() == {"d": "x"}
    loop = definition.activity("1_1_0")
    assert isinstance(loop, While) and loop.conditions[0].line == 22
    foreach = definition.activity("2_0")
    assert isinstance(foreach, Foreach) and foreach.select == "items"
    call = definition.activity("2_0_0")
    assert isinstance(call, Call) and call.process == "sub"
    wait = definition.activity("2_1")
    assert isinstance(wait, Await) and (wait.event, wait.timeout, wait.conditions) == ("go", 5, ())


def test_the_eleventh_child_is_path_10() -> None:
    actions = "\n".join(f'<action participant="p{n}"/>' for n in range(12))
    text = f"<process>\n{actions}\n<sequence>\n{actions}\n</sequence>\n</process>"
    definition = parse_definition(text)
    eleventh = definition.root.children[10]
    assert isinstance(eleventh, Action)
    assert (eleventh.path, eleventh.participant, eleventh.line) == ("10", "p10", 12)
    assert definition.activity("11").parent == ""
    assert definition.activity("12_10") == definition.activity("12").children[10]  # type: ignore[attr-defined]
    assert [c.path for c in definition.activity("12").children][9:] == ["12_9", "12_10", "12_11"]  # type: ignore[attr-defined]
    assert "1_0" not in definition.activities


def test_an_empty_process_is_a_definition() -> None:
    definition = parse_definition("<process/>")
    assert definition == Definition(
        root=Process(path="", parent=None, line=1), activities={"": definition.root}, handlers={}
    )
    assert definition.name is None


# values ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("int", " 42 ", 42),
        ("int", "-3", -3),
        ("float", "2.5", 2.5),
        ("float", " 1e3\n", 1000.0),
        ("float", "7", 7.0),
        ("str", "", ""),
        ("str", "  spaced out ", "  spaced out "),
        (None, "plain", "plain"),
        ("bool", "TRUE", True),
        ("bool", " yes ", True),
        ("bool", "1", True),
        ("bool", "False", False),
        ("bool", "no", False),
        ("bool", "0", False),
        ("json", '{"a": [1, 2.5, null, true]}', {"a": [1, 2.5, None, True]}),
        ("json", " null ", None),
        ("json", '"text"', "text"),
    ],
)
def test_property_values(kind: str | None, text: str, expected: Any) -> None:
    type_attribute = f' type="{kind}"' if kind else ""
    source = process(f'<context><property name="p"{type_attribute}>{text}</property></context>')
    context = parse_definition(source).root.context
    assert context is not None
    (prop,) = context.properties
    assert prop.value == expected and type(prop.value) is type(expected)
    assert (prop.name, prop.type, prop.line) == ("p", PropertyType(kind or "str"), 2)


@pytest.mark.parametrize(
    ("kind", "text", "problem"),
    [
        ("int", "4.0", '"4.0" is not an int'),
        ("int", "1_000", '"1_000" is not an int'),
        ("int", "٣", '"٣" is not an int'),
        ("int", "9" * 5000, "is not an int (too many digits)"),
        ("int", "9" * 4000, "is not an int (too many digits)"),
        ("float", "1_000", '"1_000" is not a float'),
        ("float", "٣", '"٣" is not a float'),
        ("float", "nan", '"nan" is not a float'),
        ("float", "0x10", '"0x10" is not a float'),
        ("float", "inf", '"inf" is not a float'),
        ("float", "", '"" is not a float'),
        ("bool", "", '"" is not a bool'),
        ("json", "", "the value is not valid JSON: Expecting value"),
        ("json", "1e999", "the value is not valid JSON: 1e999 is too large a number"),
        ("json", "[" * 100_000 + "]" * 100_000, "the JSON value is nested too deeply"),
    ],
)
def test_bad_property_values(kind: str, text: str, problem: str) -> None:
    source = process(f'<context><property name="p" type="{kind}">{text}</property></context>')
    error = error_of(source)
    assert error.line == 2
    assert error.problem.startswith('property "p": ')
    assert problem in error.problem


def test_action_attributes() -> None:
    source = process(
        '<action participant=" tasks.send " kind="celery" queue="q1" timeout="2.5" retries="3"'
        ' retry-delay="0"/>\n<action participant="w"/>'
    )
    full, bare = parse_definition(source).root.children
    assert full == Action(
        path="0",
        parent="",
        line=2,
        participant="tasks.send",
        kind=ParticipantKind.CELERY,
        queue="q1",
        timeout=2.5,
        retries=3,
        retry_delay=0.0,
    )
    assert isinstance(bare, Action)
    assert (bare.kind, bare.queue, bare.timeout, bare.retries, bare.retry_delay) == (
        None,
        None,
        None,
        0,
        0.0,
    )


def test_simple_activity_defaults() -> None:
    source = process('<fault/>\n<fault code="E" message="m"/>\n<delay duration="0"/>')
    plain, full, delay = parse_definition(source).root.children
    assert isinstance(plain, Fault) and (plain.code, plain.message) == ("terminate", "")
    assert isinstance(full, Fault) and (full.code, full.message) == ("E", "m")
    assert isinstance(delay, Delay) and delay.duration == 0.0


# limits ------------------------------------------------------------------------------------------


def nested(levels: int) -> str:
    return "<process>" + "<sequence>" * levels + "</sequence>" * levels + "</process>"


def test_nesting_up_to_the_limit_is_fine() -> None:
    definition = parse_definition(nested(reader.MAX_DEPTH))
    deepest = "_".join(["0"] * reader.MAX_DEPTH)
    assert isinstance(definition.activity(deepest), Sequence)


def test_nesting_beyond_the_limit_is_refused() -> None:
    error = error_of(nested(reader.MAX_DEPTH + 1))
    assert str(error) == f"line 1: activities are nested more than {reader.MAX_DEPTH} levels deep"


def test_nesting_beyond_what_lxml_accepts_is_refused() -> None:
    error = error_of(nested(300))
    assert error.problem.startswith("malformed XML: Excessive depth in document: 256")


def test_too_many_activities_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "MAX_ACTIVITIES", 10)
    assert len(parse_definition(process('<delay duration="1"/>\n' * 9)).activities) == 10
    error = error_of(process('<delay duration="1"/>\n' * 10))
    assert str(error) == "line 11: the definition has more than 10 activities"


def test_an_activity_id_longer_than_the_bound_is_refused_with_its_line() -> None:
    """Ids of activities end up in workitem ids, AMQP short strings: a definition whose
    activities would get ids too long is refused when read, not when a message is sent."""
    wide = "<sequence>" + '<delay duration="1"/>' * 11
    levels = 6  # each sequence is the 12th child of the one around it: 0_11_11_...
    deep = "<process>" + wide * levels + "</sequence>" * levels + "</process>"
    assert isinstance(parse_definition(deep).activity("0" + "_11" * (levels - 1)), Sequence)
    too_deep = "<process>\n" + wide * 22 + "</sequence>" * 22 + "</process>"
    error = error_of(too_deep)
    assert error.line == 2
    assert f"longer than {bounds.MAX_ACTIVITY_PATH} characters" in error.problem


@pytest.mark.parametrize(
    ("attribute", "element"),
    [
        ("participant", '<action participant="{}"/>'),
        ("queue", '<action participant="p" queue="{}"/>'),
        ("event", '<await event="{}"/>'),
    ],
)
def test_names_that_end_up_in_amqp_are_bounded(attribute: str, element: str) -> None:
    fits = "p" * bounds.MAX_NAME
    parse_definition(process(element.format(fits)))
    error = error_of(process(element.format(fits + "p")))
    assert f"the attribute {attribute} is {bounds.MAX_NAME + 1} bytes long" in error.problem


def test_a_process_name_is_bounded_and_engine_properties_cannot_be_declared() -> None:
    error = error_of(f'<process name="{"n" * 201}"><delay duration="1"/></process>')
    assert "the attribute name is 201 bytes long" in error.problem
    error = error_of(
        '<process><context><property name="inst:fault" type="json">{}</property></context>'
        '<delay duration="1"/></process>'
    )
    assert "inst: properties are the engine's own" in error.problem
    error = error_of(process('<action participant="p" queue="amq.direct"/>'))
    assert "amq." in error.problem


# leniency, as the original's reader: what it accepted and what we still refuse -----------------


def test_a_context_after_the_activities_is_the_blocks_context() -> None:
    definition = parse_definition(
        process(
            '<sequence>\n<action participant="a"/>\n<action participant="b"/>\n'
            '<context><property name="n" type="int">1</property></context>\n</sequence>'
        )
    )
    sequence = definition.activity("0")
    assert isinstance(sequence, Sequence) and sequence.context is not None
    assert sequence.context.initial_values() == {"n": 1}
    assert [child.path for child in sequence.children] == ["0_0", "0_1"]
    assert definition.warnings == ()


def test_conditions_and_context_anywhere_in_a_while() -> None:
    definition = parse_definition(
        process(
            "<while>\n<condition>context['i'] &lt; 3</condition>\n"
            "<context><property name='i' type='int'>0</property></context>\n"
            "<assign property='i'>context['i'] + 1</assign>\n"
            "<condition>False</condition>\n</while>"
        )
    )
    loop = definition.activity("0")
    assert isinstance(loop, While) and loop.context is not None
    assert [c.source for c in loop.conditions] == ["context['i'] < 3", "False"]
    assert [(c.path, c.line) for c in loop.children] == [("0_0", 5)]


def test_a_default_anywhere_in_faults_is_tried_last() -> None:
    definition = parse_definition(
        process(
            "<sequence><context><faults>\n<default><action participant='d'/></default>\n"
            "<case code='A'><action participant='a'/></case>\n</faults></context></sequence>"
        )
    )
    sequence = definition.activity("0")
    assert isinstance(sequence, Sequence) and sequence.context is not None
    case, default = sequence.context.handlers
    assert (case.codes, case.path, case.line) == (("A",), "0_f0", 4)
    assert (default.is_default, default.path, default.line) == (True, "0_f1", 3)
    assert sequence.context.handler_for("A") == 0
    assert sequence.context.handler_for("B") == 1


def test_unknown_attributes_are_ignored_with_a_warning_and_its_line() -> None:
    definition = parse_definition(
        process(
            "<sequence description='steps'>\n"
            "<action participant='p' description='does p' retires='3'/>\n"
            "<while><condition a='1'>False</condition></while>\n</sequence>"
        )
    )
    action = definition.activity("0_0")
    assert isinstance(action, Action) and action.retries == 0
    assert [(w.line, w.problem) for w in definition.warnings] == [
        (2, "unknown attribute description on <sequence> ignored (it takes none)"),
        (
            3,
            "unknown attribute description on <action> ignored (expected participant, kind, "
            "queue, timeout, retries, retry-delay)",
        ),
        (
            3,
            "unknown attribute retires on <action> ignored (expected participant, kind, "
            "queue, timeout, retries, retry-delay)",
        ),
        (4, "unknown attribute a on <condition> ignored (it takes none)"),
    ]
    assert str(definition.warnings[0]) == (
        "line 2: unknown attribute description on <sequence> ignored (it takes none)"
    )


def test_the_parent_attribute_of_the_originals_call_is_accepted() -> None:
    definition = parse_definition('<process parent="abc_0_1" name="sub"/>')
    assert definition.name == "sub" and definition.warnings == ()


@pytest.mark.parametrize(
    ("body", "line", "problem"),
    [
        (
            "<sequence>\n<context/>\n<action participant='p'/>\n<context/>\n</sequence>",
            5,
            "<sequence> can have only one <context>",
        ),
        ("<foo/>", 2, "unknown element <foo> inside <process>"),
        ("<action description='x'/>", 2, "<action> needs the attribute participant"),
        (
            "<context><faults>\n<default/>\n<default/>\n</faults></context>",
            4,
            "<faults> can have only one <default>",
        ),
        (
            "<foreach select='items'><condition>1</condition></foreach>",
            2,
            "<condition> is not allowed inside <foreach>",
        ),
    ],
)
def test_structure_without_meaning_is_still_refused(body: str, line: int, problem: str) -> None:
    error = error_of(process(body))
    assert (error.line, error.problem) == (line, problem)


# every problem in one reading -------------------------------------------------------------------


def test_every_problem_is_reported_with_its_line() -> None:
    source = (
        "<process>\n"
        "  <context><property name='n' type='int'>x</property></context>\n"
        "  <sequence>\n"
        "    <actoin participant='p'/>\n"
        "    <action participant='q'/>\n"
        "    <while>\n"
        "      <action participant='r' retries='many'/>\n"
        "    </while>\n"
        "  </sequence>\n"
        "  <assign property='x'>__import__('os')</assign>\n"
        "</process>"
    )
    error = error_of(source)
    assert isinstance(error, InvalidDefinitionError)
    assert error.problems == (
        (2, 'property "n": "x" is not an int'),
        (4, "unknown element <actoin> inside <sequence>"),
        (6, "<while> needs at least one <condition>"),
        (7, '<action> attribute retries: "many" is not a whole number >= 0'),
        (10, "expression \"__import__('os')\": name __import__ not allowed"),
    )
    assert (error.line, error.problem) == (2, 'property "n": "x" is not an int')
    assert str(error).startswith('line 2: property "n": "x" is not an int; line 4: unknown')


def test_two_defaults_in_a_switch_are_two_problems() -> None:
    error = error_of(
        process(
            "<switch>\n<case><condition>1</condition></case>\n<default/>\n<default/>\n</switch>"
        )
    )
    assert isinstance(error, InvalidDefinitionError)
    assert error.problems == (
        (4, "<default> must be the last child of <switch>"),
        (5, "<switch> can have only one <default>"),
    )


def test_the_problems_reported_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(elements, "MAX_PROBLEMS", 5)
    error = error_of(process("\n".join("<foo/>" for _ in range(50))))
    assert isinstance(error, InvalidDefinitionError)
    assert [line for line, _ in error.problems] == [2, 3, 4, 5, 6]


def test_malformed_xml_reports_the_parsers_first_error() -> None:
    error = error_of("<process>\n<foo>\n<bar>\n</process>")
    assert isinstance(error, InvalidDefinitionError) and len(error.problems) == 1


# bureaucratctl validate ---------------------------------------------------------------------------


def test_validate_reports_every_problem_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(
        "<process>\n  <sequence>\n    <action participant='a'/>\n    <frob/>\n"
        "    <action participant='b'/>\n    <while>\n      <action participant='c'/>\n"
        "    </while>\n  </sequence>\n</process>\n"
    )
    assert ctl.main(["validate", str(path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:4: unknown element <frob> inside <sequence>",
        f"{path}:6: <while> needs at least one <condition>",
    ]


def test_validate_prints_warnings_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "lenient.xml"
    path.write_text(
        '<process parent="x_0">\n  <sequence description="steps">\n'
        '    <action participant="a"/>\n  </sequence>\n</process>\n'
    )
    assert ctl.main(["validate", str(path)]) == 0
    printed = capsys.readouterr()
    assert printed.err.splitlines() == [
        f"{path}:2: warning: unknown attribute description on <sequence> ignored (it takes none)"
    ]
    assert printed.out.splitlines() == [f"{path}: valid (2 activities)"]


def test_the_warnings_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(elements, "MAX_WARNINGS", 3)
    definition = parse_definition(process("\n".join("<sequence a='1' b='2'/>" for _ in range(5))))
    assert [(w.line, w.problem[:23]) for w in definition.warnings] == [
        (2, "unknown attribute a on "),
        (2, "unknown attribute b on "),
        (3, "unknown attribute a on "),
        (3, "and 7 more warnings, no"),
    ]


def test_a_long_unknown_attribute_is_shortened_in_its_warning() -> None:
    name = "x" * 1000
    (warning,) = parse_definition(f"<process {name}='1'/>").warnings
    assert (
        warning.problem
        == f"unknown attribute {'x' * 37}... on <process> ignored (expected name, parent, on-fault)"
    )
