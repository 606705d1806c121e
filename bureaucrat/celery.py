"""Make Celery tasks bureaucrat participants: a function from payload to payload.

    from celery import Celery
    from bureaucrat.celery import participant

    app = Celery("shop", broker="amqp://guest:guest@localhost//")

    @participant(app)                       # or @app.task(base=ParticipantTask)
    def check_stock(payload):
        payload["in_stock"] = payload["quantity"] <= 10
        return payload                      # None: the payload goes back unchanged

The engine sends ``send_task("shop.check_stock", args=[workitem])`` (the action's participant is
the task's name). The task gets the workitem's payload; the response (the workitem with the new
payload, ``status`` ``done``) is published to the engine's message queue with publisher
confirms, before the task returns (the task's result is that response). An exception answers
``critical`` with its text as ``error``. Celery's retries are respected: a task that raises
``self.retry()`` (``bind=True``) or retries through ``autoretry_for`` does not answer until its
last attempt. Tasks acknowledge late, so a worker lost mid-task leaves the workitem queued.

A task message that is not a workitem bureaucrat accepts (``messages.check_workitem``: no
payload, NaN, NUL, nesting past ``bounds.MAX_DEPTH``...) is answered ``critical`` with the
reason when it names its ``target`` or ``workitem_id``, else logged and dropped; it never fails
the task. Answers are identified by ``messages.answer_id``, at most 255 bytes whatever the
workitem's id.

Settings, in the Celery app's configuration: ``bureaucrat_amqp_url`` (else the environment's
``BUREAUCRAT_AMQP_URL``, else the app's own broker when it is RabbitMQ) and
``bureaucrat_message_queue`` (default ``bureaucrat_msgs``). Each worker process keeps one
connection for its answers, and opens a new one when it was lost.

Tasks written for the original bureaucrat keep working: they take the whole workitem and return
it, and a ``task_success`` handler publishes ``kwargs["result"]`` (its README shows one).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, NoReturn
from urllib.parse import quote

from celery import Celery, Task  # type: ignore[import-untyped]
from celery.exceptions import Retry  # type: ignore[import-untyped]
from celery.signals import worker_process_shutdown, worker_shutdown  # type: ignore[import-untyped]

from bureaucrat.amqp import Broker
from bureaucrat.bounds import bad_text, short_id
from bureaucrat.config import Config
from bureaucrat.errors import BrokerError, ConfigError
from bureaucrat.messages import WORKITEM_TYPE, MessageError, answer_id, check_workitem, dumps
from bureaucrat.worker import Handler, answer

__all__ = ["ParticipantTask", "participant"]

LOG = logging.getLogger("bureaucrat.celery")

AMQP_TRANSPORTS = frozenset({"amqp", "amqps", "pyamqp", "librabbitmq"})
"""kombu's names of the transports that speak to RabbitMQ."""

REPORT_RETRY_DELAY = 5.0
"""Seconds before a task whose answer could not be delivered runs again."""


