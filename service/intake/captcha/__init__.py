"""The captcha: ALTCHA's or a third-party provider's, and one use per answer."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from config import ConfigurationError

from ...ops.logs import refused_because
from . import altcha_proof, refused, replay, third_party
from .replay import Solution

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptchaCheck:
    """The outcome of checking an answer: the solution to spend, or why there is none."""

    solution: Solution | None
    # Genuine but used before: the post may be a resend of a stored enquiry (a double click).
    reused: bool = False


def check_config(config: Mapping[str, Any]) -> None:
    """Stop start-up unless CAPTCHA_PROVIDER names a captcha that has the keys it needs."""
    if config["CAPTCHA_PROVIDER"] != "altcha":
        third_party.check_config(config)
        return
    if config["ALTCHA_DIFFICULTY"] not in altcha_proof.DIFFICULTY_RANGE:
        raise ConfigurationError(
            "ALTCHA_DIFFICULTY must be a whole number from 1 to 6: the hex zeros a solution's key "
            "starts with (each one makes the visitor's browser work 16 times as long)."
        )
    if not config["ALTCHA_COST"] > 0:
        raise ConfigurationError("ALTCHA_COST must be a whole number above 0.")


def field_name() -> str:
    """The form field (and JSON key) that carries the captcha's answer."""
    provider = third_party.current()
    return provider.field if provider else altcha_proof.FIELD


def check(answer: str | None, stored_next: bool = False) -> CaptchaCheck:
    """Verify the configured captcha's answer.

    `stored_next`: the caller stores the enquiry next, and that settles whether it was used.
    """
    if third_party.current() is not None:
        return CaptchaCheck(third_party.verify(answer))
    if not answer or len(answer) > altcha_proof.PAYLOAD_MAX:
        return CaptchaCheck(None)
    # The very payload this process saw spent (a double click, a robot replaying one solved
    # captcha again and again) is refused before its proof of work is derived again
    # (ALTCHA_COST rounds of PBKDF2, 60 us at the default), and with no store asked; the very
    # payload it refused (a robot replaying one forgery) before it is parsed or its signature
    # computed. Anything else, a changed copy included, is checked in full.
    exact = altcha_proof.exact_key(answer)
    if replay.spent_here(exact):
        refused_because(logger, "captcha rejected: solution used before")
        return CaptchaCheck(None, reused=True)
    known = refused.known(exact)
    verdict = altcha_proof.verify(answer, exact) if known is None else known
    if isinstance(verdict, str):
        if known is None:
            refused.remember(exact, verdict)
        refused_because(logger, verdict)
        return CaptchaCheck(None)
    solution = verdict
    # A spent answer costs this process no store after the first time, and never a write
    # transaction. A fresh one is not looked up before it is stored: storing the enquiry marks
    # it used in the same transaction, which refuses a used one (and settles a race between
    # twins). Without a store to come (errors in the fields), a read says whether the post may
    # be a resend.
    if replay.spent_here(solution.key) or (not stored_next and replay.seen(solution)):
        return refused_as_used(solution)
    return CaptchaCheck(solution)


def refused_as_used(solution: Solution) -> CaptchaCheck:
    """Refuse an answer found used before, and remember it in this process."""
    replay.remember_spent(solution)
    refused_because(logger, "captcha rejected: solution used before")
    return CaptchaCheck(None, reused=True)
