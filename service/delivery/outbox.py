"""Delivering from the outbox: claim a batch, send it over a few SMTP connections, record each.

A failure at connect, login or MAIL FROM pauses the whole queue (the server is down or
misconfigured); a failure of one message backs off that message alone, and the rest of the
batch goes on; an inbox that refuses is retried, or recorded, on its own.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from flask import Flask, current_app
from flask_mail import BadHeaderError, Message

from ..ops import metrics
from ..ops.logs import frames
from ..store import destination, lifecycle, queries, sealing
from ..store.engine import store
from ..store.models import Enquiry
from . import alerting, message, smtp
from .heartbeat import Heartbeat

logger = logging.getLogger(__name__)

# How the patient's confirmation is named in an outcome: never their address.
PATIENT = "patient"


def backoff(attempts: int) -> timedelta:
    """Delay before the next try: the base, doubled per failed attempt, capped."""
    config = current_app.config
    base = config["OUTBOX_RETRY_BASE_SECONDS"]
    seconds = min(base * 2 ** max(attempts - 1, 0), config["OUTBOX_RETRY_MAX_SECONDS"])
    return timedelta(seconds=seconds)


def has_work() -> bool:
    """True if a worker could deliver something now: enquiries are due and no back-off lasts."""
    if destination.health().waiting(lifecycle.utcnow()):
        return False
    return queries.claimable_count() > 0


def deliver(
    worker_id: str,
    should_stop: Callable[[], bool] = lambda: False,
    between: Callable[[], None] = lambda: None,
    connections: int = 1,
) -> int:
    """Claim one batch and deliver it over up to `connections` SMTP connections; count the sent.

    `between` runs before each email after the first on a connection: the embedded worker waits
    there while its process serves requests, so that a batch never takes the CPU from them for
    long.
    """
    config = current_app.config
    server = destination.health()
    if server.waiting(lifecycle.utcnow()):
        return 0  # the server is backed off as a whole: nothing is claimed, nobody logs in
    lease = timedelta(seconds=config["OUTBOX_LEASE_SECONDS"])
    batch = lifecycle.claim(worker_id, config["OUTBOX_BATCH_SIZE"], lease)
    if not batch:
        return 0
    if server.failures and not destination.take_turn(server, backoff(server.failures)):
        lifecycle.release(batch)  # another worker is trying the server right now
        return 0
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    every = float(config["OUTBOX_HEARTBEAT_SECONDS"])
    # Every SMTP step is bounded by MAIL_TIMEOUT; a message that takes ten of them is stuck.
    stall_after = 10 * float(config["MAIL_TIMEOUT"])
    queue = Queue(batch)
    # A server that just came back is tried over one connection, not several at once.
    lanes = 1 if server.failures else min(connections, len(batch))
    with Heartbeat(app, batch, lease, every, stall_after) as heartbeat:
        if lanes == 1:
            with store.one_connection():
                return _send_batch(queue, heartbeat, should_stop, server, between)
        halt = threading.Event()

        def stopping() -> bool:
            return halt.is_set() or should_stop()

        send = functools.partial(_send_batch, queue, heartbeat, stopping, server, between)
        return sum(in_parallel(app, send, lanes, halt))


class Queue:
    """A claimed batch, handed out one enquiry at a time to the connections that share it."""

    def __init__(self, batch: list[Enquiry]) -> None:
        self._left = collections.deque(batch)
        self._lock = threading.Lock()

    def take(self) -> Enquiry | None:
        """The next enquiry to send, or None when none is left."""
        with self._lock:
            return self._left.popleft() if self._left else None

    def rest(self) -> list[Enquiry]:
        """Every enquiry not yet taken; none is handed out after this."""
        with self._lock:
            left = list(self._left)
            self._left.clear()
            return left


def in_parallel(
    app: Flask, work: Callable[[], int], lanes: int, halt: threading.Event
) -> list[int]:
    """Run `work` in `lanes` threads at once, each with the app and a connection of its own.

    If this thread is interrupted while it waits (Ctrl-C), `halt` is set and the lanes are
    waited for again: each finishes its message in flight and gives the rest back, while the
    batch's heartbeat still renews its leases.
    """
    # One slow message (a server that drips its replies) then holds back its own connection
    # only, and the worker builds the next email while the server answers another.
    results: list[int] = []
    errors: list[BaseException] = []
    finished = [threading.Event() for _ in range(lanes)]

    def lane(done: threading.Event) -> None:
        try:
            with app.app_context(), store.one_connection():
                results.append(work())
        except BaseException as error:  # Re-raised below, as one connection would raise it.
            errors.append(error)
        finally:
            done.set()

    threads = [
        threading.Thread(target=lane, args=(done,), name=f"smtp-{n}")
        for n, done in enumerate(finished)
    ]
    for thread in threads:
        thread.start()
    try:
        for done in finished:
            done.wait()
    except BaseException:
        # Waited for with events, not Thread.join: Python 3.11 marks a thread whose join was
        # interrupted as stopped, and a second join would not wait for it.
        halt.set()
        for done in finished:
            done.wait()
        raise
    finally:
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return results


def _send_batch(
    queue: Queue,
    heartbeat: Heartbeat,
    should_stop: Callable[[], bool],
    server: destination.Health,
    between: Callable[[], None],
) -> int:
    """Send the batch's enquiries one after another over one SMTP connection; count the sent."""
    sent = 0
    session: smtp.Session | None = None
    try:
        for index, enquiry in enumerate(iter(queue.take, None)):
            if index:
                between()
            # Renewals that keep failing (the store is unreachable) mean the leases may end
            # while a message is on its way: give the rest back rather than risk a second copy.
            if should_stop() or not heartbeat.fresh():
                heartbeat.give_back([enquiry, *queue.rest()])
                break
            if not heartbeat.holds(enquiry):
                continue  # another worker has it now
            inboxes = _inboxes_waiting(enquiry)
            try:
                readable = sealing.opened(enquiry, sealing.current_keys())
                emails = _build(readable, inboxes)
            except sealing.MissingKey as error:
                # Sealed to a key this worker lacks: that enquiry waits (a dead letter after
                # the give-up window), and the rest of the batch goes on.
                logger.error("enquiry %s cannot be opened: %s", enquiry.id, error)
                with heartbeat.finishing(enquiry):
                    record_failure(enquiry, smtp.Failure("keys", False, str(error)))
                continue
            except Exception as error:  # The enquiry's own: it would fail on every retry.
                with heartbeat.finishing(enquiry):
                    record_failure(enquiry, _own_failure(error, enquiry))
                continue
            outcome = smtp.Sent(())
            confirmation: smtp.Sent | None = None
            try:
                for email, group in emails:
                    session, sent_now = _send(session, email, group)
                    outcome = outcome.merged(sent_now)
                # The patient is told only once the clinic has the enquiry.
                if readable.autoreply == "due" and (
                    enquiry.inboxes_delivered() or outcome.accepted
                ):
                    session, confirmation = _confirm(session, readable)
            except smtp.StepFailed as error:  # the server's own: only those are raised
                if outcome.accepted:
                    # Some inbox has it already: record that, so that none gets it twice.
                    with heartbeat.finishing(enquiry):
                        _record_unfinished(enquiry, readable, inboxes, outcome, error.failure)
                    _pause(server, error.failure, queue.rest(), heartbeat)
                else:
                    _pause(server, error.failure, [enquiry, *queue.rest()], heartbeat)
                break
            if emails or confirmation:
                server = _recovered(server)
            with heartbeat.finishing(enquiry):
                if _record_sent(enquiry, outcome, confirmation):
                    sent += 1
    finally:
        if session is not None:
            session.close()
    return sent


