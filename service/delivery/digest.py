"""The daily digest of held enquiries to the clinic: how many, why, and how to release each."""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

from flask import current_app, render_template
from flask_mail import Message

from ..store import held_digests, lifecycle
from . import held_links, message, smtp

logger = logging.getLogger(__name__)


def send_daily() -> bool:
    """Send today's digest if something was held since the last one; True if one was sent."""
    config = current_app.config
    if not config["HELD_DIGEST"]:
        return False
    zone = ZoneInfo(config["CLINIC_TIMEZONE"])
    day = lifecycle.utcnow().astimezone(zone).strftime("%Y-%m-%d")
    claim = held_digests.claim(day)
    if claim is None:
        return False  # sent already today, or another worker is sending it
    try:
        return _send(claim, zone)
    except BaseException:
        held_digests.give_back(claim)  # the next pass tries again
        raise


def _send(claim: held_digests.Claim, zone: ZoneInfo) -> bool:
    """List what the claim covers and send it; give the claim back if the server refuses."""
    config = current_app.config
    held = held_digests.held_in(claim)
    if not held:
        held_digests.sent(claim)
        return False
    entries = [
        {
            "received": enquiry.created_at.astimezone(zone).strftime("%a %d %b %Y, %H:%M %Z"),
            "trap": enquiry.held_reason,
            "id": enquiry.id,
            "link": held_links.url_for_release(enquiry.id),
        }
        for enquiry in held
    ]
    context = {
        "entries": entries,
        "days": config["HELD_RETENTION_DAYS"],
        "clinic_name": config["CLINIC_NAME"],
    }
    digest = Message(
        subject=f"Held as possible spam: {len(held)} message{'s' if len(held) != 1 else ''}",
        recipients=list[str | tuple[str, str]](message.recipients()),
        sender=config["MAIL_DEFAULT_SENDER"],
        body=render_template("email/held_digest.txt", **context),
        extra_headers={"Auto-Submitted": "auto-generated"},
    )
    try:
        outcome = smtp.send_one(digest, message.recipients())
    except smtp.StepFailed as error:
        held_digests.give_back(claim)
        logger.warning("held digest not sent (%s); trying again later", error.failure.reason)
        return False
    if not outcome.accepted:
        held_digests.give_back(claim)
        logger.warning("held digest refused by every inbox; trying again later")
        return False
    held_digests.sent(claim)
    logger.info("held digest sent: %d held enquiries", len(held))
    return True
