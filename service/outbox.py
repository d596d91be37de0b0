"""The outbox: claiming stored enquiries, delivering them, retrying, dead letters and retention."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import current_app
from flask_mail import BadHeaderError
from sqlalchemy import and_, func, or_, select, update

from . import mailer, metrics
from .extensions import store
from .logs import frames
from .models import FAILED, PENDING, SENDING, SENT, STATES, Enquiry

logger = logging.getLogger(__name__)
# Single-row updates go to the table, not through the ORM, which would look for the row among
# the objects it tracks first.
TABLE = Enquiry.__table__


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def backoff(attempts: int) -> timedelta:
    """Delay before the next try: the base, doubled per failed attempt, capped."""
    config = current_app.config
    base = config["OUTBOX_RETRY_BASE_SECONDS"]
    seconds = min(base * 2 ** max(attempts - 1, 0), config["OUTBOX_RETRY_MAX_SECONDS"])
    return timedelta(seconds=seconds)


def _due(now: datetime):  # noqa: ANN202 - an SQL expression
    return or_(
        and_(Enquiry.status == PENDING, Enquiry.next_attempt_at <= now),
        # A worker that died while holding a claim: its lease has run out.
        and_(Enquiry.status == SENDING, Enquiry.lease_expires_at < now),
    )


def claimable_count() -> int:
    """How many enquiries a worker could claim right now."""
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(Enquiry).where(_due(utcnow()))) or 0


def claim(worker_id: str, limit: int) -> list[Enquiry]:
    """Claim up to `limit` due enquiries for this worker and commit the claim."""
    now = utcnow()
    lease = timedelta(seconds=current_app.config["OUTBOX_LEASE_SECONDS"])
    query = (
        select(Enquiry)
        .where(_due(now))
        .order_by(Enquiry.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with store.transaction() as session:
        enquiries = list(session.scalars(query))
        for enquiry in enquiries:
            enquiry.status = SENDING
            enquiry.claimed_by = worker_id
            enquiry.lease_expires_at = now + lease
            enquiry.attempts += 1
    return enquiries


def mark_sent(enquiry: Enquiry) -> None:
    """Record that the SMTP server accepted the enquiry's email."""
    with store.writing() as connection:
        connection.execute(
            update(TABLE)
            .where(TABLE.c.id == enquiry.id)
            .values(status=SENT, sent_at=utcnow(), lease_expires_at=None, last_error=None)
        )
    metrics.count_delivery("sent")
    logger.info("enquiry %s delivered (attempt %d)", enquiry.id, enquiry.attempts)


def mark_failed_attempt(enquiry: Enquiry, failure: mailer.Failure) -> datetime | None:
    """Schedule a retry, or make the enquiry a dead letter; return the retry time, if any."""
    now = utcnow()
    give_up = timedelta(seconds=current_app.config["OUTBOX_GIVE_UP_SECONDS"])
    gave_up = not failure.permanent and now - enquiry.queued_at >= give_up
    values: dict[str, object] = {"last_error": failure.reason[:500], "lease_expires_at": None}
    retry_at = None
    if failure.permanent or gave_up:
        values.update(status=FAILED, failed_at=now)
    else:
        retry_at = now + backoff(enquiry.attempts)
        values.update(status=PENDING, next_attempt_at=retry_at)
    with store.writing() as connection:
        connection.execute(update(TABLE).where(TABLE.c.id == enquiry.id).values(**values))
    metrics.count_delivery("retry" if retry_at else "dead_letter")
    if retry_at is None:
        why = "permanent failure" if failure.permanent else "gave up after retrying"
        logger.error(
            "enquiry %s is a dead letter (%s, attempt %d): %s; "
            "see `flask outbox list --state failed`",
            enquiry.id,
            why,
            enquiry.attempts,
            failure.reason,
        )
    else:
        logger.warning(
            "enquiry %s not delivered (attempt %d): %s; next try at %s",
            enquiry.id,
            enquiry.attempts,
            failure.reason,
            retry_at.isoformat(timespec="seconds"),
        )
    return retry_at


