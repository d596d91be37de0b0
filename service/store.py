"""The enquiry store: one SQLAlchemy engine per app, sessions, and schema migrations."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = os.path.join(os.path.dirname(__file__), "migrations")
# The execution option that marks a connection as about to write.
WRITE = "contact_form_write"
# How long a writer waits for SQLite's write lock before giving up.
BUSY_SECONDS = 30


class Store:
    """Flask extension that owns the engine and hands out sessions."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Create the engine for DATABASE_URL and register the CLI command."""
        url = app.config.get("DATABASE_URL") or default_sqlite_url(app)
        app.config["DATABASE_URL"] = url
        engine = make_engine(url)
        app.extensions["store"] = _State(engine)
        # Read once: /readyz compares the store's schema with it on every call.
        app.extensions["schema_head"] = head_revision(engine)
        app.cli.add_command(_db_cli())
        auto = app.config.get("AUTO_MIGRATE")
        if auto is None:
            auto = engine.dialect.name == "sqlite"
        if auto:
            upgrade(engine)

    @property
    def engine(self) -> Engine:
        """The current app's engine."""
        return current_app.extensions["store"].engine

    def session(self) -> Session:
        """Open a new session on the current app's engine; the caller closes it."""
        return current_app.extensions["store"].sessions()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """Open a session for writing, commit on success, roll back on error, always close."""
        with self.session() as session, session.begin():
            # Marks the connection so that SQLite takes its write lock at BEGIN (see below);
            # sessions that only read begin DEFERRED and never wait for a writer.
            session.connection(execution_options={WRITE: True})
            yield session

    @contextlib.contextmanager
    def writing(self) -> Iterator[Connection]:
        """A connection for SQL statements in one writing transaction: commit on success."""
        # Core statements, not the ORM's unit of work: the hot writes (an enquiry in, a `sent`
        # mark) are single statements, and the ORM's bookkeeping would cost more than the write.
        with self.engine.connect() as connection:
            connection.execution_options(**{WRITE: True})
            with connection.begin():
                yield connection


class _State:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)


def default_sqlite_url(app: Flask) -> str:
    """The embedded default: an SQLite file in the instance folder."""
    os.makedirs(app.instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(app.instance_path, "enquiries.sqlite3")


def make_engine(url: str) -> Engine:
    """Create an engine with the durability settings each database needs."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, connect_args=_connect_args(url))


def _connect_args(url: str) -> dict[str, Any]:
    # A network store must not hang a request or a worker for ever.
    return {"connect_timeout": 10} if url.startswith("postgresql") else {}


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own handling defers it).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before we say "thank you", even across a power cut.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_SECONDS * 1000}")
    cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    if not connection.get_execution_options().get(WRITE):
        connection.exec_driver_sql("BEGIN")
        return
    # IMMEDIATE takes the write lock up front, so a read-then-write never fails half-way
    # with SQLITE_BUSY and two workers can never claim the same row. SQLite's own busy wait
    # sleeps 1, 2, 5, 10 ... up to 100 ms between tries, which piles up under load; a writer
    # holds the lock for well under a millisecond, so ask again every millisecond or two.
    dbapi = connection.connection.dbapi_connection
    deadline = time.monotonic() + BUSY_SECONDS
    dbapi.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                dbapi.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.0005, 0.002))
    finally:
        dbapi.execute(f"PRAGMA busy_timeout={BUSY_SECONDS * 1000}")


def ping(engine: Engine) -> None:
    """Raise unless the store answers a trivial query."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def alembic_config(engine: Engine) -> Any:
    """An Alembic configuration pointing at our migrations and this engine."""
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to date, one process at a time."""
    from alembic import command

    with _migration_lock(engine):
        command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The schema revision the store is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    """The newest revision the code knows."""
    from alembic.script import ScriptDirectory

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
            connection.execute(text("SELECT pg_advisory_lock(727274)"))
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(727274)"))
                connection.commit()
    else:
        yield


def _db_cli() -> Any:
    import click
    from flask.cli import AppGroup

    group = AppGroup("db", help="Manage the enquiry store's schema.")

    @group.command("upgrade")
    def upgrade_command() -> None:
        """Apply every pending schema migration."""
        engine = current_app.extensions["store"].engine
        upgrade(engine)
        click.echo(f"Store is at revision {current_revision(engine)}.")

    @group.command("current")
    def current_command() -> None:
        """Print the store's schema revision."""
        engine = current_app.extensions["store"].engine
        click.echo(f"current: {current_revision(engine)}  head: {head_revision(engine)}")

    return group
