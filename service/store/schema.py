"""The store's schema: Alembic migrations, applied one process at a time."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

MIGRATIONS_DIR = os.path.join(os.path.dirname(__file__), "migrations")


def alembic_config(engine: Engine) -> AlembicConfig:
    """An Alembic configuration pointing at our migrations and this engine."""
    config = AlembicConfig()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to date, one process at a time."""
    with _migration_lock(engine):
        command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The schema revision the store is at, or None before the first migration."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    """The newest revision the code knows."""
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    # Several gunicorn workers start at once; only one may create the tables.
    if engine.dialect.name == "sqlite":
        path = (engine.url.database or "memory") + ".migrate-lock"
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            # A migration, and the wait for another process's, may outlast DATABASE_TIMEOUT.
            connection.execute(text("SET LOCAL statement_timeout = 0"))
            connection.execute(text("SELECT pg_advisory_lock(727274)"))
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(727274)"))
                connection.commit()
    else:
        yield
