"""Fixtures shared by the test modules: the real broker and real databases."""

import pytest

from tests.brokers import require_rabbitmq
from tests.store_fixtures import postgres_url, store, store_url

__all__ = ["postgres_url", "rabbitmq", "store", "store_url"]


@pytest.fixture
def rabbitmq() -> None:
    """The test needs RabbitMQ (it fails under CI when there is none)."""
    require_rabbitmq()
