"""A Celery app whose task is a participant of the example processes.

Run it with ``celery -A examples.participants.celery_app worker --pool=solo`` (its settings,
routing included, are in ``celeryconfig``; the engine needs them too). The action
``<action participant="examples.participants.celery_app.estimate_shipping" kind="celery"/>``
sends the task; ``bureaucrat.celery.participant`` makes it answer the engine.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

from bureaucrat.celery import participant

BROKER = os.environ.get("BUREAUCRAT_AMQP_URL", "amqp://guest:guest@localhost:5672//")

app = Celery("examples", broker=BROKER)
app.config_from_object("examples.participants.celeryconfig")
app.conf.bureaucrat_message_queue = os.environ.get("BUREAUCRAT_MESSAGE_QUEUE", "bureaucrat_msgs")


@participant(app, name="examples.participants.celery_app.estimate_shipping")
def estimate_shipping(payload: dict[str, Any]) -> dict[str, Any]:
    payload["shipping_days"] = 2 if payload["quantity"] < 10 else 5
    return payload
