"""The test broker: where it is, whether it is there, and names and clean-up for test queues.

Locally a RabbitMQ that cannot be reached skips the tests that need it; under CI (``CI=true``)
it fails them, so a machine without a broker never passes for a green build. Tests share the
broker with other suites running at the same time: each uses queue names of its own (``unique``)
and deletes them afterwards (``delete``).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable

import pika
import pytest

AMQP_URL = os.environ.get("BUREAUCRAT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(service: str, host: str, port: int) -> None:
    """Skip the test (fail it under CI) when nothing listens at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError:
        message = f"{service} is not reachable at {host}:{port}"
    if in_ci():
        pytest.fail(f"{message} (CI requires it)")
    pytest.skip(message)


def require_rabbitmq(url: str = AMQP_URL) -> None:
    parameters = pika.URLParameters(url)
    require("RabbitMQ", parameters.host, parameters.port)


def unique(prefix: str) -> str:
    """A queue or exchange name no other test run uses."""
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


def delete(queues: Iterable[str] = (), exchanges: Iterable[str] = (), url: str = AMQP_URL) -> None:
    """Delete test queues and exchanges (those that exist)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange)
    finally:
        connection.close()
