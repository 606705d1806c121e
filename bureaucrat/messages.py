"""The wire protocol: incoming AMQP bodies decoded into typed messages, engine commands encoded
into outgoing ones.

Decoding never trusts its input: anything that is not one of the shapes below raises
``MessageError`` with a reason fit for the dead-letter header ``x-bureaucrat-error``.

- launch (``bureaucrat``): the definition XML, or ``{"definition": xml, "fields": {...}}`` (JSON);
  internal launches of subprocesses add ``"parent": {"process_id": ..., "activity": ...}``.
- response (``bureaucrat_msgs``): the workitem sent to a participant with ``payload`` updated.
- control (``bureaucrat_msgs``): ``{"name": "terminate" | "retry" | "child_finished",
  "process_id": ..., ...}``.
- event (``bureaucrat_events``): ``{"event": name, ...data}``, optionally ``"process_id"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bureaucrat.errors import BureaucratError

MAX_BODY = 16 * 1024 * 1024
WORKITEM_TYPE = "application/x-bureaucrat-message"
JSON_TYPE = "application/json"


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
    name: str
    process_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]
    process_id: str | None


CONTROL_NAMES = frozenset({"terminate", "retry", "child_finished"})


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise MessageError(f"{what} is {len(body)} bytes, over the limit of {MAX_BODY}")
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise MessageError(f"{what} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise MessageError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _optional_str(body: dict[str, Any], key: str, what: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise MessageError(f"{what}: {key!r} must be a non-empty string")
    return value


def decode_launch(body: bytes, content_type: str | None) -> Launch:
    if len(body) > MAX_BODY:
        raise MessageError(f"launch message is {len(body)} bytes, over the limit of {MAX_BODY}")
    if content_type == JSON_TYPE or body.lstrip()[:1] in (b"{", b"["):
        envelope = _json_object(body, "launch message")
        definition = envelope.get("definition")
        if not isinstance(definition, str) or not definition.strip():
            raise MessageError("launch message: 'definition' must be the process XML, as a string")
        fields = envelope.get("fields") or {}
        if not isinstance(fields, dict):
            raise MessageError("launch message: 'fields' must be a JSON object")
        parent = envelope.get("parent")
        if parent is not None and not (
            isinstance(parent, dict)
            and isinstance(parent.get("process_id"), str)
            and isinstance(parent.get("activity"), str)
        ):
            raise MessageError("launch message: 'parent' must name process_id and activity")
        process_id = _optional_str(envelope, "process_id", "launch message")
        return Launch(definition, fields, process_id, parent)
    try:
        return Launch(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise MessageError("launch message is neither UTF-8 XML nor JSON") from None


def decode_message(body: bytes) -> Response | Control:
    message = _json_object(body, "message")
    name = message.get("name")
    if name in CONTROL_NAMES:
        process_id = _optional_str(message, "process_id", f"{name} message")
        if process_id is None:
            raise MessageError(f"{name} message: 'process_id' is missing")
        if name == "child_finished":
            _check_child_finished(message)
        return Control(str(name), process_id, message)
    if not isinstance(message.get("payload"), dict):
        raise MessageError("response: 'payload' must be a JSON object")
    workitem_id = _optional_str(message, "workitem_id", "response")
    target = _optional_str(message, "target", "response")
    if workitem_id is None and target is None:
        raise MessageError("response: neither 'workitem_id' nor 'target' says which workitem")
    return Response(message, workitem_id, target)


def _check_child_finished(message: dict[str, Any]) -> None:
    if not isinstance(message.get("child_id"), str):
        raise MessageError("child_finished message: 'child_id' is missing")
    if message.get("status") not in ("completed", "faulted", "terminated"):
        raise MessageError("child_finished message: unknown 'status'")
    if not isinstance(message.get("context", {}), dict):
        raise MessageError("child_finished message: 'context' must be an object")


def decode_event(body: bytes) -> Event:
    message = _json_object(body, "event")
    name = message.get("event")
    if not isinstance(name, str) or not name:
        raise MessageError("event: 'event' must name the event, as a non-empty string")
    process_id = _optional_str(message, "process_id", "event")
    return Event(name, message, process_id)


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
