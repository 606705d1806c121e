"""Alembic's environment for bureaucrat's migrations.

The store runs the migrations programmatically on a connection it hands over in
``config.attributes["connection"]``; a ``sqlalchemy.url`` main option works too (for developers
running Alembic by hand, e.g. ``alembic revision --autogenerate``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from bureaucrat.store.database import is_sqlite, make_engine
from bureaucrat.store.tables import metadata


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=is_sqlite(connection),
    )
    with context.begin_transaction():
        context.run_migrations()


def _offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("no connection and no sqlalchemy.url for the migrations")
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    _offline()
else:
    _online()
