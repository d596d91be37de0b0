"""Group commit: the writes that arrive while a commit is on its way to disk share the next one.

SQLite lets one writer in at a time, and with `synchronous=FULL` every commit waits for the
disk. Request threads that each committed their own enquiry queued behind one another's
fsyncs. Here, the first thread to arrive leads: it writes every waiting thread's statements
in one transaction, each in a savepoint of its own (one that fails takes only its own rows
back), commits once, and wakes them. Whoever arrived during that commit is led by the first of
them in the next round. Nobody is answered before the commit that holds its rows is on disk.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine

T = TypeVar("T")


class _Write(Generic[T]):
    """One thread's statements, and what became of them."""

    def __init__(self, work: Callable[[Connection], T]) -> None:
        self.work = work
        self.done = threading.Event()
        self.leads = False  # woken to lead the next round, not with an outcome
        self.settled = False
        self.result: T | None = None
        self.error: BaseException | None = None

    def settle(self, result: T | None = None, error: BaseException | None = None) -> None:
        self.result, self.error, self.settled = result, error, True

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # settled with the work's result


class GroupCommit:
    """One engine's writers, committed together a round at a time."""

    def __init__(self, engine: Engine, begin_writing: Callable[[Connection], None]) -> None:
        self.engine = engine
        self.begin_writing = begin_writing  # marks a connection as one that writes
        self.lock = threading.Lock()
        self.waiting: list[_Write[Any]] = []
        self.leading = False
        self.rounds = 0  # commits made, for the tests and the benchmark's notes
        # The leaders' connection, kept from round to round; only the leader of a round uses it.
        self.connection: Connection | None = None
        self.connection_pid = 0

    def run(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in a writing transaction shared with other threads; return once committed."""
        write = _Write(work)
        with self.lock:
            self.waiting.append(write)
            lead = not self.leading
            self.leading = True
        if not lead:
            write.done.wait()
            if not write.leads:
                return write.outcome()
        with self.lock:
            batch, self.waiting = self.waiting, []
        try:
            self._commit(batch)
        finally:
            with self.lock:
                if self.waiting:
                    following = self.waiting[0]
                    following.leads = True
                    following.done.set()
                else:
                    self.leading = False
        return write.outcome()

    def _leaders_connection(self) -> Connection:
        # Taking a connection from the pool and giving it back around each round was a sixth of
        # storing an enquiry. A forked process opens its own (the parent's is the parent's).
        if self.connection is None or self.connection_pid != os.getpid():
            self.connection = self.engine.connect()
            self.begin_writing(self.connection)
            self.connection_pid = os.getpid()
        return self.connection

    def _drop_connection(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None and self.connection_pid == os.getpid():
            with contextlib.suppress(Exception):
                connection.close()

    def _commit(self, batch: list[_Write[Any]]) -> None:
        try:
            connection = self._leaders_connection()
            with connection.begin():
                if len(batch) == 1:  # alone: no savepoint needed, the transaction is its own
                    batch[0].result = batch[0].work(connection)
                else:
                    for write in batch:
                        try:
                            with connection.begin_nested():
                                write.result = write.work(connection)
                        except Exception as error:
                            write.settle(error=error)
            self.rounds += 1
            for write in batch:
                if not write.settled:
                    write.settle(write.result)
        except BaseException as error:
            # A connection that failed a round is not trusted with the next one.
            self._drop_connection()
            # Nothing of this round is on disk: each writer hears why, and none is thanked.
            for write in batch:
                if not write.settled:
                    write.settle(error=error)
            if not isinstance(error, Exception):
                raise
        finally:
            for write in batch:
                write.done.set()
