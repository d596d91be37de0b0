"""ALTCHA, the service's own captcha: signed proof-of-work challenges and the check of answers."""

from __future__ import annotations

import functools
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import altcha
from flask import current_app

from .replay import Solution

ALGORITHM = "PBKDF2/SHA-256"
# The widget counts until the derived key starts with ALTCHA_DIFFICULTY zeros (1 in 16 each).
DIFFICULTY_RANGE = range(1, 7)
FIELD = "altcha"
PAYLOAD_MAX = 4096
UNREADABLE = "captcha payload could not be parsed"


def _secret(purpose: str) -> str:
    # Derived from SECRET_KEY so that every process of one deployment agrees, with no extra setting.
    key = current_app.config["SECRET_KEY"]
    return _derived(key.encode() if isinstance(key, str) else key, purpose)


@functools.lru_cache(maxsize=8)
def _derived(key: bytes, purpose: str) -> str:
    # Once per key and purpose: deriving both again for every answer was a tenth of checking
    # a forged one.
    return hmac.new(key, f"altcha:{purpose}".encode(), hashlib.sha256).hexdigest()


def key_prefix(difficulty: int) -> str:
    """The hex prefix a solution's derived key must start with."""
    return "0" * difficulty


def create_challenge() -> dict[str, Any]:
    """Return a fresh signed challenge for the widget, as JSON-ready data."""
    expires = datetime.now(UTC) + timedelta(seconds=current_app.config["ALTCHA_EXPIRES_SECONDS"])
    # Random-key mode: the widget counts up until the derived key starts with the prefix, and
    # the service derives nothing to make a challenge, so asking for challenges burns none of
    # its CPU. Checking an answer costs one derivation (ALTCHA_COST iterations, whatever the
    # difficulty), but only for a challenge this service signed and that has not expired: a
    # forged one costs one HMAC.
    config = current_app.config
    challenge = altcha.create_challenge(
        ALGORITHM,
        config["ALTCHA_COST"],
        key_prefix=key_prefix(config["ALTCHA_DIFFICULTY"]),
        expires_at=expires,
        hmac_secret=_secret("challenge"),
    )
    data: dict[str, Any] = challenge.to_dict()
    return data


def exact_key(payload: str) -> str:
    """The key a payload is remembered by once spent or refused: its digest, byte for byte."""
    return "payload:" + hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def verify(payload: str, exact: str) -> Solution | str:
    """Read a payload and check its signature, expiry and proof of work; else why it fails."""
    try:
        parsed = altcha.Payload.from_base64(payload)
        result = altcha.verify_solution(
            parsed, _secret("challenge"), hmac_key_secret=_secret("key")
        )
    except Exception:  # A crafted payload must cost a captcha error, never a 500.
        return UNREADABLE
    if not result.verified:
        # Constant texts: the record of refused payloads holds one copy of each.
        return (
            "captcha rejected: unreadable payload"
            if result.error
            else "captcha rejected: expired"
            if result.expired
            else "captcha rejected: bad signature"
            if result.invalid_signature
            else "captcha rejected: wrong solution"
        )
    challenge = parsed.challenge
    # Every challenge this service signs has an expiry, and the signature covers it.
    if challenge.parameters.expires_at is None:
        return "captcha rejected: no expiry"
    expires_at = datetime.fromtimestamp(int(challenge.parameters.expires_at), UTC)
    return Solution(key=str(challenge.signature), expires_at=expires_at, exact_key=exact)
