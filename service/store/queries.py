"""Reading the store: the outbox's counts, one enquiry, enquiries by state or by key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

from sqlalchemy import func, select

from . import destination
from .engine import store
from .lifecycle import PENDING, SENDING, STATES, due, refused_somewhere, utcnow
from .models import Enquiry

# Not a state: delivered enquiries that some inbox refused for good, shown beside the states.
REFUSED = "refused"


@dataclass(frozen=True)
class Status:
    """Counts per state, the age of the oldest pending enquiry, and the SMTP server's health."""

    counts: dict[str, int]
    oldest_pending_seconds: float | None
    refused: int = 0
    smtp: destination.Health = destination.Health()


def status() -> Status:
    """Read the outbox's counts per state and the age of its oldest pending enquiry."""
    with store.session() as session:
        rows = session.execute(select(Enquiry.status, func.count()).group_by(Enquiry.status))
        counts = dict.fromkeys(STATES, 0) | {state: count for state, count in rows}
        oldest = session.scalar(
            # Since it (last) entered the queue: a dead letter queued again by `outbox retry`
            # starts afresh.
            select(func.min(Enquiry.queued_at)).where(Enquiry.status.in_((PENDING, SENDING)))
        )
        refused = session.scalar(select(func.count()).where(refused_somewhere())) or 0
    if oldest is not None and oldest.tzinfo is None:  # func.min bypasses the column type.
        oldest = oldest.replace(tzinfo=UTC)
    age = (utcnow() - oldest).total_seconds() if oldest is not None else None
    return Status(counts, age, refused, destination.health())


def claimable_count() -> int:
    """How many enquiries a worker could claim right now."""
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(Enquiry).where(due(utcnow()))) or 0


def get(enquiry_id: str) -> Enquiry | None:
    """One enquiry by id, or None."""
    with store.session() as session:
        return session.get(Enquiry, enquiry_id)


def by_idempotency_key(key: str) -> Enquiry | None:
    """The enquiry stored earlier under this idempotency key, if any."""
    with store.session() as session:
        return session.scalars(select(Enquiry).where(Enquiry.idempotency_key == key)).first()


def in_state(state: str, limit: int) -> list[Enquiry]:
    """The oldest `limit` enquiries in one state (or REFUSED by some inbox)."""
    condition = refused_somewhere() if state == REFUSED else Enquiry.status == state
    with store.session() as session:
        query = select(Enquiry).where(condition).order_by(Enquiry.created_at).limit(limit)
        return list(session.scalars(query))


def with_personal_data(after: str, limit: int) -> list[Enquiry]:
    """Enquiries that still hold personal data (plain or sealed), by id, after the id given."""
    with store.session() as session:
        query = (
            select(Enquiry)
            .where(Enquiry.purged_at.is_(None), Enquiry.id > after)
            .order_by(Enquiry.id)
            .limit(limit)
        )
        return list(session.scalars(query))