def release(enquiries: list[Enquiry], at: datetime | None = None) -> None:
    """Give unattempted claims back to the outbox, without counting an attempt."""
    if not enquiries:
        return
    with store.transaction() as session:
        for enquiry in enquiries:
            session.execute(
                update(Enquiry)
                .where(Enquiry.id == enquiry.id, Enquiry.status == SENDING)
                .values(
                    status=PENDING,
                    attempts=Enquiry.attempts - 1,
                    lease_expires_at=None,
                    next_attempt_at=at or utcnow(),
                )
            )


def _failure_of(error: BaseException, enquiry: Enquiry, connected: bool) -> mailer.Failure:
    if isinstance(error, BadHeaderError):
        return mailer.Failure(True, "message has a bad header")
    failure = mailer.classify(error)
    if not failure.reason.startswith("unexpected"):
        return failure
    logger.error("unexpected error while delivering enquiry %s: %s", enquiry.id, frames(error))
    if connected:
        # Past connect(), the error is this enquiry's own (a damaged record, a bug in building
        # its email): it would recur on every retry and hold back the rest of each batch.
        return mailer.Failure(True, failure.reason)
    return failure


def deliver(worker_id: str, should_stop: Callable[[], bool] = lambda: False) -> int:
    """Claim one batch and deliver it over one SMTP connection; return how many were sent."""
    config = current_app.config
    batch = claim(worker_id, config["OUTBOX_BATCH_SIZE"])
    sent = 0
    connection: mailer.SMTPConnection | None = None
    # A message started later than this might outlive its lease and be sent twice.
    margin = timedelta(seconds=4 * float(config["MAIL_TIMEOUT"]))
    try:
        for index, enquiry in enumerate(batch):
            if should_stop() or utcnow() + margin > enquiry.lease_expires_at:
                release(batch[index:])
                break
            try:
                if connection is None:
                    connection = mailer.connect()
                connection.send(mailer.build_message(enquiry))
            except Exception as error:  # Every failure is recorded; none escapes the batch.
                failure = _failure_of(error, enquiry, connected=connection is not None)
                retry_at = mark_failed_attempt(enquiry, failure)
                if connection is not None:
                    connection.close()
                    connection = None
                if retry_at is not None:
                    # The server is unwell: the rest of the batch waits with this one.
                    release(batch[index + 1 :], at=retry_at)
                    break
                continue
            mark_sent(enquiry)
            sent += 1
    finally:
        if connection is not None:
            connection.close()
    return sent


@dataclass(frozen=True)
class Status:
    """Counts per state and the age of the oldest pending enquiry."""

    counts: dict[str, int]
    oldest_pending_seconds: float | None


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
    if oldest is not None and oldest.tzinfo is None:  # func.min bypasses the column type.
        oldest = oldest.replace(tzinfo=UTC)
    age = (utcnow() - oldest).total_seconds() if oldest is not None else None
    return Status(counts=counts, oldest_pending_seconds=age)


def retry(enquiry_ids: list[str] | None = None) -> int:
    """Put failed enquiries (all of them, or the given ids) back in the queue; return how many."""
    query = update(Enquiry).where(Enquiry.status == FAILED)
    if enquiry_ids is not None:
        query = query.where(Enquiry.id.in_(enquiry_ids))
    now = utcnow()
    with store.transaction() as session:
        # A retried dead letter gets a fresh give-up window, counted from now.
        result = session.execute(
            query.values(status=PENDING, next_attempt_at=now, queued_at=now, failed_at=None)
        )
    return result.rowcount


def purge(older_than: timedelta) -> int:
    """Erase the personal data of enquiries delivered over `older_than` ago; return how many."""
    cutoff = utcnow() - older_than
    with store.transaction() as session:
        result = session.execute(
            update(Enquiry)
            .where(Enquiry.status == SENT, Enquiry.sent_at < cutoff, Enquiry.purged_at.is_(None))
            .values(
                name=None, email=None, phone=None, message=None, page_url=None, purged_at=utcnow()
            )
        )
    if result.rowcount:
        logger.info(
            "retention: erased the personal data of %d delivered enquiries", result.rowcount
        )
    return result.rowcount