def _inboxes_waiting(enquiry: Enquiry) -> list[str]:
    # An inbox that has the email, or refused it for good, is not sent it again.
    done = {*enquiry.inboxes_delivered(), *enquiry.inboxes_refused()}
    return [inbox for inbox in message.every_inbox() if inbox not in done]


def _build(enquiry: Enquiry, inboxes: list[str]) -> list[tuple[Message, list[str]]]:
    emails = message.emails_for(enquiry, inboxes)
    if any(email.has_bad_headers() for email, _ in emails):
        raise BadHeaderError
    return emails


def _send(
    session: smtp.Session | None, email: Message, inboxes: list[str]
) -> tuple[smtp.Session, smtp.Sent]:
    """Send one email over the open connection, or over a new one if that one is spent."""
    session = _ready(session)
    carried = session.transactions
    try:
        return session, _transaction(session, email, inboxes)
    except smtp.StepFailed:
        if not carried:
            session.close()  # the caller pauses, and holds no reference to a new connection
            raise  # a fresh connection failed: the server's own fault
    # A connection that carried mail may have been closed, or limited, by the server: one new
    # connection decides whether the server itself is failing.
    session.close()
    session = smtp.open_session()
    try:
        return session, _transaction(session, email, inboxes)
    except smtp.StepFailed:
        session.close()
        raise


