"""Hostile input at the wire edge: decoding refuses, with ``MessageError`` naming the problem,
whatever the bytes; ids are bounded where they enter; the launcher and ``bureaucratctl launch``
refuse what the engine would refuse. No broker needed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bureaucrat import bounds, ctl
from bureaucrat.config import Config
from bureaucrat.launcher import Launcher
from bureaucrat.messages import (
    Control,
    MessageError,
    answer_id,
    check_value,
    check_workitem,
    decode_event,
    decode_json,
    decode_launch,
    decode_message,
    decode_workitem,
    dumps,
    target_process_ids,
)
from bureaucrat.service import Outcome, Service
from bureaucrat.store import Store
from tests.store_fixtures import postgres_url, store, store_url
from tests.test_service import CONFIG, Message, Recorder, launch

__all__ = ["postgres_url", "store", "store_url"]  # fixtures, imported for pytest

DEEP = b"[" * 100_000 + b"]" * 100_000
NO_BROKER = "amqp://guest:guest@127.0.0.1:1/%2F"  # a check that is missing fails to connect


def nested(depth: int) -> Any:
    """``depth`` levels of lists around a number."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def refusal(decode: Any, *args: Any, **options: Any) -> str:
    with pytest.raises(MessageError) as caught:
        decode(*args, **options)
    return str(caught.value)


def response(**changes: Any) -> bytes:
    body = {"name": "response", "target": "p_0_1", "workitem_id": "p_0_1.1", "payload": {}}
    return json.dumps({**body, **changes}).encode()


# the JSON decoder ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (DEEP, "nests more than 100 levels deep"),
        (json.dumps({"a": nested(100)}).encode(), "nests more than 100 levels deep"),
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": [Infinity]}', "Infinity is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"a": 1e999}', "inf is not a JSON number"),
        (b'{"a": "\\u0000"}', "a string contains a NUL character"),
        (b'{"a\\u0000": 1}', "a key contains a NUL character"),
        (b'{"a": {"b": ["x\\ud800"]}}', "a string contains a lone surrogate (U+D800)"),
        (b'{"\\udfff": 1}', "a key contains a lone surrogate (U+DFFF)"),
        (b'{"a": "\xff"}', "is not UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', "is not UTF-8"),  # a surrogate encoded in UTF-8
        (b"\xff\xfe{\x00}\x00", "is not UTF-8"),  # UTF-16 is not taken either
        (b'{"a": ' + b"1" * 5000 + b"}", "not valid JSON"),
        (b'{"a": 1', "not valid JSON"),
    ],
)
def test_the_decoder_refuses(body: bytes, problem: str) -> None:
    assert problem in refusal(decode_json, body, "message")


def test_the_decoder_takes_what_json_allows() -> None:
    deepest = {"a": nested(99)}  # 100 levels with the object
    assert decode_json(json.dumps(deepest).encode(), "m") == deepest
    smile = '{"a": "\\ud83d\\ude00", "b": "\\\\u0000 is text"}'  # a pair; an escaped backslash
    assert decode_json(smile.encode(), "m") == {"a": "\U0001f600", "b": "\\u0000 is text"}
    assert decode_json(b'\xef\xbb\xbf{"bom": 1.5e300}', "m") == {"bom": 1.5e300}


def test_check_value_applies_the_same_checks_to_python_values() -> None:
    check_value({"a": [1, 2.5, "x", None, True], "t": (1, 2)}, "v")
    check_value({"a": nested(99)}, "v")
    for value, problem in [
        ({"a": nested(100)}, "nests more than 100 levels deep"),
        ({"a": math.nan}, "nan is not a JSON number"),
        ([-math.inf], "-inf is not a JSON number"),
        ({"a": "\x00"}, "a string contains a NUL character"),
        ({"\ud800": 1}, "a key contains a lone surrogate"),
        ({1: "one"}, "a key is a int"),
        ({"s": {1, 2}}, "a value of type set is not JSON data"),
        ({"n": 10**5000}, "an integer has more than 4300 digits"),
    ]:
        assert problem in refusal(check_value, value, "v"), value
    assert "nests more than 100" in refusal(check_value, nested(100), "v", depth=1)


def test_dumps_never_writes_nan() -> None:
    with pytest.raises(ValueError):
        dumps({"a": math.nan})
    assert dumps({"a": "é", "b": [1.5, None]}) == '{"a":"é","b":[1.5,null]}'.encode()


# ids where they enter ------------------------------------------------------------------------


