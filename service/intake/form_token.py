"""The form's token: signed and time-limited, carried in the form itself, needing no cookie.

Flask-WTF's own CSRF keeps its secret in the session cookie, which a browser that blocks
third-party cookies never sends to a form embedded on another site. This token needs nothing
but the page: it proves the form was rendered by this service recently, and its random part is
the submission's idempotency key, so a repeated POST of the same form stores one enquiry. The
Origin check (service/web/origins.py) is what refuses posts from other sites.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from flask import Flask, current_app
from itsdangerous import BadData, URLSafeTimedSerializer
from wtforms.csrf.core import CSRF, CSRFTokenField
from wtforms.form import BaseForm
from wtforms.validators import ValidationError

EXPIRED = "This form had expired. Please check your details and press Send again."
SALT = "contact-form.form-token"


def init_app(app: Flask) -> None:
    """Build the app's token signer once: building it per call was a tenth of the page's time."""
    app.extensions["form_token"] = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=SALT)


def _serializer() -> URLSafeTimedSerializer:
    serializer: URLSafeTimedSerializer = current_app.extensions["form_token"]
    return serializer


def read(token: Any) -> str | None:
    """The random part of a valid, unexpired token, or None."""
    if not isinstance(token, str) or not token or len(token) > 200:
        return None
    try:
        nonce = _serializer().loads(token, max_age=current_app.config["WTF_CSRF_TIME_LIMIT"])
    except BadData:
        return None
    return nonce if isinstance(nonce, str) else None


def issue() -> str:
    """A new token for a freshly shown form."""
    return _serializer().dumps(secrets.token_urlsafe(18))


def issued_at(token: Any) -> datetime | None:
    """When a valid token was issued (whole seconds), or None."""
    if not isinstance(token, str) or not token or len(token) > 200:
        return None
    try:
        _, when = _serializer().loads(
            token, max_age=current_app.config["WTF_CSRF_TIME_LIMIT"], return_timestamp=True
        )
    except BadData:
        return None
    signed_at: datetime = when
    return signed_at


class FormToken(CSRF):
    """WTForms CSRF that signs a random value instead of storing a secret in the session."""

    def generate_csrf_token(self, csrf_token_field: CSRFTokenField) -> str:
        """Keep a still-valid posted token (the same submission, shown again); else a new one."""
        posted = csrf_token_field.data
        if isinstance(posted, str) and read(posted) is not None:
            return posted
        return issue()

    def validate_csrf_token(self, form: BaseForm, field: CSRFTokenField) -> None:
        """Accept a token this service signed within WTF_CSRF_TIME_LIMIT."""
        if read(field.data) is None:
            raise ValidationError(EXPIRED)
