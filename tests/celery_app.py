"""The Celery app the participant tests run in a real worker (``celery -A tests.celery_app``).

Its broker is the test broker; answers go to the message queue named by the environment
(``TEST_MESSAGE_QUEUE``), so that concurrent test runs never read each other's answers. Tasks
named the original's way (``<package>.tasks.<name>``, routed by their first segment) take that
first segment from ``TEST_ORIGINAL_QUEUE``, so that each test run has a queue of its own.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pika
from celery import Celery, Task  # type: ignore[import-untyped]
from celery.signals import task_success  # type: ignore[import-untyped]

from bureaucrat.celery import ParticipantTask, participant
from tests.brokers import AMQP_URL

MESSAGE_QUEUE = os.environ.get("TEST_MESSAGE_QUEUE", "bureaucrat_msgs")
ORIGINAL_QUEUE = os.environ.get("TEST_ORIGINAL_QUEUE", "webhook_launcher")

app = Celery("tests", broker=AMQP_URL, set_as_current=False)
app.config_from_object("tests.celeryconfig")
app.conf.bureaucrat_message_queue = MESSAGE_QUEUE


@participant(app, name="tests.double")
def double(payload: dict[str, Any]) -> dict[str, Any]:
    payload["n"] = payload["n"] * 2
    return payload


@participant(app, name="tests.look")
def look(payload: dict[str, Any]) -> None:
    """Changes nothing: the payload goes back as it came."""


@app.task(base=ParticipantTask, name="tests.broken")  # type: ignore[untyped-decorator]
def broken(payload: dict[str, Any]) -> dict[str, Any]:
    raise ValueError(f"no stock for {payload['item']}")


@participant(app, name="tests.flaky", bind=True)
def flaky(task: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Succeeds on its third attempt."""
    if task.request.retries < 2:
        raise task.retry(countdown=0, max_retries=2)
    payload["attempts"] = task.request.retries + 1
    return payload


@participant(app, name="tests.hopeless", bind=True)
def hopeless(task: Task, payload: dict[str, Any]) -> dict[str, Any]:
    raise task.retry(exc=RuntimeError("the supplier is closed"), countdown=0, max_retries=1)


@participant(app, name="tests.busy", autoretry_for=(OSError,), max_retries=1, default_retry_delay=0)
def busy(payload: dict[str, Any]) -> dict[str, Any]:
    raise OSError("the line is busy")


# The original bureaucrat's way: a plain task takes and returns the whole workitem, and a
# task_success handler (as in its README) sends the result back to the engine.


@app.task(name="tests.legacy")  # type: ignore[untyped-decorator]
def legacy(workitem: dict[str, Any]) -> dict[str, Any]:
    workitem["payload"]["legacy"] = True
    return workitem


@app.task(name=f"{ORIGINAL_QUEUE}.tasks.handle_webhook")  # type: ignore[untyped-decorator]
def handle_webhook(workitem: dict[str, Any]) -> dict[str, Any]:
    """An original-style task whose name routes it (``celery_routing = original``)."""
    workitem["payload"]["handled"] = workitem["payload"].get("hook")
    return workitem


@participant(app, name=f"{ORIGINAL_QUEUE}.tasks.double")
def original_double(payload: dict[str, Any]) -> dict[str, Any]:
    payload["n"] = payload["n"] * 2
    return payload


@task_success.connect  # type: ignore[untyped-decorator]
def handle_task_success(sender: Any = None, **kwargs: Any) -> None:
    """Report task results back to workflow engine."""
    if isinstance(sender, ParticipantTask):
        return  # it has answered already
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.basic_publish(
        exchange="",
        routing_key=MESSAGE_QUEUE,
        body=json.dumps(kwargs["result"]),
        properties=pika.BasicProperties(
            delivery_mode=2, content_type="application/x-bureaucrat-message"
        ),
    )
    connection.close()
