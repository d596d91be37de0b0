"""Delivering from the outbox: claim a batch, send it over one SMTP connection, record each."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from flask import current_app
from flask_mail import BadHeaderError

from ..ops import metrics
from ..ops.logs import frames
from ..store import lifecycle
from ..store.models import Enquiry
from . import message, smtp
from .heartbeat import Heartbeat

logger = logging.getLogger(__name__)


def backoff(attempts: int) -> timedelta:
    """Delay before the next try: the base, doubled per failed attempt, capped."""
    config = current_app.config
    base = config["OUTBOX_RETRY_BASE_SECONDS"]
    seconds = min(base * 2 ** max(attempts - 1, 0), config["OUTBOX_RETRY_MAX_SECONDS"])
    return timedelta(seconds=seconds)


def deliver(worker_id: str, should_stop: Callable[[], bool] = lambda: False) -> int:
    """Claim one batch and deliver it over one SMTP connection; return how many were sent."""
    config = current_app.config
    lease = timedelta(seconds=config["OUTBOX_LEASE_SECONDS"])
    batch = lifecycle.claim(worker_id, config["OUTBOX_BATCH_SIZE"], lease)
    if not batch:
        return 0
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    every = float(config["OUTBOX_HEARTBEAT_SECONDS"])
    # Every SMTP step is bounded by MAIL_TIMEOUT; a message that takes ten of them is stuck.
    stall_after = 10 * float(config["MAIL_TIMEOUT"])
    with Heartbeat(app, batch, lease, every, stall_after) as heartbeat:
        return _send_batch(batch, heartbeat, should_stop)


def _send_batch(batch: list[Enquiry], heartbeat: Heartbeat, should_stop: Callable[[], bool]) -> int:
    sent = 0
    connection: smtp.SMTPConnection | None = None
    try:
        for index, enquiry in enumerate(batch):
            # Renewals that keep failing (the store is unreachable) mean the leases may end
            # while a message is on its way: give the rest back rather than risk a second copy.
            if should_stop() or not heartbeat.fresh():
                heartbeat.give_back(batch[index:])
                break
            if not heartbeat.holds(enquiry):
                continue  # another worker has it now
            try:
                if connection is None:
                    connection = smtp.connect()
                connection.send(message.build_message(enquiry))
            except Exception as error:  # Every failure is recorded; none escapes the batch.
                failure = _failure_of(error, enquiry, connected=connection is not None)
                with heartbeat.finishing(enquiry):
                    retry_at = record_failure(enquiry, failure)
                if connection is not None:
                    connection.close()
                    connection = None
                if retry_at is not None:
                    # The server is unwell: the rest of the batch waits with this one.
                    heartbeat.give_back(batch[index + 1 :], at=retry_at)
                    break
                continue
            with heartbeat.finishing(enquiry):
                delivered = lifecycle.mark_sent(enquiry)
            if delivered:
                metrics.count_delivery("sent")
                logger.info("enquiry %s delivered (attempt %d)", enquiry.id, enquiry.attempts + 1)
                sent += 1
    finally:
        if connection is not None:
            connection.close()
    return sent


def record_failure(enquiry: Enquiry, failure: smtp.Failure) -> datetime | None:
    """Schedule a retry, or make the enquiry a dead letter; return the retry time, if any."""
    now = lifecycle.utcnow()
    give_up = timedelta(seconds=current_app.config["OUTBOX_GIVE_UP_SECONDS"])
    gave_up = not failure.permanent and now - enquiry.queued_at >= give_up
    if failure.permanent or gave_up:
        if lifecycle.give_up(enquiry, failure.reason):
            metrics.count_delivery("dead_letter")
            why = "permanent failure" if failure.permanent else "gave up after retrying"
            logger.error(
                "enquiry %s is a dead letter (%s, attempt %d): %s; "
                "see `flask outbox list --state failed`",
                enquiry.id,
                why,
                enquiry.attempts + 1,
                failure.reason,
            )
        return None
    retry_at = now + backoff(enquiry.attempts + 1)
    if lifecycle.retry_later(enquiry, retry_at, failure.reason):
        metrics.count_delivery("retry")
        logger.warning(
            "enquiry %s not delivered (attempt %d): %s; next try at %s",
            enquiry.id,
            enquiry.attempts + 1,
            failure.reason,
            retry_at.isoformat(timespec="seconds"),
        )
    return retry_at


def _failure_of(error: BaseException, enquiry: Enquiry, connected: bool) -> smtp.Failure:
    if isinstance(error, BadHeaderError):
        return smtp.Failure(True, "message has a bad header")
    failure = smtp.classify(error)
    if not failure.reason.startswith("unexpected"):
        return failure
    logger.error("unexpected error while delivering enquiry %s: %s", enquiry.id, frames(error))
    if connected:
        # Past connect(), the error is this enquiry's own (a damaged record, a bug in building
        # its email): it would recur on every retry and hold back the rest of each batch.
        return smtp.Failure(True, failure.reason)
    return failure
