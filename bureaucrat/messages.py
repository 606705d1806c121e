"""The wire protocol: incoming AMQP bodies decoded into typed messages, engine commands encoded
into outgoing ones.

Decoding never trusts its input: whatever the bytes, it returns one of the shapes below or raises
``MessageError`` with a reason fit for the dead-letter header ``x-bureaucrat-error``.

- launch (``bureaucrat``): the definition XML, or ``{"definition": xml, "fields": {...}}`` (JSON);
  internal launches of subprocesses add ``"parent": {"process_id": ..., "activity": ...}``.
- response (``bureaucrat_msgs``): the workitem sent to a participant with ``payload`` updated.
- control (``bureaucrat_msgs``): ``{"name": "terminate" | "retry" | "pause" | "resume" | "set" |
  "rerun" | "restart" | "child_finished", "process_id": ..., ...}``, and ``{"name": "schedule",
  "action": ..., "schedule": NAME, ...}`` (``bureaucrat.schedules``). The original's terminate,
  ``{"name": "terminate", "target": ..., "origin": ...}``, names an activity id (``<pid>`` or
  ``<pid>_0_2``) instead of a process id.
- event (``bureaucrat_events``): ``{"event": name, ...data}``, optionally ``"process_id"``.

Every JSON body goes through ``decode_json``: UTF-8, no NaN or infinities, nested at most
``bounds.MAX_DEPTH`` deep, no NUL or lone surrogate in any string (keys included). Ids are
bounded where they enter (``bounds.check_id``), so that what the engine derives from them fits
in an AMQP short string. ``check_value`` applies the same checks to a Python value.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, NoReturn

from bureaucrat import bounds
from bureaucrat.errors import BureaucratError

MAX_BODY = 16 * 1024 * 1024
WORKITEM_TYPE = "application/x-bureaucrat-message"
JSON_TYPE = "application/json"
RESERVED_PREFIX = "inst:"
"""Properties the engine sets itself (``inst:current``...); fields may not."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish, as the outbox keeps it until RabbitMQ has confirmed it.

    ``properties`` holds pika ``BasicProperties`` fields as JSON-friendly values
    (``content_type``, ``headers``, ``correlation_id``, ``delivery_mode``, ...).
    """

    message_id: str
    exchange: str
    routing_key: str
    body: bytes
    properties: dict[str, Any] = field(default_factory=dict)


class MessageError(BureaucratError):
    """An incoming message that cannot be accepted; the text says why."""


@dataclass(frozen=True)
class Launch:
    definition: str
    fields: dict[str, Any] = field(default_factory=dict)
    process_id: str | None = None
    parent: dict[str, str] | None = None


@dataclass(frozen=True)
class Response:
    workitem: dict[str, Any]
    workitem_id: str | None
    target: str | None


@dataclass(frozen=True)
class Control:
    """A control message for one process.

    ``target`` is set for the original's terminate, which names an activity instead of a process
    id: ``process_id`` is then the longest prefix of the target (cut at ``_<n>`` or ``_f<n>``
    segments) that is short enough to be a process id, the target itself when it names a root.
    Process ids may hold ``_``, so the receiver tries ``target_process_ids(target)`` in turn."""

    name: str
    process_id: str
    body: dict[str, Any]
    target: str | None = None


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]
    process_id: str | None


CONTROL_NAMES = frozenset(
    {"terminate", "retry", "child_finished", "pause", "resume", "set", "rerun", "restart"}
    | {"schedule"}
)

# JSON values -----------------------------------------------------------------------------------

_SUSPECT = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
"""The escapes through which a NUL or a lone surrogate gets into a string decoded from UTF-8
text (a raw NUL is refused by the parser; strict UTF-8 has no surrogates)."""
_INT_LIMIT = 10**4300
"""json writes integers of at most 4,300 digits (Python's default conversion limit)."""


class _NotANumberError(ValueError):
    pass


def _no_constant(name: str) -> NoReturn:
    raise _NotANumberError(f"{name} is not a JSON number")


def decode_json(body: bytes, what: str) -> Any:
    """The JSON value in ``body``, checked as the module docstring says; ``MessageError`` if not.

    ``what`` names the message in the error (``"launch message"``)."""
    if len(body) > MAX_BODY:
        raise MessageError(f"{what} is {len(body)} bytes, over the limit of {MAX_BODY}")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise MessageError(f"{what} is not UTF-8 ({error.reason} at byte {error.start})") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise MessageError(f"{what} nests more than {bounds.MAX_DEPTH} levels deep") from None
    except _NotANumberError as error:
        raise MessageError(f"{what}: {error}") from None
    except ValueError as error:
        raise MessageError(f"{what} is not valid JSON: {error}") from None
    _walk(value, what, texts=_SUSPECT.search(text) is not None)
    return value


def check_value(value: Any, what: str, *, depth: int = 0) -> None:
    """``MessageError`` unless ``value`` is JSON data as ``decode_json`` accepts it: dicts with
    string keys, lists (tuples), strings without NUL or lone surrogates, finite numbers, booleans
    and None, nested at most ``bounds.MAX_DEPTH`` deep counting the ``depth`` levels of the
    message it will sit in (1 for a launch's fields, inside the launch object)."""
    _walk(value, what, texts=True, depth=depth)


def _walk(value: Any, what: str, *, texts: bool, depth: int = 0) -> None:
    """One pass over ``value`` without recursion; strings are checked only when ``texts``.

    Exact types first: that is all JSON decodes to, and it keeps the walk as fast as the
    parse. Subclasses (a ``str`` enum, a tuple) take ``_unusual``."""
    pending: list[tuple[Any, int]] = [([value], depth)]
    budget = MAX_BODY  # every value takes a byte of a message: this bounds shared or cyclic data
    while pending:
        container, level = pending.pop()
        if level > bounds.MAX_DEPTH:
            raise MessageError(f"{what} nests more than {bounds.MAX_DEPTH} levels deep")
        budget -= len(container)
        if budget < 0:
            raise MessageError(f"{what} holds more than {MAX_BODY} values")
        if isinstance(container, dict):
            if texts:  # (keys decoded from JSON are strings)
                for key in container:
                    if not isinstance(key, str):
                        raise MessageError(f"{what}: a key is a {type(key).__name__}, not text")
                    _check_text(key, what, "a key")
            items = container.values()
        else:
            items = container
        for item in items:
            kind = type(item)
            if kind is str:
                if texts:
                    _check_text(item, what, "a string")
            elif kind is dict or kind is list:
                pending.append((item, level + 1))
            elif kind is float:
                if not math.isfinite(item):
                    raise MessageError(f"{what}: {item} is not a JSON number")
            elif kind is int:
                if not -_INT_LIMIT < item < _INT_LIMIT:
                    raise MessageError(f"{what}: an integer has more than 4300 digits")
            elif kind is not bool and item is not None and _unusual(item, what, texts):
                pending.append((item, level + 1))


def _unusual(item: Any, what: str, texts: bool) -> bool:
    """Check a value of a subclass of a JSON type; True if it is a container to walk."""
    if isinstance(item, dict | list | tuple):
        return True
    if isinstance(item, str):
        if texts:
            _check_text(item, what, "a string")
    elif isinstance(item, float | int):
        _walk(float(item) if isinstance(item, float) else int(item), what, texts=False)
    else:
        raise MessageError(f"{what}: a value of type {type(item).__name__} is not JSON data")
    return False


def _check_text(text: str, what: str, kind: str) -> None:
    problem = bounds.bad_text(text)
    if problem is not None:
        raise MessageError(f"{what}: {kind} {problem}")


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; ``ValueError`` for NaN or an infinity (never sent)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


# ids ------------------------------------------------------------------------------------------


def _id(body: dict[str, Any], key: str, what: str, limit: int) -> str | None:
    """``body[key]``: None when absent (or null), else a non-empty string of at most ``limit``
    bytes without control characters."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise MessageError(f"{what}: {key!r} must be a non-empty string")
    problem = bounds.check_id(value, repr(key), limit)
    if problem is not None:
        raise MessageError(f"{what}: {problem}")
    return value


def _required_id(body: dict[str, Any], key: str, what: str, limit: int) -> str:
    value = _id(body, key, what, limit)
    if value is None:
        raise MessageError(f"{what}: {key!r} is missing")
    return value


def answer_id(known_as: str | None, workitem: bytes) -> str:
    """The message id of a participant's answer: ``<known_as>:answer``, ``known_as`` being the
    workitem's message id or workitem id, bounded as an AMQP short string (``bounds.short_id``);
    without one, derived from the workitem's body. The same workitem always gets the same id."""
    if not known_as:
        known_as = "sha256:" + hashlib.sha256(workitem).hexdigest()
    return bounds.short_id(known_as, ":answer")


# launch ---------------------------------------------------------------------------------------


def decode_launch(body: bytes, content_type: str | None) -> Launch:
    """A launch message: the definition XML, or the JSON envelope."""
    if len(body) > MAX_BODY:
        raise MessageError(f"launch message is {len(body)} bytes, over the limit of {MAX_BODY}")
    if content_type == JSON_TYPE or body.lstrip()[:1] in (b"{", b"["):
        return _json_launch(body)
    try:
        definition = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MessageError("launch message is neither UTF-8 XML nor JSON") from None
    if "\x00" in definition:
        raise MessageError("launch message: the XML contains a NUL character")
    return Launch(definition)


def _json_launch(body: bytes) -> Launch:
    envelope = _object(body, "launch message")
    definition = envelope.get("definition")
    if not isinstance(definition, str) or not definition.strip():
        raise MessageError("launch message: 'definition' must be the process XML, as a string")
    fields = envelope.get("fields")
    if fields is None:
        fields = {}
    if not isinstance(fields, dict):
        raise MessageError("launch message: 'fields' must be a JSON object")
    check_fields(fields, "launch message")
    parent = envelope.get("parent")
    if parent is not None:
        if not isinstance(parent, dict):
            raise MessageError("launch message: 'parent' must name process_id and activity")
        what = "launch message: parent"
        parent = {
            "process_id": _required_id(parent, "process_id", what, bounds.MAX_PROCESS_ID),
            "activity": _required_id(parent, "activity", what, bounds.MAX_ACTIVITY_ID),
        }
    process_id = _id(envelope, "process_id", "launch message", bounds.MAX_PROCESS_ID)
    return Launch(definition, fields, process_id, parent)


def check_fields(fields: dict[str, Any], what: str) -> None:
    """``MessageError`` if a launch's fields name a property of the engine's own (``inst:``)."""
    for key in fields:
        if isinstance(key, str) and key.startswith(RESERVED_PREFIX):
            raise MessageError(
                f"{what}: field {key[:80]!a} is refused: inst: properties are the engine's own"
            )


# responses and controls -------------------------------------------------------------------------


def decode_message(body: bytes) -> Response | Control:
    """A participant's response or a control message, from the engine's message queue."""
    message = _object(body, "message")
    name = message.get("name")
    if isinstance(name, str) and name in CONTROL_NAMES:
        return _control(name, message)
    if not isinstance(message.get("payload"), dict):
        raise MessageError("response: 'payload' must be a JSON object")
    workitem_id = _id(message, "workitem_id", "response", bounds.MAX_WORKITEM_ID)
    target = _id(message, "target", "response", bounds.MAX_WORKITEM_ID)
    if workitem_id is None and target is None:
        raise MessageError("response: neither 'workitem_id' nor 'target' says which workitem")
    return Response(message, workitem_id, target)


def _control(name: str, message: dict[str, Any]) -> Control:
    what = f"{name} message"
    if name == "schedule":  # about a schedule, not a process: checked where schedules live
        from bureaucrat.schedules import decode_control

        return decode_control(message)
    if (
        name == "terminate"
        and message.get("process_id") is None
        and message.get("target") is not None
    ):
        return _original_terminate(message, what)
    process_id = _required_id(message, "process_id", what, bounds.MAX_PROCESS_ID)
    if name in ("terminate", "pause"):
        reason = message.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise MessageError(f"{what}: 'reason' must be a string")
    elif name == "retry":
        _id(message, "activity", what, bounds.MAX_ACTIVITY_ID)
    elif name == "set":
        _values(message, what, required=True)
    elif name == "rerun":
        _required_id(message, "activity", what, bounds.MAX_ACTIVITY_ID)
        _values(message, what, required=False)
    elif name in ("resume", "restart"):
        pass
    else:
        _required_id(message, "child_id", what, bounds.MAX_PROCESS_ID)
        if message.get("status") not in ("completed", "faulted", "terminated"):
            raise MessageError(f"{what}: unknown 'status'")
        if not isinstance(message.get("context", {}), dict):
            raise MessageError(f"{what}: 'context' must be an object")
    return Control(name, process_id, message)


def _values(message: dict[str, Any], what: str, *, required: bool) -> None:
    """The context values an operator sets: an object of property names (not ``inst:``)."""
    values = message.get("values")
    if values is None and not required:
        return
    if not isinstance(values, dict) or (required and not values):
        raise MessageError(f"{what}: 'values' must be an object naming at least one property")
    for key in values:
        problem = bounds.check_id(key, "a property name", bounds.MAX_NAME)
        if problem is not None:
            raise MessageError(f"{what}: {problem}")
    check_fields(values, what)


def check_control(message: dict[str, Any]) -> Control:
    """A control message about to be sent, checked as the engine will check it on arrival;
    ``MessageError`` says what is wrong with it."""
    check_value(message, "control message")
    name = message.get("name")
    if not isinstance(name, str) or name not in CONTROL_NAMES:
        raise MessageError(f"unknown control message {str(name)[:80]!a}")
    return _control(name, message)


def _original_terminate(message: dict[str, Any], what: str) -> Control:
    """The original's ``{"name": "terminate", "target": <activity id>, "origin": ...}``."""
    target = _required_id(message, "target", what, bounds.MAX_ACTIVITY_ID)
    origin = message.get("origin")
    if origin is not None and origin != "":  # the original's own launches sent origin ""
        _id(message, "origin", what, bounds.MAX_WORKITEM_ID)
    reason = message.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise MessageError(f"{what}: 'reason' must be a string")
    candidates = target_process_ids(target)
    if not candidates:
        raise MessageError(
            f"{what}: 'target' {target[:80]!a} names no process id of at most "
            f"{bounds.MAX_PROCESS_ID} bytes"
        )
    return Control("terminate", candidates[0], message, target)


def target_process_ids(target: str) -> list[str]:
    """The process ids activity id ``target`` could belong to, longest first: the target minus
    a tail of ``_<n>`` or ``_f<n>`` segments (process ids may hold ``_`` themselves), each of
    at most ``bounds.MAX_PROCESS_ID`` bytes."""
    candidates = [target]
    rest = target
    while "_" in rest:
        rest, segment = rest.rsplit("_", 1)
        number = segment[1:] if segment[:1] == "f" else segment
        if not (number.isascii() and number.isdigit()):
            break
        candidates.append(rest)
    return [c for c in candidates if c and bounds.utf8_length(c) <= bounds.MAX_PROCESS_ID]


# events ---------------------------------------------------------------------------------------


def decode_event(body: bytes) -> Event:
    """An event; a ``process_id`` given as a JSON integer is taken as its decimal text."""
    return check_event(_object(body, "event"))


def check_event(message: dict[str, Any]) -> Event:
    """An event's body, its values checked already (``decode_json``, ``check_value``); its
    name and scope checked here (``MessageError`` says what is wrong)."""
    name = message.get("event")
    if not isinstance(name, str) or not name:
        raise MessageError("event: 'event' must name the event, as a non-empty string")
    _required_id(message, "event", "event", bounds.MAX_NAME)
    scope = message.get("process_id")
    if isinstance(scope, int) and not isinstance(scope, bool):
        scope = str(scope)
    process_id = _id({"process_id": scope}, "process_id", "event", bounds.MAX_PROCESS_ID)
    return Event(name, message, process_id)


# workitems, as participants receive them ------------------------------------------------------


def decode_workitem(body: bytes) -> dict[str, Any]:
    """A workitem as a participant receives it: a JSON object with a ``payload`` object."""
    return _workitem(_object(body, "workitem"))


def check_workitem(value: Any) -> dict[str, Any]:
    """``value`` if it is a workitem as ``decode_workitem`` would return it (a participant
    framework decoded it), else ``MessageError``."""
    if not isinstance(value, dict):
        raise MessageError(f"workitem must be a JSON object, not {type(value).__name__}")
    check_value(value, "workitem")
    return _workitem(value)


def _workitem(workitem: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(workitem.get("payload"), dict):
        raise MessageError("workitem: 'payload' must be a JSON object")
    return workitem


def _object(body: bytes, what: str) -> dict[str, Any]:
    value = decode_json(body, what)
    if not isinstance(value, dict):
        raise MessageError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value
