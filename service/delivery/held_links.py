"""The links in the digest that release a held enquiry: signed, and valid while it is kept."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from itsdangerous import BadData, URLSafeTimedSerializer

SALT = "contact-form.release-held"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def token_for(enquiry_id: str) -> str:
    """The token of the link that releases this held enquiry."""
    return _serializer().dumps(enquiry_id)


def url_for_release(enquiry_id: str) -> str | None:
    """The link that releases this held enquiry, or None without SERVICE_URL."""
    base = (current_app.config["SERVICE_URL"] or "").rstrip("/")
    return f"{base}/held/{token_for(enquiry_id)}" if base else None


def read(token: str) -> str | None:
    """The enquiry id a valid token names, or None (forged, damaged, or past retention)."""
    # The link lives as long as the held enquiry may: HELD_RETENTION_DAYS after it was held.
    life = timedelta(days=current_app.config["HELD_RETENTION_DAYS"] + 1)
    try:
        enquiry_id = _serializer().loads(token, max_age=int(life.total_seconds()))
    except BadData:
        return None
    return enquiry_id if isinstance(enquiry_id, str) else None