def test_launch_ids_are_bounded() -> None:
    def launch_body(**envelope: Any) -> bytes:
        return json.dumps({"definition": "<process/>", **envelope}).encode()

    assert decode_launch(launch_body(process_id="p" * 128), None).process_id == "p" * 128
    problem = refusal(decode_launch, launch_body(process_id="p" * 129), None)
    assert "'process_id' is 129 bytes long, over the limit of 128" in problem
    parent = {"process_id": "p" * 128, "activity": "p" * 128 + "_" + "0" * 64}
    assert decode_launch(launch_body(parent=parent), None).parent == parent
    long_parent = {**parent, "process_id": "p" * 129}
    assert "over the limit of 128" in refusal(decode_launch, launch_body(parent=long_parent), None)
    long_activity = {**parent, "activity": parent["activity"] + "0"}
    assert "'activity' is 194 bytes long, over the limit of 193" in refusal(
        decode_launch, launch_body(parent=long_activity), None
    )
    assert "control character" in refusal(decode_launch, launch_body(process_id="a\nb"), None)


def test_launch_fields_may_not_set_inst_properties() -> None:
    body = json.dumps({"definition": "<process/>", "fields": {"inst:iteration": 3}}).encode()
    assert "inst: properties are the engine's own" in refusal(decode_launch, body, None)


@pytest.mark.parametrize(
    "body",
    [b"<process>\x00</process>", b"<process>\xff</process>", b"\xef\xbb\xbf<process>\x00"],
)
def test_an_xml_launch_with_nul_or_not_utf8_is_refused(body: bytes) -> None:
    problem = refusal(decode_launch, body, "application/xml")
    assert "NUL" in problem or "not UTF-8" in problem or "neither UTF-8" in problem


def test_control_ids_are_bounded() -> None:
    def control(**body: Any) -> bytes:
        return json.dumps(body).encode()

    assert "over the limit of 128" in refusal(
        decode_message, control(name="terminate", process_id="p" * 129)
    )
    finished = {"name": "child_finished", "process_id": "p", "status": "completed"}
    assert "'child_id' is 129 bytes long" in refusal(
        decode_message, control(**finished, child_id="c" * 129)
    )


def test_a_retry_names_its_activity_with_text() -> None:
    def retry(activity: Any) -> bytes:
        return json.dumps({"name": "retry", "process_id": "p", "activity": activity}).encode()

    for named in ("p_0_1", None):  # None: bureaucratctl's "every failed action"
        decoded = decode_message(retry(named))
        assert isinstance(decoded, Control) and decoded.body["activity"] == named
    for activity in (5, ["p_0"], {"a": 1}, True, ""):
        assert "'activity' must be a non-empty string" in refusal(decode_message, retry(activity))
    assert "over the limit of 193" in refusal(decode_message, retry("p" * 194))


def test_a_terminate_reason_is_text() -> None:
    body = {"name": "terminate", "process_id": "p", "reason": {"why": 1}}
    assert "'reason' must be a string" in refusal(decode_message, json.dumps(body).encode())


def terminate(**body: Any) -> bytes:
    return json.dumps({"name": "terminate", **body}).encode()


@pytest.mark.parametrize(
    ("target", "process_id"),
    [
        ("p", "p"),
        ("p_0_2", "p_0_2"),  # the longest first: the service tries each of target_process_ids
        ("my_proc", "my_proc"),
        ("a" * 128, "a" * 128),
        ("a" * 128 + "_0_2", "a" * 128),  # the target is too long to be a process id itself
        ("a" * 126 + "_0" + "_1" * 30, "a" * 126 + "_0"),
    ],
)
def test_the_original_terminate_names_its_process_by_target(target: str, process_id: str) -> None:
    """The original's terminate: ``{"name": "terminate", "target": ..., "origin": ...}``."""
    for origin in ("", target, None):
        payloads: list[dict[str, Any] | None] = [{}, None]
        for payload in payloads:
            decoded = decode_message(terminate(target=target, origin=origin, payload=payload))
            assert isinstance(decoded, Control)
            assert (decoded.name, decoded.process_id, decoded.target) == (
                "terminate",
                process_id,
                target,
            )


def test_target_process_ids_are_the_target_cut_at_activity_segments() -> None:
    assert target_process_ids("p") == ["p"]
    assert target_process_ids("my_proc_0_f1_12") == [
        "my_proc_0_f1_12",
        "my_proc_0_f1",
        "my_proc_0",
        "my_proc",
    ]
    assert target_process_ids("p_x_0") == ["p_x_0", "p_x"]
    assert target_process_ids("p__0") == ["p__0", "p_"]
    assert target_process_ids("p_\u0662") == ["p_\u0662"]  # only ASCII digits make a segment
    assert target_process_ids("a" * 129) == []


