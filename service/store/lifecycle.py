"""The lifecycle of an enquiry: its states, the changes allowed between them, and the only code
that writes its status, its lease or its attempt counter.

    (new) --hold--> held --release_held--> pending      (a spam trap's catch, until a person
           |          +--discard / expire--> (gone)   releases it; or erased on time)
           |
    (new) --queue--> pending --claim--> sending --mark_sent--> sent --erase--> sent, erased
                        ^                  |  ^
                        |                  |  +-- renew (the worker's heartbeat)
                        +-- retry_later ---+  (or release: given back, never tried)
                        |                  |
                        +----- requeue --- failed <--give_up--+
                        +----- requeue --- sent, refused by some inbox

A delivery may reach some of the clinic's inboxes and not others: the ones that accepted it
are recorded (delivered_to) and never sent it again; the ones that refused it for good are
recorded with the reason (refused_to) until `outbox retry` sends it to them again.

An attempt is counted when it ends (mark_sent, retry_later, give_up): an enquiry that was
claimed and given back, or whose worker died before it was tried, has not been tried.

Every change is one UPDATE that names the state it expects and, for a claimed enquiry, the
worker that holds the claim; its row count says whether it happened. A worker whose lease ran
out and whose enquiry another worker took over learns so here, instead of overwriting that
worker's work: the change is refused, logged at WARNING and counted in /metrics.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from blinker import Namespace
from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    Update,
    and_,
    bindparam,
    delete,
    insert,
    or_,
    select,
    update,
)

from ..ops import metrics
from .engine import store
from .models import Enquiry

logger = logging.getLogger(__name__)

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
FAILED = "failed"
HELD = "held"
STATES = (PENDING, SENDING, SENT, FAILED, HELD)


@dataclass(frozen=True)
class Transition:
    """A change of state: its name, the states it starts from, and the state it ends in."""

    name: str
    sources: tuple[str, ...]
    target: str


QUEUE = Transition("queue", (), PENDING)
# Caught by a spam trap: kept for a person to review, never sent on its own.
HOLD = Transition("hold", (), HELD)
RELEASE_HELD = Transition("release_held", (HELD,), PENDING)
# Deleted outright, by a person or by the held messages' retention and cap: no state after.
DISCARD = Transition("discard", (HELD,), "")
# Due and pending, or sending under a lease that has run out (its worker died or stalled).
CLAIM = Transition("claim", (PENDING, SENDING), SENDING)
# The worker's heartbeat: a claim that nobody renews ends with its lease.
RENEW = Transition("renew", (SENDING,), SENDING)
MARK_SENT = Transition("mark_sent", (SENDING,), SENT)
RETRY_LATER = Transition("retry_later", (SENDING,), PENDING)
GIVE_UP = Transition("give_up", (SENDING,), FAILED)
RELEASE = Transition("release", (SENDING,), PENDING)
REQUEUE = Transition("requeue", (FAILED, SENT), PENDING)
# Retention: the personal data goes, the record of the delivery (or of its failure) stays.
ERASE = Transition("erase", (SENT, FAILED), "")  # the state stays what it was
TRANSITIONS = (
    QUEUE,
    HOLD,
    CLAIM,
    RENEW,
    MARK_SENT,
    RETRY_LATER,
    GIVE_UP,
    RELEASE,
    REQUEUE,
    ERASE,
    RELEASE_HELD,
    DISCARD,
)

# Sent by whoever queued an enquiry, once it is committed, with the app as sender: the
# embedded delivery worker wakes on it.
enquiry_queued = Namespace().signal("enquiry-queued")

# The table, not the ORM class: single-row updates need none of the ORM's bookkeeping.
TABLE = cast(Table, Enquiry.__table__)
COLUMNS = TABLE.c
# Built once: the values come with each execution.
INSERT_ENQUIRY = insert(TABLE)


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def due(now: datetime) -> ColumnElement[bool]:
    """The enquiries a worker may claim at `now`."""
    return or_(
        and_(COLUMNS.status == PENDING, COLUMNS.next_attempt_at <= now),
        and_(COLUMNS.status == SENDING, COLUMNS.lease_expires_at < now),
    )


def queue(connection: Connection, values: Mapping[str, Any]) -> Enquiry:
    """Insert a new enquiry, pending and due now, in the caller's transaction."""
    now = utcnow()
    row = {
        **values,
        "created_at": now,
        "status": PENDING,
        "attempts": 0,
        "queued_at": now,
        "next_attempt_at": now,
    }
    connection.execute(INSERT_ENQUIRY, row)
    return Enquiry.detached(row)


