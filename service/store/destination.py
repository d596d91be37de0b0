"""The SMTP server as a whole: backed off while it fails at connect, login or MAIL FROM.

Shared by every worker through the store, so that the whole queue waits out one back-off and
at most one worker logs in per period, however many run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, select, update

from .engine import store
from .lifecycle import utcnow
from .models import Destination

NAME = "smtp"
TABLE = cast(Table, Destination.__table__)
COLUMNS = TABLE.c


@dataclass(frozen=True)
class Health:
    """What the workers last found: failures in a row, why, since when, and the next try."""

    failures: int = 0
    reason: str | None = None
    failing_since: datetime | None = None
    next_try_at: datetime | None = None

    def waiting(self, now: datetime) -> bool:
        """True while the back-off lasts: nobody may connect yet."""
        return self.failures > 0 and self.next_try_at is not None and self.next_try_at > now


def health() -> Health:
    """Read the destination's health (healthy if never recorded)."""
    with store.session() as session:
        row = session.get(Destination, NAME)
    if row is None:
        return Health()
    return Health(row.failures, row.reason, row.failing_since, row.next_try_at)


def take_turn(seen: Health, hold: timedelta) -> bool:
    """Claim the one try of this back-off period; False if another worker has it."""
    now = utcnow()
    with store.writing() as connection:
        result = connection.execute(
            update(TABLE)
            .where(
                COLUMNS.name == NAME,
                COLUMNS.failures == seen.failures,
                COLUMNS.next_try_at <= now,
            )
            # Others wait while this worker tries; its outcome sets the real next time.
            .values(next_try_at=now + hold)
        )
    return result.rowcount == 1


def failed(seen: Health, reason: str, backoff: Callable[[int], timedelta]) -> tuple[Health, bool]:
    """Count one more failure in a row and back off for `backoff(failures)`; return the health
    now, and whether this call counted it.

    Only if nobody recorded one since `seen`: workers that met the same outage at once (before
    any of them knew of it) count it once.
    """
    now = utcnow()
    with store.writing() as connection:
        row = connection.execute(
            select(COLUMNS.failures, COLUMNS.reason, COLUMNS.failing_since, COLUMNS.next_try_at)
            .where(COLUMNS.name == NAME)
            .with_for_update()
        ).first()
        if row is None:
            connection.execute(TABLE.insert().values(name=NAME, failures=0))
        elif row.failures != seen.failures:
            return Health(row.failures, row.reason, row.failing_since, row.next_try_at), False
        since = row.failing_since if row is not None else None
        after = Health(
            seen.failures + 1, reason[:500], since or now, now + backoff(seen.failures + 1)
        )
        connection.execute(
            update(TABLE)
            .where(COLUMNS.name == NAME, COLUMNS.failures == seen.failures)
            .values(
                failures=after.failures,
                reason=after.reason,
                failing_since=after.failing_since,
                next_try_at=after.next_try_at,
            )
        )
    return after, True


def recovered(seen: Health) -> bool:
    """Record that the server accepts again, if nobody recorded otherwise since `seen`."""
    with store.writing() as connection:
        result = connection.execute(
            update(TABLE)
            .where(COLUMNS.name == NAME, COLUMNS.failures == seen.failures)
            .values(failures=0, reason=None, failing_since=None, next_try_at=None)
        )
    return result.rowcount == 1
