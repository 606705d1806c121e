"""The schema's version: Alembic migrations shipped in ``bureaucrat/store/migrations``.

``upgrade(url)`` applies them (``bureaucratctl db upgrade``). ``ensure_schema`` is what opening
a store does: a fresh database gets the schema created; a current one is used as it is; an older
one is refused with ``SchemaOutdatedError`` naming the command that upgrades it.
"""

from __future__ import annotations

import enum
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from bureaucrat.errors import SchemaOutdatedError, StoreError
from bureaucrat.store.database import is_sqlite, make_engine, safe_url, translated
from bureaucrat.store.tables import TABLES

MIGRATIONS = Path(__file__).resolve().with_name("migrations")
UPGRADE_COMMAND = "bureaucratctl db upgrade"
VERSION_TABLE = "alembic_version"
_LOCK_KEY = 0x62757265  # "bure": serialises schema changes between daemons on PostgreSQL


class SchemaStatus(enum.Enum):
    FRESH = "fresh"  # none of our tables: create them
    CURRENT = "current"
    OUTDATED = "outdated"  # an older revision, or our tables without a version
    NEWER = "newer"  # a revision this bureaucrat does not know


def alembic_config(connection: sa.Connection | None = None, url: str | None = None) -> Config:
    """An Alembic configuration for our migrations, without any ini file."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def schema_status(connection: sa.Connection) -> tuple[SchemaStatus, set[str]]:
    """Where the database's schema stands, and its current revisions."""
    names = set(sa.inspect(connection).get_table_names())
    if VERSION_TABLE not in names:
        status = SchemaStatus.FRESH if not names & set(TABLES) else SchemaStatus.OUTDATED
        return status, set()
    current = set(MigrationContext.configure(connection).get_current_heads())
    script = ScriptDirectory.from_config(alembic_config())
    if current == set(script.get_heads()):
        return SchemaStatus.CURRENT, current
    try:
        for revision in current:
            script.get_revision(revision)
    except CommandError:
        return SchemaStatus.NEWER, current
    return SchemaStatus.OUTDATED, current


def upgrade(url: str, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` to the database at ``url``."""
    engine = make_engine(url)
    try:
        with translated("upgrading the schema"), engine.begin() as connection:
            _lock(connection)
            _run_upgrade(connection, revision)
    finally:
        engine.dispose()


def ensure_schema(engine: sa.Engine) -> None:
    """Create the schema in a fresh database; refuse an older or newer one."""
    with translated("checking the schema"), engine.begin() as connection:
        _lock(connection)
        status, current = schema_status(connection)
        if status is SchemaStatus.FRESH:
            _run_upgrade(connection, "head")
        elif status is SchemaStatus.OUTDATED:
            found = ", ".join(sorted(current)) or "no version"
            raise SchemaOutdatedError(
                f"the database schema at {safe_url(engine.url)} is older than this bureaucrat "
                f"({found}, expected {', '.join(sorted(head_revisions()))}); "
                f"run `{UPGRADE_COMMAND}` to upgrade it"
            )
        elif status is SchemaStatus.NEWER:
            raise StoreError(
                f"the database schema at {safe_url(engine.url)} has revision "
                f"{', '.join(sorted(current))}, newer than this bureaucrat knows; upgrade it"
            )


def _run_upgrade(connection: sa.Connection, revision: str) -> None:
    try:
        command.upgrade(alembic_config(connection), revision)
    except CommandError as error:
        raise StoreError(f"cannot upgrade the database schema: {error}") from None


def _lock(connection: sa.Connection) -> None:
    """Serialise schema work between processes (SQLite: BEGIN IMMEDIATE did it already)."""
    if not is_sqlite(connection):
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
