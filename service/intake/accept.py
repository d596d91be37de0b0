"""Accepting an enquiry: check it, then store it durably with its captcha marked used."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import parseaddr
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from ..ops import metrics
from ..store import autoreplies, lifecycle, queries, sealing
from ..store.engine import store
from ..store.models import Enquiry
from . import captcha, refused_fields, validation
from .captcha import replay, third_party
from .validation import CAPTCHA_FAILED, FIELDS, EnquiryFields

logger = logging.getLogger(__name__)

# How long a repeat of the same key and fields is the same enquiry.
IDEMPOTENCY_WINDOW = timedelta(hours=24)
# How the log names each route an enquiry can come by.
SOURCES = {"page": "the form page", "api": "the API"}


class CaptchaReplayed(Exception):
    """The captcha solution was used by another submission a moment ago."""


@dataclass(frozen=True)
class Outcome:
    """What became of a submission: the id it is stored under, or the errors to show."""

    enquiry_id: str | None
    # By field: name, email, phone, message and captcha.
    errors: dict[str, str] = field(default_factory=dict)
    repeated: bool = False


def message_id_for(enquiry_id: str) -> str:
    """The Message-ID of an enquiry's email: the same on every delivery attempt."""
    sender = current_app.config.get("MAIL_DEFAULT_SENDER") or ""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "contact-form.invalid"
    return f"<enquiry-{enquiry_id}@{domain}>"


def idempotency_key(kind: str, token: str | None, posted: Mapping[str, str | None]) -> str | None:
    """A digest of the client's token and the fields as posted: the same form sent twice."""
    if not token:
        return None
    # The fields are part of the key: a visitor who goes back and writes a different message with
    # the same page must not be told "thank you" for an enquiry that is then dropped.
    parts = [kind, token, *(str(posted.get(name) or "") for name in FIELDS)]
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def submit(
    posted: Mapping[str, str | None], answer: str | None, key: str | None, route: str
) -> Outcome:
    """Check and store an enquiry once per key, tell the worker, count the outcome."""
    region = current_app.config["PHONE_DEFAULT_REGION"]
    # Fields this process refused before (a robot replaying one body) are not checked again
    # unless the captcha passes: their errors are the same, and the checks are a third of a
    # refusal's work.
    record = refused_fields.record()
    digest = record.digest(posted, region)
    known = record.get(digest)
    checked = validation.check_fields(posted, region) if known is None else None
    errors = dict(checked.errors) if checked is not None else dict(known or ())
    third = third_party.current() is not None
    verdict: captcha.CaptchaCheck | None = None
    if not (errors and third and answer):
        verdict = captcha.check(answer, stored_next=not errors)
    # Otherwise a provider's token is kept for the corrected form: the provider accepts it once,
    # and this form cannot be stored anyway.
    reused = verdict is not None and verdict.reused
    solution = verdict.solution if verdict is not None else None
    if verdict is not None and solution is None:
        errors["captcha"] = CAPTCHA_FAILED
    fields: EnquiryFields | None = None
    if not errors and solution is not None:
        # Known fields are checked again now: the store gets them cleaned, not a verdict.
        checked = checked or validation.check_fields(posted, region)
        fields = checked.fields
    if fields is not None and solution is not None:
        try:
            enquiry = _accept_once_a_day(fields, solution, key)
        except CaptchaReplayed:
            captcha.refused_as_used(solution)
            errors["captcha"] = CAPTCHA_FAILED
            reused = True
        except IntegrityError:  # the key, committed by a twin
            errors["captcha"] = CAPTCHA_FAILED
            reused = True
        else:
            replay.remember_spent(solution)
            lifecycle.enquiry_queued.send(current_app._get_current_object())  # type: ignore[attr-defined]
            metrics.count_submission(route, "accepted")
            logger.info("enquiry %s accepted from %s", enquiry.id, SOURCES[route])
            return Outcome(enquiry.id)
    outcome = _refused_or_repeated(errors, reused, key, route, third)
    if known is None and checked is not None and outcome.enquiry_id is None:
        record.remember(digest, checked.errors)
    return outcome


