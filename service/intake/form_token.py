"""The form's token: signed and time-limited, carried in the form itself, needing no cookie.

Flask-WTF's own CSRF keeps its secret in the session cookie, which a browser that blocks
third-party cookies never sends to a form embedded on another site. This token needs nothing
but the page: it proves the form was rendered by this service recently, and its random part is
the submission's idempotency key, so a repeated POST of the same form stores one enquiry. The
Origin check (service/web/origins.py) is what refuses posts from other sites.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

from flask import Flask, current_app
from itsdangerous import BadData, Signer, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, want_bytes
from itsdangerous.serializer import Serializer
from itsdangerous.signer import HMACAlgorithm
from wtforms.csrf.core import CSRF, CSRFTokenField
from wtforms.form import BaseForm
from wtforms.validators import ValidationError

from ..ops import random_tokens

EXPIRED = "This form had expired. Please check your details and press Send again."
SALT = "contact-form.form-token"


class _KeyedHMAC(HMACAlgorithm):
    """itsdangerous' HMAC-SHA1, from a copy of an HMAC already keyed."""

    # Its default hands hmac a Python wrapper of sha1, which takes hmac's slow path and keys
    # the HMAC again for every token: 7 us a signature here, against 3 for a keyed copy.
    def __init__(self) -> None:
        super().__init__(hashlib.sha1)
        self._keyed: dict[bytes, hmac.HMAC] = {}

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        """The same signature as HMACAlgorithm's."""
        keyed = self._keyed.get(key)
        if keyed is None:
            keyed = self._keyed[key] = hmac.new(key, digestmod=hashlib.sha1)
        mac = keyed.copy()
        mac.update(value)
        return mac.digest()


class _KeyOnceSigner(TimestampSigner):
    """itsdangerous' timestamp signer, deriving its key from the secret once, not per token."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived: dict[str | bytes | None, bytes] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        """The same key as itsdangerous derives, computed on the first call only."""
        key = self._derived.get(secret_key)
        if key is None:
            key = self._derived[secret_key] = super().derive_key(secret_key)
        return key


class _OneSignerSerializer(URLSafeTimedSerializer):
    """The same tokens, signed and checked by one signer built once."""

    # itsdangerous builds a signer for every dumps and loads and derives its key again (a hash
    # of the secret); with the random part and the JSON that was a third of issuing a token.
    default_signer = _KeyOnceSigner

    def __init__(self, secret_key: str, salt: str) -> None:
        super().__init__(secret_key, salt=salt, signer_kwargs={"algorithm": _KeyedHMAC()})
        self._signer = super().make_signer(salt)

    def dump_payload(self, obj: Any) -> bytes:
        """The JSON in base64, as itsdangerous writes it when compressing would not shorten it."""
        # It never does for a random nonce and a time, and itsdangerous tried zlib on each token.
        return base64_encode(Serializer.dump_payload(self, obj))

    def make_signer(self, salt: str | bytes | None = None) -> Signer:
        """The signer built at start-up for the serializer's own salt."""
        if salt is None or want_bytes(salt) == self.salt:
            return self._signer
        return super().make_signer(salt)


def init_app(app: Flask) -> None:
    """Build the app's token signer once: building it per call was a tenth of the page's time."""
    app.extensions["form_token"] = _OneSignerSerializer(app.config["SECRET_KEY"], salt=SALT)


def _serializer() -> URLSafeTimedSerializer:
    serializer: URLSafeTimedSerializer = current_app.extensions["form_token"]
    return serializer


def _load(token: Any, max_age: int | None) -> tuple[str, datetime] | None:
    """The random part of a token this service signed, and when its form was first shown."""
    if not isinstance(token, str) or not token or len(token) > 200:
        return None
    try:
        payload, signed_at = _serializer().loads(token, max_age=max_age, return_timestamp=True)
    except BadData:
        return None
    if isinstance(payload, str):
        return payload, signed_at
    # A token issued for a form shown again carries the time the visitor first saw it.
    if isinstance(payload, list) and len(payload) == 2:
        nonce, shown_at = payload
        if isinstance(nonce, str) and isinstance(shown_at, int):
            return nonce, datetime.fromtimestamp(shown_at, UTC)
    return None


def read(token: Any) -> str | None:
    """The random part of a valid, unexpired token, or None."""
    loaded = _load(token, current_app.config["WTF_CSRF_TIME_LIMIT"])
    return loaded[0] if loaded else None


def issue(first_shown: datetime | None = None) -> str:
    """A new token for a form shown now, or shown again to a visitor who first saw it then."""
    nonce = random_tokens.token_urlsafe(18)
    if first_shown is None:
        return _serializer().dumps(nonce)
    return _serializer().dumps([nonce, int(first_shown.timestamp())])


def issued_at(token: Any) -> datetime | None:
    """When the form of a valid token was first shown (whole seconds), or None."""
    loaded = _load(token, current_app.config["WTF_CSRF_TIME_LIMIT"])
    return loaded[1] if loaded else None


class FormToken(CSRF):
    """WTForms CSRF that signs a random value instead of storing a secret in the session."""

    def generate_csrf_token(self, csrf_token_field: CSRFTokenField) -> str:
        """Keep a still-valid posted token (the same submission, shown again); else a new one."""
        posted = csrf_token_field.data
        if isinstance(posted, str) and read(posted) is not None:
            return posted
        # An expired token of ours: the visitor has had the form for a long while, and the
        # fill-time trap must not catch them for pressing Send again at once.
        expired = _load(posted, None)
        return issue(expired[1] if expired else None)

    def validate_csrf_token(self, form: BaseForm, field: CSRFTokenField) -> None:
        """Accept a token this service signed within WTF_CSRF_TIME_LIMIT."""
        if read(field.data) is None:
            raise ValidationError(EXPIRED)