def hold(connection: Connection, values: Mapping[str, Any], trap: str, keep: int) -> Enquiry:
    """Insert a trapped submission as held, in the caller's transaction; keep the newest `keep`."""
    now = utcnow()
    row = {
        **values,
        "created_at": now,
        "status": HELD,
        "held_reason": trap,
        "attempts": 0,
        "queued_at": now,
        "next_attempt_at": now,
    }
    connection.execute(INSERT_ENQUIRY, row)
    # A flood of robots cannot fill the disk: past the cap, the oldest held ones go first.
    connection.execute(
        delete(TABLE).where(
            COLUMNS.id.in_(
                select(COLUMNS.id)
                .where(COLUMNS.status == HELD)
                .order_by(COLUMNS.created_at.desc(), COLUMNS.id)
                .offset(keep)
                .scalar_subquery()
            )
        )
    )
    return Enquiry.detached(row)


def release_held(enquiry_ids: Sequence[str]) -> int:
    """Queue held enquiries for delivery, as a person decided; return how many."""
    now = utcnow()
    with store.writing() as connection:
        result = connection.execute(
            update(TABLE)
            .where(COLUMNS.id.in_(enquiry_ids), COLUMNS.status == HELD)
            .values(status=RELEASE_HELD.target, queued_at=now, next_attempt_at=now)
        )
    return result.rowcount


def discard(
    enquiry_ids: Sequence[str] | None = None, created_before: datetime | None = None
) -> int:
    """Delete held enquiries (the given ones, or those held since before then); count them."""
    condition = COLUMNS.status == HELD
    if enquiry_ids is not None:
        condition = and_(condition, COLUMNS.id.in_(enquiry_ids))
    if created_before is not None:
        condition = and_(condition, COLUMNS.created_at < created_before)
    with store.writing() as connection:
        return connection.execute(delete(TABLE).where(condition)).rowcount


def forget_key(key: str, created_before: datetime) -> bool:
    """Free an idempotency key held by an enquiry stored before then; say whether one was."""
    with store.writing() as connection:
        result = connection.execute(
            update(TABLE)
            .where(COLUMNS.idempotency_key == key, COLUMNS.created_at < created_before)
            .values(idempotency_key=None)
        )
    return result.rowcount == 1