def _accept_once_a_day(
    fields: EnquiryFields, solution: replay.Solution | None, key: str | None
) -> Enquiry:
    # A key is honoured for IDEMPOTENCY_WINDOW: the same key later (a client that reuses its
    # keys, a form page left open for days) is a new enquiry, not a repeat of an old one.
    try:
        return accept(fields, solution, key)
    except IntegrityError:
        if key is None or not lifecycle.forget_key(key, lifecycle.utcnow() - IDEMPOTENCY_WINDOW):
            raise
    return accept(fields, solution, key)


def _refused_or_repeated(
    errors: dict[str, str], reused: bool, key: str | None, route: str, third: bool
) -> Outcome:
    # No look-up by key before trying: a repeat of a stored post (a double click, a resend)
    # fails on its used captcha or on the key's unique index, and is recognised only then, so
    # a first post costs no extra query, and neither does junk with no genuine answer. A
    # third-party provider does not say why it refused a token, so any refusal may be a repeat.
    maybe_repeat = reused or ("captcha" in errors and third)
    earlier = queries.by_idempotency_key(key) if key is not None and maybe_repeat else None
    if earlier is None:
        metrics.count_submission(route, "captcha_failed" if "captcha" in errors else "invalid")
        metrics.count_invalid_fields(list(errors))
        return Outcome(None, errors)
    metrics.count_submission(route, "repeated")
    logger.info("enquiry %s sent again from %s; stored once", earlier.id, SOURCES[route])
    return Outcome(earlier.id, repeated=True)


def _confirmation_wanted() -> bool:
    return bool(current_app.config["AUTORESPONDER"])


def _confirmation_key(fields: EnquiryFields) -> str:
    config = current_app.config
    day = lifecycle.utcnow().astimezone(ZoneInfo(config["CLINIC_TIMEZONE"])).strftime("%Y-%m-%d")
    return autoreplies.digest(config["SECRET_KEY"], fields["email"], day)


def hold(posted: Mapping[str, str | None], trap: str, route: str) -> str:
    """Keep a trapped submission for a person to review; return an id that looks like any other."""
    checked = validation.check_fields(posted, current_app.config["PHONE_DEFAULT_REGION"])
    if checked.fields is None:
        # Nothing a person could have sent as it is, and nothing that could be delivered.
        metrics.count_submission(route, "trapped")
        logger.info("submission on the %s route trapped: %s; invalid, not stored", route, trap)
        return uuid.uuid4().hex
    values = _row(checked.fields, None)
    with store.writing() as connection:
        lifecycle.hold(connection, values, trap, current_app.config["HELD_MAX"])
    metrics.count_submission(route, "held")
    logger.info(
        "submission on the %s route trapped: %s; held as enquiry %s (`flask outbox held`)",
        route,
        trap,
        values["id"],
    )
    return str(values["id"])


def _row(fields: EnquiryFields, key: str | None) -> dict[str, str | None]:
    enquiry_id = uuid.uuid4().hex
    return sealing.sealed_row(_plain_row(enquiry_id, fields, key), sealing.current_keys())


def _plain_row(enquiry_id: str, fields: EnquiryFields, key: str | None) -> dict[str, str | None]:
    return {
        "id": enquiry_id,
        "name": fields["name"],
        "email": fields["email"],
        "phone": fields["phone"],
        "message": fields["message"],
        "page_url": fields.get("page_url"),
        "message_id": message_id_for(enquiry_id),
        "idempotency_key": key,
    }


def accept(
    fields: EnquiryFields, solution: replay.Solution | None, key: str | None = None
) -> Enquiry:
    """Commit the enquiry to the outbox and mark its captcha used (CaptchaReplayed if taken)."""
    values = _row(fields, key)
    confirmation = _confirmation_key(fields) if _confirmation_wanted() else None

    def store_it(connection: Connection) -> Enquiry:
        # One confirmation per address a day: claimed in this transaction, so a twin that fails
        # below takes its claim back with it.
        row = dict(values)
        if confirmation is not None and autoreplies.claim(connection, confirmation):
            row["autoreply"] = "due"
        # The enquiry before the captcha: a twin with the same idempotency key fails here,
        # before its captcha is marked used in Redis, which no rollback could undo.
        enquiry = lifecycle.queue(connection, row)
        if solution is not None and not replay.consume(connection, solution):
            raise CaptchaReplayed()
        return enquiry

    # Committed with the enquiries of other requests that arrive meanwhile (group commit):
    # answered only once its own row is on disk.
    return store.together(store_it)
