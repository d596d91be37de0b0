"""Group commit on SQLite: writers that wait share one commit, and each is answered once on disk."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import IntegrityError

from service.store.engine import begin_writing, make_engine
from service.store.group_commit import GroupCommit

WRITERS = 8


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'group.sqlite3'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE rows (id INTEGER PRIMARY KEY)"))
        connection.execute(
            text(
                "CREATE TABLE children (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES "
                "rows(id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    return engine


def stored(engine: Engine, table: str = "rows") -> set[int]:
    """What another connection reads: only what was committed."""
    with engine.connect() as connection:
        return {row[0] for row in connection.execute(text(f"SELECT id FROM {table}"))}


def insert(row_id: int) -> Any:
    def work(connection: Connection) -> int:
        connection.execute(text("INSERT INTO rows (id) VALUES (:id)"), {"id": row_id})
        return row_id

    return work


def write_together(
    group: GroupCommit, works: list[Any], engine: Engine
) -> tuple[dict[int, Any], dict[int, bool]]:
    """Run the works from threads of their own while the first one's commit is held up."""
    outcomes: dict[int, Any] = {}
    on_disk: dict[int, bool] = {}
    everyone_waits = threading.Event()

    def first(connection: Connection) -> Any:
        # The first writer leads alone; the others arrive while its transaction is open.
        assert everyone_waits.wait(10)
        return works[0](connection)

    def writer(number: int) -> None:
        try:
            outcomes[number] = group.run(first if number == 0 else works[number])
        except Exception as error:
            outcomes[number] = error
        if number != 0 and not isinstance(outcomes[number], Exception):
            on_disk[number] = outcomes[number] in stored(engine)

    threads = [threading.Thread(target=writer, args=(0,))]
    threads[0].start()
    while not group.leading:
        time.sleep(0.001)
    threads += [threading.Thread(target=writer, args=(n,)) for n in range(1, len(works))]
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + 10
    while len(group.waiting) < len(works) - 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    everyone_waits.set()
    for thread in threads:
        thread.join(10)
    return outcomes, on_disk


def test_writers_that_wait_share_one_commit_and_each_is_on_disk_when_answered(
    engine: Engine,
) -> None:
    commits: list[int] = []
    event.listen(engine, "commit", lambda connection: commits.append(1))
    group = GroupCommit(engine, begin_writing)
    outcomes, on_disk = write_together(group, [insert(n) for n in range(WRITERS)], engine)
    assert outcomes == {n: n for n in range(WRITERS)}
    assert stored(engine) == set(range(WRITERS))
    assert on_disk == {n: True for n in range(1, WRITERS)}, "answered only once committed"
    assert (group.rounds, len(commits)) == (2, 2), "the first alone, then the seven together"
    assert not group.leading and group.waiting == []


def test_a_failing_writer_takes_back_only_its_own_rows(engine: Engine) -> None:
    group = GroupCommit(engine, begin_writing)

    def twice(connection: Connection) -> int:
        connection.execute(text("INSERT INTO rows (id) VALUES (100)"))
        connection.execute(text("INSERT INTO rows (id) VALUES (1)"))  # writer 1's id: a twin
        return 100

    works = [insert(n) for n in range(WRITERS)]
    works[3] = twice
    outcomes, _ = write_together(group, works, engine)
    assert isinstance(outcomes[3], IntegrityError)
    assert stored(engine) == set(range(WRITERS)) - {3}, "its first row went back with it"
    assert group.rounds == 2


def test_when_the_commit_fails_no_writer_is_told_it_was_stored(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")  # for the pooled connection
    event.listen(
        engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA foreign_keys=ON"), insert=False
    )
    engine.dispose()
    group = GroupCommit(engine, begin_writing)

    def orphan(connection: Connection) -> int:
        # Checked only at COMMIT (deferred): the whole round fails there.
        connection.execute(text("INSERT INTO children (id, parent) VALUES (1, 999)"))
        return 999

    works = [insert(n) for n in range(4)]
    works[2] = orphan
    outcomes, _ = write_together(group, works, engine)
    assert outcomes[0] == 0, "the first round committed alone"
    assert all(isinstance(outcomes[n], IntegrityError) for n in (1, 2, 3)), outcomes
    assert stored(engine) == {0} and stored(engine, "children") == set()
    # The next writer is not held back by the failed round.
    assert group.run(insert(50)) == 50 and 50 in stored(engine)


def test_rounds_one_after_another_share_one_connection(engine: Engine) -> None:
    group = GroupCommit(engine, begin_writing)
    checkouts: list[bool] = []
    event.listen(engine, "checkout", lambda *_: checkouts.append(True))
    results = [group.run(insert(number)) for number in range(5)]
    assert results == list(range(5)) and group.rounds == 5
    assert len(checkouts) == 1, "one connection for the five rounds"
    assert stored(engine) == set(range(5)), "each round committed"
