"""The captcha: ALTCHA's challenges and checks, or a third-party provider's; one use per answer."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import altcha
from flask import current_app

from . import replay, siteverify
from .replay import Solution

# The delivery worker's daily housekeeping calls captcha.forget_expired.
from .replay import forget_expired as forget_expired

logger = logging.getLogger(__name__)

ALGORITHM = "PBKDF2/SHA-256"
MEAN_ATTEMPTS = 256
ALTCHA_FIELD = "altcha"


def check_config(config: Mapping[str, Any]) -> None:
    """Stop start-up unless CAPTCHA_PROVIDER names a captcha that has the keys it needs."""
    if config["CAPTCHA_PROVIDER"] != "altcha":
        siteverify.check_config(config)


def field_name() -> str:
    """The form field (and JSON key) that carries the captcha's answer."""
    provider = siteverify.current()
    return provider.field if provider else ALTCHA_FIELD


class AnswerReused(Exception):
    """The answer is genuine but was used before: the post may be a resend of a stored one."""


def check(answer: str | None) -> Solution | None:
    """Verify the configured captcha's answer; None if it fails, AnswerReused if it was used."""
    if siteverify.current() is not None:
        return siteverify.verify(answer)
    solution = verify(answer)
    # Checking an ALTCHA answer is one HMAC; without Redis, the store finds a reuse anyway when
    # the enquiry is stored, in the same transaction, so it is not asked twice.
    if solution is not None and replay.uses_redis() and replay.seen(solution):
        logger.info("captcha rejected: solution used before")
        raise AnswerReused()
    return solution


def _secret(purpose: str) -> bytes:
    # Derived from SECRET_KEY so that every process of one deployment agrees, with no extra setting.
    key = current_app.config["SECRET_KEY"]
    key = key.encode() if isinstance(key, str) else key
    return hmac.new(key, f"altcha:{purpose}".encode(), hashlib.sha256).digest()


def create_challenge() -> dict:
    """Return a fresh signed challenge for the widget, as JSON-ready data."""
    expires = datetime.now(UTC) + timedelta(seconds=current_app.config["ALTCHA_EXPIRES_SECONDS"])
    challenge = altcha.create_challenge(
        ALGORITHM,
        current_app.config["ALTCHA_COST"],
        # The service picks the answer and signs its derived key, so checking a submission is one
        # HMAC instead of a proof of work: junk is turned away for almost nothing. The widget
        # counts up from 0, so it works through MEAN_ATTEMPTS derivations on average, as many as
        # a random "00" key prefix would ask.
        counter=secrets.randbelow(2 * MEAN_ATTEMPTS),
        expires_at=expires,
        hmac_secret=_secret("challenge").hex(),
        hmac_key_secret=_secret("key").hex(),
    )
    return challenge.to_dict()


def verify(payload: str | None) -> Solution | None:
    """Check a widget payload's signature, expiry and proof of work; None if it fails."""
    if not payload or len(payload) > 4096:
        return None
    try:
        parsed = altcha.Payload.from_base64(payload)
        result = altcha.verify_solution(
            parsed, _secret("challenge").hex(), hmac_key_secret=_secret("key").hex()
        )
    except Exception:  # A crafted payload must cost a captcha error, never a 500.
        logger.info("captcha payload could not be parsed")
        return None
    if not result.verified:
        reason = (
            "unreadable payload"
            if result.error
            else "expired"
            if result.expired
            else "bad signature"
            if result.invalid_signature
            else "wrong solution"
        )
        logger.info("captcha rejected: %s", reason)
        return None
    challenge = parsed.challenge
    expires_at = datetime.fromtimestamp(int(challenge.parameters.expires_at), UTC)
    return Solution(key=str(challenge.signature), expires_at=expires_at)
