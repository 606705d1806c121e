"""Engine commands encoded as the messages they send: the outgoing half of the wire protocol.

Every outgoing message has a stable id derived from what caused it (a workitem's id, a child's
id, the process id and its final status), so publishing it again after a crash is harmless.
Commands that only change the store (timers, subscriptions, journal entries) send nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, assert_never

from bureaucrat import messages as wire
from bureaucrat.bounds import SHORT_STRING, utf8_length
from bureaucrat.config import Config
from bureaucrat.engine import commands as cmd
from bureaucrat.messages import Outgoing


def encode(config: Config, process_id: str, commands: Sequence[cmd.Command]) -> list[Outgoing]:
    """The messages the commands of one step of ``process_id`` send, in order."""
    out: list[Outgoing] = []
    for command in commands:
        message = _encode(config, process_id, command)
        if message is not None:
            out.append(message)
    return out


def _encode(config: Config, process_id: str, command: cmd.Command) -> Outgoing | None:
    match command:
        case cmd.DispatchWorkitem():
            return workitem_message(config, command)
        case cmd.LaunchChild():
            body: dict[str, Any] = {
                "definition": command.definition,
                "fields": command.fields,
                "parent": {"process_id": process_id, "activity": command.activity},
            }
            return message(command.process_id, "", config.launch_queue, body, wire.JSON_TYPE)
        case cmd.NotifyParent():
            body = {
                "name": "child_finished",
                "process_id": command.parent_id,
                "activity": command.activity,
                "child_id": command.child_id,
                "status": command.status,
                "context": command.context,
                "fault": command.fault,
            }
            return message(f"{command.child_id}:finished", "", config.message_queue, body)
        case cmd.TerminateChild():
            body = {"name": "terminate", "process_id": command.process_id, "reason": "parent ended"}
            return message(f"{command.process_id}:terminate", "", config.message_queue, body)
        case cmd.ProcessFinished():
            body = {
                "process_id": process_id,
                "status": command.status,
                "context": command.context,
                "fault": command.fault,
            }
            return message(
                f"{process_id}:{command.status}",
                config.notifications_exchange,
                f"process.{command.status}",
                body,
                wire.JSON_TYPE,
            )
        case (
            cmd.Record()
            | cmd.StartTimer()
            | cmd.CancelTimer()
            | cmd.Subscribe()
            | cmd.Unsubscribe()
            | cmd.CancelWorkitem()
        ):
            return None
        case _:
            assert_never(command)


def workitem_message(config: Config, command: cmd.DispatchWorkitem) -> Outgoing:
    """A workitem for its participant: a Celery task, or a message on ``worker_<participant>``."""
    kind = command.kind or config.taskqueue_type
    if kind == "celery":
        from bureaucrat.participants.celery import celery_message

        return celery_message(command, config)
    queue = command.queue or config.worker_queue(command.participant)
    return message(command.workitem_id, "", queue, command.message)


def message(
    message_id: str,
    exchange: str,
    routing_key: str,
    body: dict[str, Any],
    content_type: str = wire.WORKITEM_TYPE,
) -> Outgoing:
    """A persistent JSON message whose ``message_id`` and ``correlation_id`` are its id."""
    return Outgoing(
        message_id=message_id,
        exchange=exchange,
        routing_key=routing_key,
        body=wire.dumps(body),
        properties={
            "content_type": content_type,
            "delivery_mode": 2,
            "message_id": message_id,
            "correlation_id": message_id,
        },
    )


def too_long(outgoing: Outgoing) -> str | None:
    """Why ``outgoing`` cannot be an AMQP message (a short string over 255 bytes), or None."""
    texts = {
        "message id": outgoing.message_id,
        "exchange": outgoing.exchange,
        "routing key": outgoing.routing_key,
    }
    for name, value in outgoing.properties.items():
        if isinstance(value, str):
            texts[name] = value
    for what, text in texts.items():
        if utf8_length(text) > SHORT_STRING:
            return f"its {what} is longer than {SHORT_STRING} bytes"
    return None
