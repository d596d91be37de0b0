"""Accepting an enquiry: store it durably, in one transaction with its captcha, before any reply."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from email.utils import parseaddr
from typing import Any

from flask import current_app

from . import captcha
from .extensions import store
from .models import PENDING, Enquiry


class CaptchaReplayed(Exception):
    """The captcha solution was used by another submission a moment ago."""


def message_id_for(enquiry_id: str) -> str:
    """The Message-ID of an enquiry's email: the same on every delivery attempt."""
    sender = current_app.config.get("MAIL_DEFAULT_SENDER") or ""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "contact-form.invalid"
    return f"<enquiry-{enquiry_id}@{domain}>"


def accept(fields: dict[str, Any], solution: captcha.Solution | None) -> Enquiry:
    """Commit the enquiry to the outbox and mark its captcha used; raise CaptchaReplayed if taken."""
    now = datetime.now(timezone.utc)
    enquiry_id = uuid.uuid4().hex
    enquiry = Enquiry(
        id=enquiry_id,
        created_at=now,
        name=fields["name"],
        email=fields["email"],
        phone=fields["phone"],
        message=fields["message"],
        page_url=fields.get("page_url"),
        message_id=message_id_for(enquiry_id),
        status=PENDING,
        attempts=0,
        queued_at=now,
        next_attempt_at=now,
    )
    with store.transaction() as session:
        if solution is not None and not captcha.consume(session, solution):
            raise CaptchaReplayed()
        session.add(enquiry)
    return enquiry
