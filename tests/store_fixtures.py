"""Fixtures for the store's contract suite: one real database per test, SQLite or PostgreSQL.

``store_url`` is parametrized over both backends, so every test that uses it runs twice (the
one-suite-per-backend idea). PostgreSQL tests get a schema of their own, dropped afterwards.
Locally a missing PostgreSQL skips them; under ``CI=true`` it fails them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from bureaucrat.store import Store

POSTGRES_URL = os.environ.get(
    "BUREAUCRAT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
STORE_BACKENDS = ("sqlite", "postgresql")


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def postgres_admin() -> sa.Engine:
    """An engine on the test database; skips (fails under CI) when PostgreSQL is missing."""
    engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3}, pool_pre_ping=True)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as error:
        engine.dispose()
        message = f"PostgreSQL is not reachable at {POSTGRES_URL}: {error.orig}"
        if under_ci():
            pytest.fail(f"{message} (CI requires it)")
        pytest.skip(message)
    return engine


@contextmanager
def postgres_schema(prefix: str = "store_test") -> Iterator[str]:
    """A URL whose connections live in a new, empty schema; the schema is dropped afterwards."""
    admin = postgres_admin()
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database: a SQLite file or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    with postgres_schema() as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """Like ``store_url``, PostgreSQL only (for what SQLite cannot show)."""
    with postgres_schema() as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store(store_url)
    try:
        yield opened
    finally:
        opened.close()
