"""Celery participants: the task message Celery's own ``send_task`` would publish, as an outbox row.

``celery_message(command, config)`` runs ``app.send_task(participant, args=[workitem],
task_id=workitem_id, queue=...)`` on a Celery app that never connects: its producer captures the
message kombu has fully prepared (headers, the JSON body, properties) instead of sending it. The
engine stores that message in its outbox and publishes it with its own confirming publisher, so
a message re-published after a crash is the same message.

The message follows Celery's protocol 2 (body ``[args, kwargs, embed]``, the task in the
headers), or protocol 1 with ``celery_protocol = 1`` (body ``{"task", "id", "args", "kwargs",
...}``, as the original bureaucrat sent it and as Celery workers before 3.1.24 read it).

Routing, in this order: the action's ``queue`` attribute; the app's ``task_routes``; then, with
``celery_routing = original``, the queue named by the task name's first dotted segment
(``webhook_launcher.tasks.handle_webhook`` -> ``webhook_launcher``, where the original's
workers, started with ``-Q webhook_launcher``, read), else ``task_default_queue``
(``celery``). For a direct queue ``send_task`` publishes to the default exchange with the
queue's name as routing key, and so do we; the queue is declared durable on demand, as a Celery
worker declares it. A Celery config module named by ``CELERY_CONFIG_MODULE`` (Celery's own
convention) is loaded into the app, so the daemon can share the workers' routing.
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
    app = sender_app(
        config.amqp_url, os.environ.get(CONFIG_MODULE_VARIABLE) or None, config.celery_protocol
    )
    queue = task_queue(app, command, config)
    options = {} if queue is None else {"queue": queue}
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


def task_queue(app: Any, command: DispatchWorkitem, config: Config) -> str | None:
    """The queue to send ``command``'s task to, or None to let Celery route it: the action's
    ``queue``; else, with ``celery_routing = original`` and no Celery route for the task, the
    queue named by the first dotted segment of the task's name."""
    if command.queue is not None:
        return command.queue
    if config.celery_routing != "original" or _routed(app, command):
        return None
    return original_queue(command.participant, config)


def original_queue(task: str, config: Config) -> str:
    """The original bureaucrat's queue for ``task``: its name up to the first dot.

    ``ConfigError`` when that is empty or one of the engine's own queues: the task message
    would not reach a Celery worker there."""
    queue = task.split(".", 1)[0]
    own = (config.launch_queue, config.message_queue, config.event_queue, config.dead_letter_queue)
    if not queue or queue in own:
        what = "is empty" if not queue else "is one of the engine's own queues"
        raise ConfigError(
            f"Celery participant {task}: the first part of its name, {queue!r}, {what}; "
            f"give the action a queue= or the task a route (task_routes)"
        )
    return queue


def _routed(app: Any, command: DispatchWorkitem) -> bool:
    """Whether the app's ``task_routes`` route ``command``'s task."""
    router = app.amqp.router
    route = router.lookup_route(command.participant, [command.message], {}, {}, None)
    return route is not None


def sender_app(broker_url: str, config_module: str | None = None, protocol: int = 2) -> Any:
    """A Celery app that formats task messages (it never connects), one per settings.

    ``protocol`` (Celery's message protocol, 1 or 2) wins over the config module's."""
    return _sender_app(broker_url, config_module, protocol)


@functools.lru_cache(maxsize=8)
def _sender_app(broker_url: str, config_module: str | None, protocol: int) -> Any:
    app = Celery("bureaucrat", broker=broker_url, set_as_current=False)
    if config_module is not None:
        try:
            module = importlib.import_module(config_module)
        except ImportError as error:
            raise ConfigError(
                f"cannot load the Celery config module {config_module}: {error}"
            ) from None
        app.config_from_object(module)
    app.conf.task_protocol = protocol  # read when app.amqp is first made: set it before
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
