"""Accepting an enquiry: store it durably, with its captcha marked used, before any reply."""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from . import metrics, replay, siteverify
from .extensions import store
from .models import PENDING, Enquiry
from .validation import CAPTCHA_FAILED

if TYPE_CHECKING:
    from .forms import EnquiryForm

logger = logging.getLogger(__name__)

# Built once: the columns come with each execution's values.
INSERT_ENQUIRY = insert(Enquiry.__table__)
# How the log names each route an enquiry can come by.
SOURCES = {"page": "the form page", "api": "the API"}


class CaptchaReplayed(Exception):
    """The captcha solution was used by another submission a moment ago."""


def message_id_for(enquiry_id: str) -> str:
    """The Message-ID of an enquiry's email: the same on every delivery attempt."""
    sender = current_app.config.get("MAIL_DEFAULT_SENDER") or ""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "contact-form.invalid"
    return f"<enquiry-{enquiry_id}@{domain}>"


def idempotency_key(kind: str, token: str | None, form: EnquiryForm) -> str | None:
    """A digest of the client's token and the fields as posted: the same form sent twice."""
    if not token:
        return None
    # The fields are part of the key: a visitor who goes back and writes a different message with
    # the same page must not be told "thank you" for an enquiry that is then dropped.
    parts = [
        kind,
        token,
        *(str(form[name].data or "") for name in ("name", "email", "phone", "message")),
    ]
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def find(key: str) -> Enquiry | None:
    """The enquiry stored earlier under this idempotency key, if any."""
    with store.session() as session:
        return session.scalars(select(Enquiry).where(Enquiry.idempotency_key == key)).first()


def submit(form: EnquiryForm, key: str | None, route: str) -> Enquiry | None:
    """Store a valid enquiry once per key, wake the worker, count the outcome; None if invalid."""
    source = SOURCES[route]
    enquiry = _accept_valid(form, key)
    if enquiry is not None:
        current_app.extensions["outbox_notify"]()
        metrics.count_submission(route, "accepted")
        logger.info("enquiry %s accepted from %s", enquiry.id, source)
        return enquiry
    # No look-up by key before trying: a repeat of a stored post (a double click, a resend)
    # fails on its used captcha or on the key's unique index, and is recognised only then, so
    # a first post costs no extra query, and neither does junk with no genuine answer. A
    # third-party provider does not say why it refused a token, so any refusal may be a repeat.
    maybe_repeat = form.answer_reused or (
        bool(form.captcha.errors) and siteverify.current() is not None
    )
    earlier = find(key) if key is not None and maybe_repeat else None
    if earlier is None:
        metrics.count_submission(route, "captcha_failed" if form.captcha.errors else "invalid")
        metrics.count_invalid_fields([name for name, field in form._fields.items() if field.errors])
        return None
    form.captcha.errors = []
    metrics.count_submission(route, "repeated")
    logger.info("enquiry %s sent again from %s; stored once", earlier.id, source)
    return earlier


def _accept_valid(form: EnquiryForm, key: str | None) -> Enquiry | None:
    """Validate and store; None if invalid, or if the captcha or the key was taken meanwhile."""
    if not form.validate():
        return None
    try:
        return accept(form.cleaned, form.solution, key)
    except (CaptchaReplayed, IntegrityError):  # IntegrityError: the key, committed by a twin
        form.captcha.errors = [CAPTCHA_FAILED]
        form.answer_reused = True
        return None


def accept(
    fields: dict[str, Any], solution: replay.Solution | None, key: str | None = None
) -> Enquiry:
    """Commit the enquiry to the outbox and mark its captcha used (CaptchaReplayed if taken)."""
    now = datetime.now(UTC)
    enquiry_id = uuid.uuid4().hex
    values = dict(
        id=enquiry_id,
        created_at=now,
        name=fields["name"],
        email=fields["email"],
        phone=fields["phone"],
        message=fields["message"],
        page_url=fields.get("page_url"),
        message_id=message_id_for(enquiry_id),
        idempotency_key=key,
        status=PENDING,
        attempts=0,
        queued_at=now,
        next_attempt_at=now,
    )
    with store.writing() as connection:
        # The enquiry first: a twin with the same idempotency key fails here, before its captcha
        # is marked used in Redis, which no rollback could undo.
        connection.execute(INSERT_ENQUIRY, values)
        if solution is not None and not replay.consume(connection, solution):
            raise CaptchaReplayed()
    return Enquiry(**values)
