"""Celery participants: the task message Celery's own ``send_task`` would publish, as an outbox row.

``celery_message(command, config)`` runs ``app.send_task(participant, args=[workitem],
task_id=workitem_id, queue=...)`` on a Celery app that never connects: its producer captures the
message kombu has fully prepared (protocol 2 headers, the JSON body ``[args, kwargs, embed]``,
properties) instead of sending it. The engine stores that message in its outbox and publishes it
with its own confirming publisher, so a message re-published after a crash is the same message.

Routing is Celery's: the action's ``queue`` attribute, else the app's ``task_routes``, else
``task_default_queue`` (``celery``). For a direct queue ``send_task`` publishes to the default
exchange with the queue's name as routing key, and so do we; the queue is declared durable on
demand, as a Celery worker declares it. A Celery config module named by ``CELERY_CONFIG_MODULE``
(Celery's own convention) is loaded into the app, so the daemon can share the workers' routing.
"""

from __future__ import annotations

import functools
import importlib
import os
from typing import Any

from celery import Celery  # type: ignore[import-untyped]
from celery.exceptions import QueueNotFound  # type: ignore[import-untyped]
from kombu.messaging import Producer

from bureaucrat.config import Config
from bureaucrat.engine.commands import DispatchWorkitem
from bureaucrat.errors import ConfigError
from bureaucrat.messages import Outgoing

CONFIG_MODULE_VARIABLE = "CELERY_CONFIG_MODULE"


def celery_message(command: DispatchWorkitem, config: Config) -> Outgoing:
    """The Celery task message that sends ``command``'s workitem to its participant."""
    app = sender_app(config.amqp_url, os.environ.get(CONFIG_MODULE_VARIABLE) or None)
    options = {} if command.queue is None else {"queue": command.queue}
    with app.connection_for_write() as connection:
        capture = _Capture(connection)  # type: ignore[no-untyped-call]
        try:
            app.send_task(
                command.participant,
                args=[command.message],
                task_id=command.workitem_id,
                producer=capture,
                **options,
            )
        except QueueNotFound as error:
            raise ConfigError(f"Celery participant {command.participant}: {error}") from None
    message = capture.message
    properties = {**message["properties"], "message_id": command.workitem_id}
    return Outgoing(
        message_id=command.workitem_id,
        exchange=message["exchange"],
        routing_key=message["routing_key"],
        body=message["body"],
        properties=properties,
    )


@functools.lru_cache(maxsize=8)
def sender_app(broker_url: str, config_module: str | None = None) -> Any:
    """A Celery app that formats task messages (it never connects), one per settings."""
    app = Celery("bureaucrat", broker=broker_url, set_as_current=False)
    if config_module is not None:
        try:
            module = importlib.import_module(config_module)
        except ImportError as error:
            raise ConfigError(
                f"cannot load the Celery config module {config_module}: {error}"
            ) from None
        app.config_from_object(module)
    return app


class _Capture(Producer):
    """A kombu producer that keeps the prepared message instead of publishing it."""

    message: dict[str, Any]

    def _publish(
        self,
        body: str | bytes,
        priority: int | None,
        content_type: str,
        content_encoding: str,
        headers: dict[str, Any],
        properties: dict[str, Any],
        routing_key: str,
        mandatory: bool,
        immediate: bool,
        exchange: str,
        declare: Any,
        *_: Any,
        **__: Any,
    ) -> None:
        if isinstance(body, str):
            body = body.encode(content_encoding)
        self.message = {
            "exchange": exchange,
            "routing_key": routing_key,
            "body": body,
            "properties": {
                **properties,
                "content_type": content_type,
                "content_encoding": content_encoding,
                "headers": headers,
                "priority": priority,
            },
        }
