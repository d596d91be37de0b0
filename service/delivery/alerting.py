"""Alerts to the operator (ALERT_TO): a dead letter, a queue stuck past STUCK_AFTER, and its
recovery; at most one email an hour per cause, and never any personal data."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app
from flask_mail import Message

from ..store import alerts
from . import smtp

logger = logging.getLogger(__name__)
EVERY = timedelta(hours=1)


def dead_letter(enquiry_id: str, reason: str) -> bool:
    """Tell the operator an enquiry could not be delivered."""
    return _send(
        alerts.DEAD_LETTER,
        "Contact form: an enquiry could not be delivered",
        f"Enquiry {enquiry_id} is a dead letter: {reason}.\n\n"
        "It is kept for a person: `flask --app wsgi outbox list --state failed` lists the dead "
        "letters, `outbox retry ID` queues one again once the cause is fixed.\n"
        "(At most one of these alerts an hour; later dead letters are in that list.)",
    )


def stuck(waited_seconds: float) -> bool:
    """Tell the operator the oldest enquiry has waited longer than STUCK_AFTER."""
    return _send(
        alerts.STUCK,
        "Contact form: enquiries are not being delivered",
        f"The oldest waiting enquiry has waited {round(waited_seconds / 60)} minutes. Enquiries "
        "are still taken and kept, but none reaches the clinic's inbox.\n\n"
        "`flask --app wsgi outbox status` says why (the SMTP server's reason, if it is failing).",
    )


def recovered() -> bool:
    """Tell the operator delivery works again, if they were told it did not (and not since)."""
    stuck_alert = alerts.last_sent(alerts.STUCK)
    recovery_alert = alerts.last_sent(alerts.RECOVERED)
    if stuck_alert is None or (recovery_alert is not None and recovery_alert >= stuck_alert):
        return False
    return _send(
        alerts.RECOVERED,
        "Contact form: delivery works again",
        "No enquiry has waited longer than STUCK_AFTER any more: delivery works again.",
    )


def _send(cause: str, subject: str, body: str) -> bool:
    config = current_app.config
    address = str(config["ALERT_TO"]).strip()
    if not address or not alerts.claim(cause, EVERY):
        return False
    alert = Message(
        subject=subject,
        recipients=[address],
        sender=config["MAIL_DEFAULT_SENDER"],
        body=body,
        extra_headers={"Auto-Submitted": "auto-generated"},
    )
    try:
        sent = smtp.send_one(alert, [address])
    except smtp.StepFailed as error:
        logger.warning("alert (%s) not sent: %s", cause, error.failure.reason)
        return False
    if not sent.accepted:
        logger.warning("alert (%s) refused by %s", cause, address)
        return False
    logger.info("alert (%s) sent to the operator", cause)
    return True
