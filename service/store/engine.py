"""The enquiry store's engine: one per app, with the durability settings each database needs."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import math
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from flask import Flask, current_app
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from . import schema
from .group_commit import GroupCommit

logger = logging.getLogger(__name__)

# The execution option that marks a connection as about to write.
WRITE = "contact_form_write"
# The connection this thread's writing transactions share, inside Store.one_connection().
_HELD: contextvars.ContextVar[Connection | None] = contextvars.ContextVar("held", default=None)
T = TypeVar("T")


class Store:
    """Flask extension that owns the engine and hands out sessions."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Create the engine for DATABASE_URL; migrate on start-up if AUTO_MIGRATE says so."""
        url = app.config.get("DATABASE_URL") or default_sqlite_url(app)
        app.config["DATABASE_URL"] = url
        engine = make_engine(url, float(app.config["DATABASE_TIMEOUT"]))
        # The newest revision is read once: /readyz compares the store's schema with it.
        app.extensions["store"] = StoreState(engine, schema.head_revision(engine))
        auto = app.config.get("AUTO_MIGRATE")
        if auto is None:
            auto = engine.dialect.name == "sqlite"
        if auto:
            schema.upgrade(engine)

    @property
    def state(self) -> StoreState:
        """The current app's engine, sessions and schema head."""
        state: StoreState = current_app.extensions["store"]
        return state

    @property
    def engine(self) -> Engine:
        """The current app's engine."""
        return self.state.engine

    def session(self) -> Session:
        """Open a new session on the current app's engine; the caller closes it."""
        return self.state.sessions()

    def fold_in_log(self) -> None:
        """On SQLite, copy the write-ahead log into the file and empty it (after an erase)."""
        # Until then the log still holds the pages as they were before the erase.
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def together(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in a writing transaction; on SQLite, one commit shared with other threads."""
        # PostgreSQL groups concurrent commits into one WAL flush by itself.
        group = self.state.group
        if group is None:
            with self.writing() as connection:
                return work(connection)
        return group.run(work)

    @contextlib.contextmanager
    def writing(self) -> Iterator[Connection]:
        """A connection for SQL statements in one writing transaction: commit on success."""
        # Core statements, not the ORM's unit of work: the hot writes (an enquiry in, a `sent`
        # mark) are single statements, and the ORM's bookkeeping would cost more than the write.
        # The mark makes SQLite take its write lock at BEGIN (see below); connections that only
        # read begin DEFERRED and never wait for a writer.
        held = _HELD.get()
        if held is not None and not held.in_transaction():
            with held.begin():
                yield held
            return
        with self.engine.connect() as connection:
            begin_writing(connection)
            with connection.begin():
                yield connection

    @contextlib.contextmanager
    def one_connection(self) -> Iterator[None]:
        """Let this thread's writing transactions share one connection until the block ends."""
        # A delivery commits one `sent` mark per email, each before the next email is sent;
        # taking a connection from the pool and giving it back around each one cost a third of
        # the mark. Each transaction still commits on its own.
        with self.engine.connect() as connection:
            begin_writing(connection)
            token = _HELD.set(connection)
            try:
                yield
            finally:
                _HELD.reset(token)


def begin_writing(connection: Connection) -> None:
    """Mark a connection as one that writes: SQLite then takes its write lock at BEGIN."""
    connection.execution_options(**{WRITE: True})


class StoreState:
    """One app's engine, its session factory, and the schema revision its code expects."""

    def __init__(self, engine: Engine, schema_head: str | None) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.schema_head = schema_head
        self.group = GroupCommit(engine, begin_writing) if engine.dialect.name == "sqlite" else None


store = Store()


def default_sqlite_url(app: Flask) -> str:
    """The embedded default: an SQLite file in the instance folder."""
    os.makedirs(app.instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(app.instance_path, "enquiries.sqlite3")


def make_engine(url: str, timeout: float = 10.0) -> Engine:
    """Create an engine with the durability settings each database needs.

    No statement waits longer than `timeout` seconds (DATABASE_TIMEOUT), for a lock or for the
    server: a request answers 503 instead of holding its thread, and the worker goes on.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": timeout})
        event.listen(engine, "connect", functools.partial(_sqlite_on_connect, timeout=timeout))
        event.listen(engine, "begin", functools.partial(_sqlite_on_begin, timeout=timeout))
        return engine
    engine = create_engine(
        url, pool_pre_ping=True, pool_timeout=timeout, connect_args=_connect_args(url, timeout)
    )
    if engine.dialect.name == "postgresql":
        event.listen(engine, "connect", functools.partial(_postgresql_on_connect, timeout=timeout))
    return engine


def _connect_args(url: str, timeout: float) -> dict[str, Any]:
    # A network store must not hang a request or a worker for ever.
    return {"connect_timeout": max(1, math.ceil(timeout))} if url.startswith("postgresql") else {}


def _postgresql_on_connect(dbapi_connection: Any, _record: Any, timeout: float) -> None:
    # Set per session rather than in the URL's options, which a deployment may use already.
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET statement_timeout = {int(timeout * 1000)}")
    dbapi_connection.commit()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any, timeout: float) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own handling defers it).
    dbapi_connection.isolation_level = None
    # Switching a new file to WAL needs its exclusive lock, and SQLite gives up at once
    # rather than wait when it thinks waiting could deadlock: workers that boot together on a
    # fresh file (one of them migrating) would fail to start, so ask again until the timeout.
    _while_locked(dbapi_connection, "PRAGMA journal_mode=WAL", timeout)
    cursor = dbapi_connection.cursor()
    # FULL: a commit is on disk before we say "thank you", even across a power cut.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    # Erased fields are overwritten with zeros in the file, not merely marked free.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _sqlite_on_begin(connection: Any, timeout: float) -> None:
    if not connection.get_execution_options().get(WRITE):
        connection.exec_driver_sql("BEGIN")
        return
    # IMMEDIATE takes the write lock up front, so a read-then-write never fails half-way
    # with SQLITE_BUSY and two workers can never claim the same row. SQLite's own busy wait
    # sleeps 1, 2, 5, 10 ... up to 100 ms between tries, which piles up under load; a writer
    # holds the lock for well under a millisecond, so ask again every millisecond or two.
    dbapi = connection.connection.dbapi_connection
    dbapi.execute("PRAGMA busy_timeout=0")
    try:
        _while_locked(dbapi, "BEGIN IMMEDIATE", timeout)
    finally:
        dbapi.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")


def _while_locked(dbapi_connection: Any, statement: str, timeout: float) -> None:
    """Run an SQLite statement, asking again every millisecond or two while it finds a lock."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            dbapi_connection.execute(statement).close()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.0005, 0.002))