AWAIT = '<process><sequence><await event="never"/></sequence></process>'


def test_the_original_terminate_of_a_root_terminates_its_process(store: Store) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch(AWAIT, {}, "my_proc"))
    body = terminate(target="my_proc", origin="", payload={})
    assert service.handle(Message(CONFIG.message_queue, body, "t1")).outcome is Outcome.ACK
    record = store.instance("my_proc")
    assert record is not None and record.status == "terminated"


def test_the_original_terminate_of_an_activity_terminates_its_process(store: Store) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch(AWAIT, {}, "my_proc"))
    body = terminate(target="my_proc_0_0", origin="my_proc")
    assert service.handle(Message(CONFIG.message_queue, body, "t1")).outcome is Outcome.ACK
    record = store.instance("my_proc")
    assert record is not None and record.status == "terminated"


def test_a_terminate_with_a_process_id_keeps_it_and_no_target() -> None:
    decoded = decode_message(terminate(process_id="q", target="p_0", origin="p_0"))
    assert isinstance(decoded, Control)
    assert (decoded.process_id, decoded.target) == ("q", None)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"origin": ""}, "'process_id' is missing"),
        ({"target": ""}, "'target' must be a non-empty string"),
        ({"target": 42}, "'target' must be a non-empty string"),
        ({"target": None, "origin": ""}, "'process_id' is missing"),
        ({"target": "p" * 194}, "'target' is 194 bytes long, over the limit of 193"),
        ({"target": "p" * 129 + "_0"}, "names no process id of at most 128 bytes"),
        ({"target": "p\x00"}, "contains a NUL character"),
        ({"target": "p\n_0"}, "'target' contains a control character"),
        ({"target": "p", "origin": "o\x00"}, "contains a NUL character"),
        ({"target": "p", "origin": "o" * 215}, "'origin' is 215 bytes long"),
        ({"target": "p", "origin": ["p"]}, "'origin' must be a non-empty string"),
        ({"target": "p", "reason": 5}, "'reason' must be a string"),
    ],
)
def test_the_original_terminate_is_bounded(body: dict[str, Any], problem: str) -> None:
    assert problem in refusal(decode_message, terminate(**body))


def test_response_ids_are_bounded() -> None:
    longest = "p" * (bounds.MAX_WORKITEM_ID - 2) + ".1"
    assert decode_message(response(workitem_id=longest)).workitem_id == longest  # type: ignore[union-attr]
    problem = refusal(decode_message, response(workitem_id=longest + "0"))
    assert f"'workitem_id' is 215 bytes long, over the limit of {bounds.MAX_WORKITEM_ID}" in problem
    assert "'target' is 250 bytes long" in refusal(decode_message, response(target="t" * 250))
    assert "contains a NUL character" in refusal(decode_message, response(workitem_id="a\x00"))
    assert "'workitem_id' contains a control" in refusal(
        decode_message, response(workitem_id="a\n")
    )


def test_a_name_of_any_type_is_no_crash() -> None:
    assert decode_message(response(name=["terminate"])).workitem_id == "p_0_1.1"  # type: ignore[union-attr]
    assert decode_message(response(name={"a": 1})).target == "p_0_1"


def test_event_names_and_ids_are_bounded() -> None:
    assert decode_event(json.dumps({"event": "e" * 200}).encode()).name == "e" * 200
    problem = refusal(decode_event, json.dumps({"event": "e" * 201}).encode())
    assert "'event' is 201 bytes long, over the limit of 200" in problem
    problem = refusal(decode_event, json.dumps({"event": "go", "process_id": "p" * 129}).encode())
    assert "'process_id' is 129 bytes long" in problem


def test_an_event_process_id_may_be_a_number() -> None:
    assert decode_event(b'{"event": "go", "process_id": 42}').process_id == "42"
    assert decode_event(b'{"event": "go", "process_id": -7}').process_id == "-7"
    for scope in (b"true", b"4.2", b"[42]", b"{}"):
        body = b'{"event": "go", "process_id": ' + scope + b"}"
        assert "'process_id' must be a non-empty string" in refusal(decode_event, body)
    assert "over the limit of 128" in refusal(
        decode_event, b'{"event": "go", "process_id": ' + b"9" * 129 + b"}"
    )


