"""Opening the database: URLs, engines with the right transaction behaviour, error translation.

SQLite: WAL journal (readers never block the writer), ``synchronous=FULL`` (or ``NORMAL``), a busy
timeout, and
``BEGIN IMMEDIATE`` for write transactions so that concurrent writers queue up instead of failing
with "database is locked" half-way through. Read-only work (``read_only=True`` on the connection)
begins a deferred transaction. PostgreSQL: connections are checked before use, rows are locked with
``SELECT ... FOR UPDATE`` by the store itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from bureaucrat.errors import StoreDataError, StoreError

DEFAULT_URL = "sqlite:///bureaucrat.db"
BUSY_TIMEOUT = 30.0
READ_ONLY = "bureaucrat_read_only"


def resolve_url(url: str | None = None, base: Path | None = None) -> str:
    """``url`` (default ``sqlite:///bureaucrat.db``) with a relative SQLite path made absolute.

    The path is resolved against ``base`` (default: the current directory), so the URL keeps
    naming the same file after a daemon changes its working directory.
    """
    parsed = _parse(url or DEFAULT_URL)
    database = parsed.database
    if not is_sqlite(parsed) or not database or database == ":memory:":
        return parsed.render_as_string(hide_password=False)
    if database.startswith("file:") or Path(database).is_absolute():
        return parsed.render_as_string(hide_password=False)
    absolute = ((base or Path.cwd()) / database).resolve()
    return parsed.set(database=str(absolute)).render_as_string(hide_password=False)


def _parse(url: str) -> sa.URL:
    try:
        return sa.make_url(url)
    except sa.exc.ArgumentError as error:
        raise StoreError(f"invalid database URL {url!r}: {error}") from None


def is_sqlite(url: sa.URL | sa.Engine | sa.Connection) -> bool:
    if isinstance(url, sa.URL):
        return url.get_backend_name() == "sqlite"
    return url.dialect.name == "sqlite"


def make_engine(url: str, sqlite_synchronous: str = "full") -> sa.Engine:
    """An engine for ``url`` (any SQLAlchemy URL; SQLite and PostgreSQL are the tested ones).

    ``sqlite_synchronous``: ``full`` (a commit is on disk when it returns) or ``normal`` (in WAL
    mode, the last commits before a power cut or an operating system crash may be lost; a crash
    of the daemon alone loses nothing)."""
    parsed = _parse(url)
    if sqlite_synchronous not in ("full", "normal"):
        raise StoreError(f"sqlite_synchronous = {sqlite_synchronous!r}: expected full or normal")
    try:
        if is_sqlite(parsed):
            engine = sa.create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT})
            _configure_sqlite(engine, sqlite_synchronous.upper())
            return engine
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (sa.exc.SQLAlchemyError, ImportError) as error:
        raise StoreError(f"cannot use database URL {safe_url(url)}: {error}") from None


def _configure_sqlite(engine: sa.Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def safe_url(url: str | sa.URL) -> str:
    """``url`` with its password hidden, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<invalid URL>"


@contextmanager
def translated(doing: str) -> Iterator[None]:
    """Turn SQLAlchemy's and the driver's exceptions into ``StoreError`` (saying what failed)."""
    try:
        yield
    except sa.exc.DBAPIError as error:
        text = f"database error while {doing}: {_first_line(error.orig)}"
        if _refused_data(error):
            raise StoreDataError(text) from error
        raise StoreError(text) from error
    except sa.exc.StatementError as error:  # the driver could not even send the values
        raise StoreDataError(f"database refused a value while {doing}: {error.orig}") from error
    except sa.exc.SQLAlchemyError as error:
        raise StoreError(f"database error while {doing}: {_first_line(error)}") from error
    except UnicodeError as error:  # psycopg encodes parameters itself: a lone surrogate
        raise StoreDataError(f"database refused a value while {doing}: {error}") from error


_DATA_ERRORS = (sa.exc.DataError, sa.exc.IntegrityError)


def _refused_data(error: sa.exc.DBAPIError) -> bool:
    """Whether the database refused the data itself, rather than failing or going away: only
    a lost connection, a lock timeout or a server failure is worth a retry."""
    return not error.connection_invalidated and isinstance(error, _DATA_ERRORS)


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