class ParticipantTask(Task):  # type: ignore[misc]
    """A Celery task that serves a participant: payload in, payload (or None) out."""

    acks_late = True

    def __call__(self, workitem: Any, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        try:
            workitem = check_workitem(workitem)
        except MessageError as error:
            return self._refuse(workitem, str(error))
        try:
            result = self.run(copy.deepcopy(workitem["payload"]), *args, **kwargs)
        except Retry:
            raise  # the next attempt answers
        except Exception as error:
            traceback = error.__traceback__
            self.report(answer(workitem, _raises(error)))
            raise error.with_traceback(traceback)  # noqa: B904 (the same error, as it was raised)
        response = answer(workitem, lambda _: result)
        self.report(response)
        return response

    def _refuse(self, workitem: Any, reason: str) -> dict[str, Any] | None:
        """Answer ``critical`` to a workitem that cannot be served, if it says which one it is;
        else log it and drop it (answering nobody)."""
        names = _names(workitem)
        if "target" not in names and "workitem_id" not in names:
            LOG.error("%s: dropped a task message that is not a workitem: %s", self.name, reason)
            return None
        LOG.error("%s: answered critical to a workitem it cannot serve: %s", self.name, reason)
        response = {**names, "payload": {"status": "critical", "error": reason}}
        self.report(response)
        return response

    def report(self, response: dict[str, Any]) -> None:
        """Publish ``response`` to the engine; if that fails, the task runs again later."""
        url, queue = settings(self.app)
        body = dumps(response)
        task_id = self.request.id or response.get("workitem_id")
        known_as = task_id if isinstance(task_id, str) and task_id else None
        fields = {
            "content_type": WORKITEM_TYPE,
            "delivery_mode": 2,
            "message_id": answer_id(known_as, body),
            "correlation_id": None if known_as is None else short_id(known_as),
        }
        try:
            REPORTER.publish(url, queue, body, fields)
        except BrokerError as error:
            raise self.retry(exc=error, countdown=REPORT_RETRY_DELAY) from None


def participant(
    app: Celery, name: str | None = None, **options: Any
) -> Callable[[Callable[..., Any]], Any]:
    """Register a function as a participant task of ``app`` (``name`` defaults to Celery's).

    ``options`` are ``app.task``'s (``bind=True`` passes the task first, for ``self.retry``)."""

    def register(function: Callable[..., Any]) -> Any:
        return app.task(function, name=name, base=ParticipantTask, **options)

    return register


def settings(app: Celery) -> tuple[str, str]:
    """Where answers go: the broker URL and the engine's message queue."""
    conf = app.conf
    url = conf.get("bureaucrat_amqp_url") or os.environ.get("BUREAUCRAT_AMQP_URL")
    queue = conf.get("bureaucrat_message_queue") or Config().message_queue
    return url or _broker_url(app), queue


def _broker_url(app: Celery) -> str:
    """The Celery app's broker as a URL ``bureaucrat.amqp`` reads (kombu's differ)."""
    with app.connection_for_write() as connection:
        if connection.transport_cls not in AMQP_TRANSPORTS:
            raise ConfigError(
                f"the Celery broker is not RabbitMQ ({connection.transport_cls}): "
                "set bureaucrat_amqp_url in the Celery configuration"
            )
        info = connection.info()  # the URL's parts, with the transport's defaults
    scheme = "amqps" if info["ssl"] else "amqp"
    user, password, vhost = (
        quote(info[k], safe="") for k in ("userid", "password", "virtual_host")
    )
    return f"{scheme}://{user}:{password}@{info['hostname']}:{info['port']}/{vhost}"


def _names(workitem: Any) -> dict[str, str]:
    """What a workitem says about itself that can be sent back: its name, target, origin and
    workitem id, those that are text."""
    if not isinstance(workitem, dict):
        return {}
    keys = ("name", "target", "origin", "workitem_id")
    return {
        key: value
        for key in keys
        if isinstance(value := workitem.get(key), str) and value and bad_text(value) is None
    }


def _raises(error: Exception) -> Handler:
    def function(_: dict[str, Any]) -> NoReturn:
        raise error

    return function


class Reporter:
    """One confirming connection per worker process and broker, (re)opened when needed."""

    def __init__(self) -> None:
        self._brokers: dict[str, Broker] = {}
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forked)

    def publish(self, url: str, queue: str, body: bytes, fields: dict[str, Any]) -> None:
        """Publish to ``queue`` with a confirm; one new connection is tried if it fails."""
        with self._lock:
            try:
                self._send(url, queue, body, fields)
            except BrokerError:
                self._forget(url)
                self._send(url, queue, body, fields)

    def close(self, *_: Any, **__: Any) -> None:
        with self._lock:
            for url in list(self._brokers):
                self._forget(url)

    def _forked(self) -> None:
        """In a forked child (a prefork pool process) the parent's sockets are not ours."""
        self._brokers, self._lock = {}, threading.Lock()

    def _send(self, url: str, queue: str, body: bytes, fields: dict[str, Any]) -> None:
        broker = self._brokers.get(url)
        if broker is None:
            broker = self._brokers[url] = Broker(url)
        broker.ensure_queue(queue)
        broker.publish("", queue, body, fields)

    def _forget(self, url: str) -> None:
        broker = self._brokers.pop(url, None)
        if broker is not None:
            broker.close()


REPORTER = Reporter()
worker_process_shutdown.connect(REPORTER.close, weak=False)
worker_shutdown.connect(REPORTER.close, weak=False)
