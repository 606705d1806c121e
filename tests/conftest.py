"""Fixtures shared by the test modules (the real services live in ``tests.services``)."""

from tests.services import database_url, rabbitmq

__all__ = ["database_url", "rabbitmq"]
