"""The real services the integration tests need, and what to do when one is missing.

Locally a missing RabbitMQ or PostgreSQL skips the tests that need it; under CI (``CI=true``)
it fails them, so a broken machine never passes for a green build.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES_URL = os.environ.get(
    "BUREAUCRAT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ("sqlite", "postgresql")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require(service: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{service} is not reachable at {host}:{port}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI requires it)")
    pytest.skip(message)


def require_rabbitmq() -> None:
    require("RabbitMQ", "127.0.0.1", 5672)


def require_postgres() -> None:
    require("PostgreSQL", "127.0.0.1", 5432)


@pytest.fixture
def rabbitmq() -> None:
    require_rabbitmq()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for one test: a SQLite file, or a PostgreSQL schema of its own."""
    backend = request.param
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'bureaucrat.db'}"
        return
    require_postgres()
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
