"""Fixtures shared by the test modules: the real broker and real databases."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.brokers import require_rabbitmq
from tests.harness import Installation
from tests.store_fixtures import postgres_url, store, store_url

__all__ = ["postgres_url", "rabbitmq", "store", "store_url"]

# Under CI, property-based tests explore the same examples on every run: a failure there is a
# failure of the change, not of the draw.
# Everywhere, no deadline per example: on two shared cores a slow example is load, not a bug.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev")


@pytest.fixture
def installation(rabbitmq: None, store_url: str, tmp_path: Path) -> Iterator[Installation]:
    """A daemon's installation on each database backend (the daemon is started by the test)."""
    with Installation(tmp_path, store_url) as install:
        yield install


@pytest.fixture
def sqlite_installation(rabbitmq: None, tmp_path: Path) -> Iterator[Installation]:
    """The same, on SQLite only: for what does not depend on the database."""
    with Installation(tmp_path, f"sqlite:///{tmp_path / 'bureaucrat.db'}") as install:
        yield install


@pytest.fixture
def rabbitmq() -> None:
    """The test needs RabbitMQ (it fails under CI when there is none)."""
    require_rabbitmq()
