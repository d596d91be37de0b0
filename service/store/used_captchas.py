"""The database's record of used captcha answers: the replay store's fallback without Redis."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Connection, Table, bindparam, delete, select

from .engine import store
from .insert_once import insert_once
from .models import UsedCaptcha

TABLE = cast(Table, UsedCaptcha.__table__)
_IS_RECORDED = select(TABLE.c.key).where(TABLE.c.key == bindparam("key"))


def record(connection: Connection, key: str, expires_at: datetime) -> bool:
    """Record the answer as used in the caller's transaction; False if it already was."""
    return insert_once(connection, TABLE, TABLE.c.key, {"key": key, "expires_at": expires_at})


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
