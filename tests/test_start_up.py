"""Workers that start together on a fresh SQLite file all start: none fails on the WAL switch."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from service.store import schema
from service.store.engine import make_engine


def hold_a_write_on_a_new_file(path: Path) -> sqlite3.Connection:
    """What another worker's migration holds: a write transaction on a file not yet in WAL."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE first_migration (x)")
    return holder


def test_a_connection_waits_for_the_lock_to_switch_a_new_file_to_wal(tmp_path: Path) -> None:
    path = tmp_path / "enquiries.sqlite3"
    holder = hold_a_write_on_a_new_file(path)
    # SQLite refuses this switch at once, without its busy wait, while the write is open.
    threading.Timer(0.3, holder.execute, ["COMMIT"]).start()
    engine = make_engine(f"sqlite:///{path}", timeout=5.0)
    started = time.monotonic()
    with engine.connect() as connection:
        mode = connection.execute(text("PRAGMA journal_mode")).scalar()
    assert mode == "wal"
    assert time.monotonic() - started >= 0.2  # it waited for the commit, and then switched
    holder.close()


def test_a_lock_that_is_never_let_go_fails_after_the_timeout_and_not_for_ever(
    tmp_path: Path,
) -> None:
    path = tmp_path / "enquiries.sqlite3"
    holder = hold_a_write_on_a_new_file(path)
    engine = make_engine(f"sqlite:///{path}", timeout=0.5)
    started = time.monotonic()
    with pytest.raises(OperationalError, match="locked"):
        engine.connect()
    assert 0.4 < time.monotonic() - started < 3
    holder.close()


def _boot(url: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    barrier.wait()
    engine = make_engine(url, timeout=10.0)
    schema.upgrade(engine)
    assert schema.current_revision(engine) == schema.HEAD


def test_four_workers_booting_together_on_a_fresh_file_all_start(tmp_path: Path) -> None:
    fork = multiprocessing.get_context("fork")
    for round_ in range(5):
        url = f"sqlite:///{tmp_path / f'round-{round_}.sqlite3'}"
        barrier = fork.Barrier(4)
        workers = [fork.Process(target=_boot, args=(url, barrier)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert [worker.exitcode for worker in workers] == [0, 0, 0, 0], f"round {round_}"


def test_migrating_an_in_memory_database_leaves_no_lock_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its lock file was once made in the working directory, and committed by accident.
    monkeypatch.chdir(tmp_path)
    engine = make_engine("sqlite://", timeout=5.0)
    schema.upgrade(engine)
    assert schema.current_revision(engine) == schema.head_revision(engine)
    assert list(tmp_path.iterdir()) == []