def test_an_event_for_a_numbered_process_reaches_it(store: Store) -> None:
    """The original's example event carries its process id as a JSON number."""
    service = Service(store, CONFIG, Recorder())
    service.handle(launch('<process><await event="paid"/></process>', {}, "42"))
    event = Message(CONFIG.event_queue, b'{"event": "paid", "process_id": 42}', "e1")
    assert service.handle(event).outcome is Outcome.ACK
    record = store.instance("42")
    assert record is not None and record.status == "completed"


def test_a_workitem_is_an_object_with_a_payload_object() -> None:
    assert decode_workitem(b'{"target": "t", "payload": {}}') == {"target": "t", "payload": {}}
    assert "'payload' must be a JSON object" in refusal(decode_workitem, b'{"payload": []}')
    assert "NaN" in refusal(decode_workitem, b'{"payload": {"a": NaN}}')
    assert check_workitem({"payload": {"a": 1}}) == {"payload": {"a": 1}}
    assert "nan is not a JSON number" in refusal(check_workitem, {"payload": {"a": math.nan}})
    assert "must be a JSON object, not int" in refusal(check_workitem, 5)


# answer ids -----------------------------------------------------------------------------------


def test_answer_ids_fit_in_a_short_string_and_are_stable() -> None:
    assert answer_id("p_0_1.1", b"{}") == "p_0_1.1:answer"
    for known_as in ("w" * 248, "w" * 250, "é" * 200, "w" * 10_000, "a\x00b", "a\ud800b"):
        made = answer_id(known_as, b"{}")
        assert bounds.utf8_length(made) <= bounds.SHORT_STRING, known_as[:10]
        assert made.endswith(":answer") and bounds.bad_text(made) is None
        assert made == answer_id(known_as, b"other body")  # the id decides, not the body
    assert answer_id("w" * 250, b"") != answer_id("w" * 249 + "x", b"")
    assert answer_id(None, b"a") == answer_id(None, b"a") != answer_id(None, b"b")
    assert bounds.short_id("x" * 255) == "x" * 255
    assert len(bounds.short_id("x" * 256)) == 255


# the launcher and bureaucratctl launch ---------------------------------------------------------


DEFINITION = "<process><await event='never'/></process>"


