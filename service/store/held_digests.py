"""The daily digest of held enquiries: which day's is sent, and what it covers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from .engine import store
from .lifecycle import HELD, utcnow
from .models import Enquiry, HeldDigest

TABLE = cast(Table, HeldDigest.__table__)
COLUMNS = TABLE.c


@dataclass(frozen=True)
class Claim:
    """A day's digest, claimed by this worker: held enquiries after `since`, before `until`."""

    day: str
    since: datetime | None
    until: datetime


def claim(day: str) -> Claim | None:
    """Claim the digest of `day`; None if another worker has (or it was sent already)."""
    now = utcnow()
    with store.session() as session:
        # Only digests that went out: one whose worker died before sending covers nothing.
        since = session.scalar(
            select(func.max(HeldDigest.covered_until)).where(HeldDigest.sent_at.is_not(None))
        )
    try:
        with store.writing() as connection:
            connection.execute(insert(TABLE).values(day=day, covered_until=now))
    except IntegrityError:
        return None
    return Claim(day, since, now)


def held_in(claim: Claim) -> list[Enquiry]:
    """The enquiries still held that arrived in the claim's period, oldest first."""
    query = select(Enquiry).where(Enquiry.status == HELD, Enquiry.created_at < claim.until)
    if claim.since is not None:
        query = query.where(Enquiry.created_at >= claim.since)
    with store.session() as session:
        return list(session.scalars(query.order_by(Enquiry.created_at)))


def sent(claim: Claim) -> None:
    """Record that the day's digest went out (or that there was nothing to send)."""
    with store.writing() as connection:
        connection.execute(
            update(TABLE)
            .where(COLUMNS.day == claim.day, COLUMNS.sent_at.is_(None))
            .values(sent_at=utcnow())
        )


def give_back(claim: Claim) -> None:
    """Drop the claim of a digest that could not be sent, so that the next pass tries again."""
    with store.writing() as connection:
        connection.execute(delete(TABLE).where(COLUMNS.day == claim.day, COLUMNS.sent_at.is_(None)))