def claim(worker_id: str, limit: int, lease: timedelta) -> list[Enquiry]:
    """Claim up to `limit` due enquiries for `worker_id` under a lease; commit the claim."""
    now = utcnow()
    candidates = (
        select(COLUMNS.id, COLUMNS.status, COLUMNS.claimed_by)
        .where(due(now))
        .order_by(COLUMNS.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with store.writing() as connection:
        found = connection.execute(candidates).all()
        if not found:
            return []
        ids = [candidate.id for candidate in found]
        # The condition again: on PostgreSQL the rows are locked by now, and the update says
        # what it expects all the same.
        claimed = connection.execute(
            update(TABLE)
            .where(COLUMNS.id.in_(ids), due(now))
            .values(status=SENDING, claimed_by=worker_id, lease_expires_at=now + lease)
            .returning(*COLUMNS)
        ).all()
    taken = {row.id for row in claimed}
    abandoned = [c for c in found if c.status == SENDING and c.id in taken]
    if abandoned:
        metrics.count_taken_over(len(abandoned))
        logger.warning(
            "worker %s took over %d enquiries whose lease had run out (last held by %s)",
            worker_id,
            len(abandoned),
            ", ".join(sorted({str(c.claimed_by) for c in abandoned})),
        )
    enquiries = [Enquiry.detached(row._asdict()) for row in claimed]
    return sorted(enquiries, key=lambda enquiry: enquiry.next_attempt_at)


def renew(enquiries: Sequence[Enquiry], lease: timedelta) -> list[Enquiry]:
    """Extend the leases of claims still held by their worker; return those still held."""
    if not enquiries:
        return []
    owner = enquiries[0].claimed_by
    until = utcnow() + lease
    with store.writing() as connection:
        renewed = set(
            connection.scalars(
                update(TABLE)
                .where(
                    COLUMNS.id.in_([enquiry.id for enquiry in enquiries]),
                    COLUMNS.status == SENDING,
                    COLUMNS.claimed_by == owner,
                )
                .values(lease_expires_at=until)
                .returning(COLUMNS.id)
            )
        )
    for enquiry in enquiries:
        if enquiry.id not in renewed:
            _lost_claim(enquiry, RENEW)
    return [enquiry for enquiry in enquiries if enquiry.id in renewed]


# The guard of every change a worker makes: the enquiry is still sending, and still its.
HELD_BY = and_(
    COLUMNS.id == bindparam("held_id"),
    COLUMNS.status == SENDING,
    COLUMNS.claimed_by == bindparam("held_by"),
)


def _held_by(enquiry: Enquiry) -> dict[str, Any]:
    """The values of HELD_BY for one enquiry's claim."""
    return {"held_id": enquiry.id, "held_by": enquiry.claimed_by}


@functools.lru_cache(maxsize=64)
def _end_attempt_statement(target: str, names: tuple[str, ...]) -> Update:
    # Built once for each set of columns: building the statement anew cost more than running it
    # (a delivery makes one per email).
    return (
        update(TABLE)
        .where(HELD_BY)
        .values(
            status=target,
            attempts=COLUMNS.attempts + 1,
            **{name: bindparam(f"new_{name}") for name in names},
        )
    )


def _end_attempt(enquiry: Enquiry, transition: Transition, **values: Any) -> bool:
    """Record how an attempt ended if the claim is still held; say whether it was."""
    statement = _end_attempt_statement(transition.target, tuple(sorted(values)))
    parameters = {f"new_{name}": value for name, value in values.items()}
    with store.writing() as connection:
        result = connection.execute(statement, {**_held_by(enquiry), **parameters})
    if result.rowcount == 1:
        return True
    _lost_claim(enquiry, transition)
    return False


def _lost_claim(enquiry: Enquiry, transition: Transition) -> None:
    metrics.count_lost_claim(transition.name)
    logger.warning(
        "enquiry %s: %s refused: worker %s no longer holds its claim (its lease ran out and "
        "another worker took it over, or it was released)",
        enquiry.id,
        transition.name,
        enquiry.claimed_by,
    )


def _recipients(
    delivered: Sequence[str] | None,
    refused: Mapping[str, str] | None,
    autoreply: str | None = None,
) -> dict[str, Any]:
    # Who has the email, who refused it, and the patient's confirmation change with the attempt
    # that found out. Only what the caller gives changes: None keeps what is stored.
    values: dict[str, Any] = {}
    if delivered is not None:
        values["delivered_to"] = json.dumps(sorted(delivered)) if delivered else None
    if refused is not None:
        values["refused_to"] = json.dumps(dict(sorted(refused.items()))) if refused else None
    if autoreply is not None:
        values["autoreply"] = autoreply
    return values


def mark_sent(
    enquiry: Enquiry,
    delivered: Sequence[str] | None = None,
    refused: Mapping[str, str] | None = None,
    autoreply: str | None = None,
) -> bool:
    """Record that the SMTP server accepted the enquiry's email; False if the claim was lost."""
    return _end_attempt(
        enquiry,
        MARK_SENT,
        sent_at=utcnow(),
        lease_expires_at=None,
        last_error=None,
        **_recipients(delivered, refused, autoreply),
    )


def retry_later(
    enquiry: Enquiry,
    at: datetime,
    error: str,
    delivered: Sequence[str] | None = None,
    refused: Mapping[str, str] | None = None,
    autoreply: str | None = None,
) -> bool:
    """Put a claimed enquiry back in the queue, due at `at`; False if the claim was lost."""
    return _end_attempt(
        enquiry,
        RETRY_LATER,
        next_attempt_at=at,
        lease_expires_at=None,
        last_error=error[:500],
        **_recipients(delivered, refused, autoreply),
    )


def give_up(enquiry: Enquiry, error: str, refused: Mapping[str, str] | None = None) -> bool:
    """Make a claimed enquiry a dead letter; False if the claim was lost."""
    return _end_attempt(
        enquiry,
        GIVE_UP,
        failed_at=utcnow(),
        lease_expires_at=None,
        last_error=error[:500],
        **_recipients(None, refused),
    )


def release(
    enquiries: Sequence[Enquiry], at: datetime | None = None, error: str | None = None
) -> int:
    """Give claims back untried, due at `at` (now by default), saying why if given; count them."""
    if not enquiries:
        return 0
    when = at or utcnow()
    why = {"last_error": error[:500]} if error else {}
    released = 0
    with store.writing() as connection:
        for enquiry in enquiries:
            result = connection.execute(
                update(TABLE)
                .where(HELD_BY)
                .values(
                    status=RELEASE.target,
                    lease_expires_at=None,
                    next_attempt_at=when,
                    **why,
                ),
                _held_by(enquiry),
            )
            if result.rowcount == 1:
                released += 1
            else:
                _lost_claim(enquiry, RELEASE)
    return released


def refused_somewhere() -> ColumnElement[bool]:
    """Delivered, but refused for good by some inbox, and not yet erased."""
    return and_(
        COLUMNS.status == SENT, COLUMNS.refused_to.is_not(None), COLUMNS.purged_at.is_(None)
    )


def requeue(enquiry_ids: Sequence[str] | None = None, refused: bool = False) -> int:
    """Queue dead letters again (all, or the given ids), or with `refused` the enquiries an
    inbox refused, for those inboxes only; return how many."""
    now = utcnow()
    failed = and_(COLUMNS.status == FAILED, COLUMNS.purged_at.is_(None))  # erased: nothing to send
    condition = refused_somewhere() if refused else failed
    if enquiry_ids is not None:
        condition = and_(or_(failed, refused_somewhere()), COLUMNS.id.in_(enquiry_ids))
    with store.writing() as connection:
        # A dead letter queued again gets a fresh give-up window, counted from now; the inboxes
        # that have it already stay in delivered_to and do not get it twice.
        result = connection.execute(
            update(TABLE)
            .where(condition)
            .values(
                status=REQUEUE.target,
                next_attempt_at=now,
                queued_at=now,
                failed_at=None,
                refused_to=None,
            )
        )
    return result.rowcount


def reseal(enquiry: Enquiry, row: Mapping[str, str | None]) -> bool:
    """Store an enquiry's personal fields sealed anew, if nobody changed them since it was read."""
    was_sealed_to = (
        COLUMNS.sealed_to.is_(None)
        if enquiry.sealed_to is None
        else COLUMNS.sealed_to == enquiry.sealed_to
    )
    personal = ("name", "email", "phone", "message", "page_url", "sealed", "sealed_to")
    with store.writing() as connection:
        result = connection.execute(
            update(TABLE)
            .where(COLUMNS.id == enquiry.id, was_sealed_to, COLUMNS.purged_at.is_(None))
            .values({name: row.get(name) for name in personal})
        )
    return result.rowcount == 1


ERASED = {
    "name": None,
    "email": None,
    "phone": None,
    "message": None,
    "page_url": None,
    "sealed": None,
    "sealed_to": None,
    # A digest of the fields: it goes with them, and frees the key for a new enquiry.
    "idempotency_key": None,
}


def erase(delivered_before: datetime) -> int:
    """Erase the personal data of enquiries delivered before then; return how many."""
    return _erase(and_(COLUMNS.status == SENT, COLUMNS.sent_at < delivered_before))


def erase_failed(
    failed_before: datetime | None = None, enquiry_ids: Sequence[str] | None = None
) -> int:
    """Erase the personal data of dead letters (failed before then, or the ones given)."""
    condition = COLUMNS.status == FAILED
    if failed_before is not None:
        condition = and_(condition, COLUMNS.failed_at < failed_before)
    if enquiry_ids is not None:
        condition = and_(condition, COLUMNS.id.in_(enquiry_ids))
    return _erase(condition)


def _erase(condition: ColumnElement[bool]) -> int:
    with store.writing() as connection:
        result = connection.execute(
            update(TABLE)
            .where(condition, COLUMNS.purged_at.is_(None))
            .values(**ERASED, purged_at=utcnow())
        )
    return result.rowcount
