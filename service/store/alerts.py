"""When each alert to the operator last went: at most one an hour per cause, however many
workers notice it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, or_, select, update

from .engine import store
from .lifecycle import utcnow
from .models import Alert

TABLE = cast(Table, Alert.__table__)
COLUMNS = TABLE.c
DEAD_LETTER, STUCK, RECOVERED = "dead_letter", "stuck", "recovered"


def claim(cause: str, every: timedelta) -> bool:
    """Take the right to send this cause's alert now; False if one went within `every`."""
    now = utcnow()
    with store.writing() as connection:
        result = connection.execute(
            update(TABLE)
            .where(
                COLUMNS.cause == cause,
                or_(COLUMNS.last_sent_at.is_(None), COLUMNS.last_sent_at <= now - every),
            )
            .values(last_sent_at=now)
        )
    return result.rowcount == 1


def last_sent(cause: str) -> datetime | None:
    """When this cause's alert last went, if ever."""
    with store.session() as session:
        return session.scalar(select(Alert.last_sent_at).where(Alert.cause == cause))