def _record_unfinished(
    enquiry: Enquiry,
    readable: Enquiry,
    inboxes: list[str],
    outcome: smtp.Sent,
    failure: smtp.Failure,
) -> None:
    """Record the inboxes that have it; the rest (and the confirmation) wait for the server."""
    unfinished = smtp.Failure(failure.step, False, failure.reason)
    left = [inbox for inbox in inboxes if inbox not in {*outcome.accepted, *outcome.refused}]
    outcome = outcome.merged(smtp.Sent((), dict.fromkeys(left, unfinished)))
    confirmation = smtp.Sent((), {PATIENT: unfinished}) if readable.autoreply == "due" else None
    _record_sent(enquiry, outcome, confirmation)


def _ready(session: smtp.Session | None) -> smtp.Session:
    """The open connection, or a new one if there is none or it is no longer usable."""
    if session is not None and session.usable:
        return session
    if session is not None:
        session.close()
    return smtp.open_session()


def _confirm(
    session: smtp.Session | None, enquiry: Enquiry
) -> tuple[smtp.Session | None, smtp.Sent]:
    """Send the patient their confirmation; its outcome under the label PATIENT."""
    try:
        email, address = message.confirmation(enquiry)
    except ValueError:  # an address with no ASCII form: nothing a server could take
        return session, smtp.Sent((), {PATIENT: smtp.Failure("RCPT", True, "no usable address")})
    session, sent = _send(session, email, [address])
    if sent.accepted:
        return session, smtp.Sent((PATIENT,))
    return session, smtp.Sent((), {PATIENT: sent.refused[address]})


def _transaction(session: smtp.Session, email: Message, inboxes: list[str]) -> smtp.Sent:
    """Send one email; a failure of this message is a refusal by each of its inboxes."""
    try:
        return session.send(email, inboxes)
    except smtp.StepFailed as error:
        if error.failure.of_destination:
            raise
        return smtp.Sent((), dict.fromkeys(inboxes, error.failure))


def _own_failure(error: BaseException, enquiry: Enquiry) -> smtp.Failure:
    if isinstance(error, BadHeaderError):
        return smtp.Failure("build", True, "message has a bad header")
    if isinstance(error, sealing.CannotOpen):
        return smtp.Failure("build", True, str(error))
    # A damaged record or a bug in building its email: the error's text may quote the visitor.
    logger.error("unexpected error while delivering enquiry %s: %s", enquiry.id, frames(error))
    return smtp.Failure("build", True, f"unexpected {type(error).__name__}")


def _pause(
    server: destination.Health,
    failure: smtp.Failure,
    waiting: list[Enquiry],
    heartbeat: Heartbeat,
) -> None:
    """Back the whole queue off: the server failed before any message could be its cause."""
    # Workers that met the outage at once count it, and report it, once.
    health, counted = destination.failed(server, failure.reason, backoff)
    metrics.count_smtp_failure(failure.step)
    until = health.next_try_at.isoformat(timespec="seconds") if health.next_try_at else "now"
    if counted and health.failures == 1:
        logger.error(
            "SMTP delivery paused: %s; the queue waits and the next try is at %s "
            "(`flask outbox status`)",
            failure.reason,
            until,
        )
    elif counted:
        logger.warning(
            "SMTP still failing (%d tries in a row): %s; next try at %s",
            health.failures,
            failure.reason,
            until,
        )
    # No enquiry is to blame, so none is tried or made a dead letter for it; only the 5-day
    # give-up still ends those that have waited that long.
    now = lifecycle.utcnow()
    give_up = timedelta(seconds=current_app.config["OUTBOX_GIVE_UP_SECONDS"])
    held = [enquiry for enquiry in waiting if heartbeat.holds(enquiry)]
    for enquiry in held:
        if now - enquiry.queued_at >= give_up:
            with heartbeat.finishing(enquiry):
                record_failure(enquiry, failure)
    heartbeat.give_back(held, at=health.next_try_at, error=failure.reason)


