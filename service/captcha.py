"""The ALTCHA captcha: challenges for the widget, verification, and one use per solution."""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import altcha
from flask import current_app
from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .models import UsedCaptcha

logger = logging.getLogger(__name__)

ALGORITHM = "PBKDF2/SHA-256"


@dataclass(frozen=True)
class Solution:
    """A solution that passed the cryptographic checks and may be used once."""

    key: str
    expires_at: datetime


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
        expires_at=expires,
        hmac_secret=_secret("challenge").hex(),
    )
    return challenge.to_dict()


def verify(payload: str | None) -> Solution | None:
    """Check a widget payload's signature, expiry and proof of work; None if it fails."""
    if not payload or len(payload) > 4096:
        return None
    try:
        result = altcha.verify_solution(payload, _secret("challenge").hex())
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
    challenge = altcha.Payload.from_base64(payload).challenge
    expires_at = datetime.fromtimestamp(int(challenge.parameters.expires_at), UTC)
    return Solution(key=str(challenge.signature), expires_at=expires_at)


def already_used(session: Session, solution: Solution) -> bool:
    """True if this solution has been accepted before."""
    return session.get(UsedCaptcha, solution.key) is not None


def consume(session: Session, solution: Solution) -> bool:
    """Record the solution as used, in the caller's transaction; False if it already was."""
    table = UsedCaptcha.__table__
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(table)
        .values(key=solution.key, expires_at=solution.expires_at)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(table.c.key)
    )
    # RETURNING, not rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING.
    return session.execute(statement).scalar() is not None


def forget_expired(session: Session, now: datetime | None = None) -> int:
    """Drop the records of solutions whose challenges have expired; return how many."""
    now = now or datetime.now(UTC)
    return session.execute(delete(UsedCaptcha).where(UsedCaptcha.expires_at < now)).rowcount