@pytest.mark.parametrize(
    ("fields", "process_id", "problem"),
    [
        ({}, "p" * 129, "the process id is 129 bytes long, over the limit of 128"),
        ({}, "", "the process id is empty"),
        ({}, "a\x00b", "the process id contains a NUL character"),
        ({}, "a\tb", "the process id contains a control character"),
        ({"inst:current": 1}, None, "inst: properties are the engine's own"),
        ({"x": math.nan}, None, "fields: nan is not a JSON number"),
        ({"x": {1, 2}}, None, "a value of type set is not JSON data"),
        ({"x": nested(100)}, None, "fields nests more than 100 levels deep"),
        ({"x": "\ud800"}, None, "fields: a string contains a lone surrogate"),
    ],
)
def test_the_launcher_refuses_what_the_engine_would(
    fields: dict[str, Any], process_id: str | None, problem: str
) -> None:
    with (
        Launcher(config=Config(amqp_url=NO_BROKER)) as launcher,
        pytest.raises(MessageError) as caught,
    ):
        launcher.launch(DEFINITION, fields, process_id=process_id)
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        (["--id", "p" * 129], "the process id is 129 bytes long, over the limit of 128"),
        (["-F", "inst:current=1"], "inst: properties are the engine's own"),
        (["-F", "x=NaN"], "nan is not a JSON number"),
        (["-F", "x=" + "[" * 100_000], "the value nests too deeply"),
        (["-F", "x=" + json.dumps(nested(100))], "nests more than 100 levels deep"),
    ],
)
def test_ctl_launch_refuses_with_status_2(
    arguments: list[str],
    problem: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BUREAUCRAT_AMQP_URL", raising=False)
    config = tmp_path / "b.conf"
    config.write_text(f"[amqp]\nurl = {NO_BROKER}\n")
    definition = tmp_path / "p.xml"
    definition.write_text(DEFINITION)
    status = ctl.main(["-c", str(config), "launch", str(definition), *arguments])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err.startswith("bureaucratctl: launch: ") and problem in err
    assert "Traceback" not in err and err.count("\n") == 1


# fuzzing: whatever the bytes, only MessageError --------------------------------------------------

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=12)
KEYS = st.sampled_from(
    [
        *("name", "target", "workitem_id", "payload", "process_id", "child_id", "status"),
        *("event", "definition", "fields", "parent", "activity", "reason", "context", "fault"),
        "inst:x",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included
    | ANY_TEXT
    | st.sampled_from(["terminate", "retry", "child_finished", "completed", "<process/>"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | ANY_TEXT, inner, max_size=5),
    max_leaves=30,
)
IDS = (
    st.text("pq_0.", min_size=1, max_size=8) | st.integers(0, 300).map(lambda n: "p" * n) | ANY_TEXT
)
OBJECTS = st.dictionaries(KEYS | ANY_TEXT, VALUES, max_size=5)
MESSAGES = st.fixed_dictionaries(  # the shapes of the real messages, each key perhaps wrong
    {},
    optional={
        "name": st.sampled_from(["response", "terminate", "retry", "child_finished"])
        | VALUES
        | st.lists(SCALARS, max_size=2),
        "target": IDS | VALUES,
        "workitem_id": IDS,
        "payload": OBJECTS | VALUES,
        "process_id": IDS | st.integers(),
        "child_id": IDS,
        "status": st.sampled_from(["completed", "faulted", "terminated"]) | VALUES,
        "event": IDS | VALUES,
        "definition": st.sampled_from(["<process/>", " "]) | VALUES,
        "fields": OBJECTS | VALUES,
        "parent": st.fixed_dictionaries({}, optional={"process_id": IDS, "activity": IDS}),
        "activity": IDS | VALUES,
        "reason": ANY_TEXT | VALUES,
        "origin": IDS | VALUES,
        "context": OBJECTS,
        "fault": OBJECTS | VALUES,
    },
)


@st.composite
def serialized(draw: st.DrawFn) -> bytes:
    """A JSON-ish body: a drawn message, perhaps wrapped deep, written as JSON (with NaN, lone
    surrogates escaped or encoded, or broken at the end)."""
    value: Any = draw(MESSAGES | VALUES)
    depth = draw(st.sampled_from([0, 0, 0, 50, 99, 100, 101, 2000]))
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    opening, closing = ('{"payload":', "}") if depth % 2 else ("[", "]")
    text = opening * depth + text + closing * depth
    body = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(body)))
        body = body[:cut] + draw(st.binary(max_size=4))
    return body


BODIES = st.binary(max_size=300) | serialized()


def only_refusals(decode: Any, *args: Any) -> Any:
    """Run ``decode``: anything it returns must be sendable again; it may raise only
    ``MessageError``."""
    try:
        decoded = decode(*args)
    except MessageError:
        return None
    return decoded


def assert_clean(value: Any) -> None:
    check_value(value, "decoded")
    dumps(value)


@settings(derandomize=True, max_examples=400, deadline=None)
@given(BODIES, st.sampled_from([None, "application/json", "application/xml"]))
def test_fuzz_decode_launch(body: bytes, content_type: str | None) -> None:
    launched = only_refusals(decode_launch, body, content_type)
    if launched is not None:
        assert_clean(launched.fields)
        assert bounds.bad_text(launched.definition) is None
        for text in (launched.process_id, *(launched.parent or {}).values()):
            assert text is None or bounds.check_id(text, "id", bounds.MAX_ACTIVITY_ID) is None


@settings(derandomize=True, max_examples=400, deadline=None)
@given(BODIES)
def test_fuzz_decode_message(body: bytes) -> None:
    decoded = only_refusals(decode_message, body)
    if decoded is not None:
        assert_clean(decoded.workitem if hasattr(decoded, "workitem") else decoded.body)


@settings(derandomize=True, max_examples=400, deadline=None)
@given(BODIES)
def test_fuzz_decode_event(body: bytes) -> None:
    event = only_refusals(decode_event, body)
    if event is not None:
        assert_clean(event.data)
        assert bounds.check_id(event.name, "event", bounds.MAX_NAME) is None


@settings(derandomize=True, max_examples=300, deadline=None)
@given(MESSAGES | VALUES)
def test_fuzz_check_value_agrees_with_the_decoder(value: Any) -> None:
    """What check_value accepts, the decoder accepts once written, and the other way round."""
    accepted = True
    try:
        check_value(value, "v")
    except MessageError:
        accepted = False
    body = json.dumps(value).encode()  # NaN written as NaN, lone surrogates escaped
    try:
        decode_json(body, "v")
    except MessageError:
        assert not accepted
    else:
        assert accepted
