"""The database's record of used captcha answers: the replay store's fallback without Redis."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .engine import store
from .models import UsedCaptcha


def _insert_once(insert: Any) -> Any:
    table = UsedCaptcha.__table__
    # RETURNING, not rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING.
    return insert(table).on_conflict_do_nothing(index_elements=["key"]).returning(table.c.key)


# Built once per dialect: the values come with each execution.
_INSERT_ONCE = {"postgresql": _insert_once(pg_insert), "sqlite": _insert_once(sqlite_insert)}
_IS_RECORDED = select(UsedCaptcha.__table__.c.key).where(
    UsedCaptcha.__table__.c.key == bindparam("key")
)


def record(connection: Connection, key: str, expires_at: datetime) -> bool:
    """Record the answer as used in the caller's transaction; False if it already was."""
    statement = _INSERT_ONCE[connection.dialect.name]
    return (
        connection.execute(statement, {"key": key, "expires_at": expires_at}).scalar() is not None
    )


def is_recorded(key: str) -> bool:
    """True if the answer was recorded as used."""
    # A read, which takes no lock: a spent answer sent again and again never queues for the
    # write lock that real enquiries need.
    with store.engine.connect() as connection:
        return connection.execute(_IS_RECORDED, {"key": key}).first() is not None


def forget_expired(now: datetime | None = None) -> int:
    """Drop the records of answers whose challenges have expired; return how many."""
    with store.writing() as connection:
        result = connection.execute(
            delete(UsedCaptcha).where(UsedCaptcha.expires_at < (now or datetime.now(UTC)))
        )
    return result.rowcount
