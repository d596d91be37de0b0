"""The store's schema: Alembic migrations, applied one process at a time.

Alembic (and Mako with it) is imported only to migrate: a web worker whose store is already at
HEAD never loads it, which keeps about 11 MiB out of every worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS_DIR = os.path.join(os.path.dirname(__file__), "migrations")
# The newest migration in migrations/versions; a test holds it to Alembic's own head.
HEAD = "0004"


def alembic_config(engine: Engine) -> AlembicConfig:
    """An Alembic configuration pointing at our migrations and this engine."""
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to date, one process at a time."""
    if revision == "head" and current_revision(engine) == HEAD:
        return  # the usual start: nothing to do, and no need to load Alembic to see it
    from alembic import command

    with _migration_lock(engine):
        command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The schema revision the store is at, or None before the first migration."""
    with engine.connect() as connection:
        # Alembic's own table, read as Alembic's MigrationContext reads it.
        if not inspect(connection).has_table("alembic_version"):
            return None
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    if len(versions) > 1:
        raise RuntimeError("the store has several schema heads; this service has one")
    return versions[0][0] if versions else None


def head_revision(engine: Engine) -> str | None:
    """The newest revision the code knows."""
    return HEAD


def alembic_head(engine: Engine) -> str | None:
    """The newest revision as Alembic finds it in migrations/versions (for the tests)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    # Several gunicorn workers start at once; only one may create the tables.
    database = engine.url.database or ""
    if engine.dialect.name == "sqlite" and database in ("", ":memory:"):
        # An in-memory database lives in one process: nobody to wait for, and no file to lock.
        yield
    elif engine.dialect.name == "sqlite":
        with open(database + ".migrate-lock", "a") as handle:
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