def _recovered(server: destination.Health) -> destination.Health:
    """Clear a back-off once the server takes a message again (MAIL FROM passed)."""
    if server.failures and destination.recovered(server):
        logger.warning(
            "SMTP server accepts again after %d failed tries; delivering the queue",
            server.failures,
        )
    return destination.Health()


def _confirmation_outcome(confirmation: smtp.Sent | None) -> tuple[str | None, str | None]:
    """The confirmation's new state (None: unchanged), and why it waits, if it does."""
    if confirmation is None:
        return None, None
    if confirmation.accepted:
        return "sent", None
    failure = confirmation.refused[PATIENT]
    if failure.permanent:
        # The patient's own address, not the clinic's inbox: nothing for the clinic to fix.
        logger.info("the confirmation to the patient was refused for good (%s)", failure.reason)
        return "refused", None
    return None, failure.reason


def _record_sent(
    enquiry: Enquiry, outcome: smtp.Sent, confirmation: smtp.Sent | None = None
) -> bool:
    """Record a transaction's outcome per inbox; True if the enquiry is now delivered."""
    autoreply, confirmation_waits = _confirmation_outcome(confirmation)
    delivered = sorted({*enquiry.inboxes_delivered(), *outcome.accepted})
    refused = enquiry.inboxes_refused() | {
        inbox: failure.reason for inbox, failure in outcome.refused.items() if failure.permanent
    }
    waiting = {inbox: f for inbox, f in outcome.refused.items() if not f.permanent}
    if waiting or not delivered:
        reasons = ", ".join(sorted({failure.reason for failure in outcome.refused.values()}))
        if delivered:
            total = len(delivered) + len(refused) + len(waiting)
            reasons += f" for {len(refused) + len(waiting)} of {total} inboxes"
        failure = smtp.Failure("RCPT", not waiting, reasons)
        retry_at = record_failure(enquiry, failure, delivered, refused, autoreply)
        if retry_at is not None or not delivered:
            return False
        # Given up on the inboxes that kept refusing: the others have it; record them refused.
        refused |= {inbox: f"gave up after retrying: {f.reason}" for inbox, f in waiting.items()}
        autoreply = "refused" if confirmation_waits else autoreply
    elif confirmation_waits:
        # Every inbox has it; only the patient's confirmation waits, and is tried again.
        failure = smtp.Failure(
            "RCPT", False, f"the confirmation to the patient: {confirmation_waits}"
        )
        if record_failure(enquiry, failure, delivered, refused) is not None:
            return False
        autoreply = "refused"  # given up on it: the clinic has the enquiry
    if not lifecycle.mark_sent(enquiry, delivered, refused, autoreply):
        return False
    metrics.count_delivery("sent")
    logger.info("enquiry %s delivered (attempt %d)", enquiry.id, enquiry.attempts + 1)
    if refused:
        metrics.count_delivery("refused")
        logger.error(
            "enquiry %s delivered to %d of %d inboxes; refused for good by %s: forward it by "
            "hand or fix the inbox and `flask outbox retry %s` (`flask outbox list --state "
            "refused`)",
            enquiry.id,
            len(delivered),
            len(delivered) + len(refused),
            "; ".join(f"{inbox} ({reason})" for inbox, reason in sorted(refused.items())),
            enquiry.id,
        )
    return True


def record_failure(
    enquiry: Enquiry,
    failure: smtp.Failure,
    delivered: Sequence[str] | None = None,
    refused: Mapping[str, str] | None = None,
    autoreply: str | None = None,
) -> datetime | None:
    """Schedule a retry, or make the enquiry a dead letter; return the retry time, if any."""
    now = lifecycle.utcnow()
    give_up = timedelta(seconds=current_app.config["OUTBOX_GIVE_UP_SECONDS"])
    gave_up = not failure.permanent and now - enquiry.queued_at >= give_up
    if failure.permanent or gave_up:
        if delivered:
            return None  # some inbox has it: the caller records it sent, with the refusals
        if lifecycle.give_up(enquiry, failure.reason, refused):
            metrics.count_delivery("dead_letter")
            alerting.dead_letter(enquiry.id, failure.reason)
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
    if lifecycle.retry_later(enquiry, retry_at, failure.reason, delivered, refused, autoreply):
        metrics.count_delivery("retry")
        logger.warning(
            "enquiry %s not delivered (attempt %d): %s; next try at %s",
            enquiry.id,
            enquiry.attempts + 1,
            failure.reason,
            retry_at.isoformat(timespec="seconds"),
        )
    return retry_at
