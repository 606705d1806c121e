"""The Celery app of the throughput benchmark's baseline: chains of echo tasks (solo pool).

No task keeps a result, as a chain does not need them; the last task of a chain publishes one
message to the queue ``BENCH_DONE_QUEUE``, so that the benchmark knows when the chain is done.
Neither durable nor transactional: the floor a Celery user compares bureaucrat with.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pika
from celery import Celery  # type: ignore[import-untyped]

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
app = Celery("chains", broker=AMQP_URL, set_as_current=False)
app.conf.task_ignore_result = True
app.conf.worker_prefetch_multiplier = 50  # Celery's default of 4 leaves a solo worker idle
app.conf.task_default_queue = os.environ.get("BENCH_CHAIN_QUEUE", "bench_chains")
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True


@app.task(name="bench.echo", ignore_result=True)  # type: ignore[untyped-decorator]
def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


_channel: list[Any] = []


@app.task(name="bench.last")  # type: ignore[untyped-decorator]
def last(payload: dict[str, Any]) -> dict[str, Any]:
    if not _channel:
        _channel.append(pika.BlockingConnection(pika.URLParameters(AMQP_URL)).channel())
    _channel[0].basic_publish("", os.environ["BENCH_DONE_QUEUE"], json.dumps(payload).encode())
    return payload
