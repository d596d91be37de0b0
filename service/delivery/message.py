"""The email to the clinic, built from a stored enquiry: readable, with Reply-To the patient."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import phonenumbers
from email_validator import validate_email
from flask import current_app, render_template
from flask_mail import Message

from ..store.models import Enquiry
from .mime import EnquiryMessage


def recipients() -> list[str]:
    """The clinic's inbox addresses, from CLINIC_INBOX."""
    inbox: str = current_app.config["CLINIC_INBOX"]
    return [address.strip() for address in inbox.split(",") if address.strip()]


def message_to() -> str | None:
    """Where the message itself goes when the clinic's email leaves it out, if anywhere."""
    config = current_app.config
    if config["NOTIFY_CONTENT"] != "minimal":
        return None
    return str(config["NOTIFY_MESSAGE_TO"]).strip() or None


def every_inbox() -> list[str]:
    """Every address an enquiry is delivered to: the clinic's inboxes, and NOTIFY_MESSAGE_TO."""
    extra = message_to()
    return [*recipients(), *([extra] if extra and extra not in recipients() else [])]


def emails_for(enquiry: Enquiry, inboxes: list[str]) -> list[tuple[Message, list[str]]]:
    """The emails an enquiry becomes, each with the inboxes it goes to."""
    if current_app.config["NOTIFY_CONTENT"] != "minimal":
        return [(build_message(enquiry), inboxes)]
    separate = message_to()
    clinic = [inbox for inbox in inboxes if inbox != separate]
    emails = [(build_message(enquiry, minimal=True), clinic)] if clinic else []
    if separate in inboxes:
        full = build_message(enquiry)
        full.msgId = enquiry.message_id.replace("@", ".message@", 1)  # another email
        emails.append((full, [separate]))
    return emails


def confirmation(enquiry: Enquiry) -> tuple[Message, str]:
    """The patient's confirmation (AUTORESPONDER): the settings' fixed text, their name and the
    clinic's, none of their own words; and the address it goes to."""
    config = current_app.config
    values = {"name": enquiry.name or "", "clinic": config["CLINIC_NAME"]}
    address = ascii_email(enquiry.email or "")
    reply = EnquiryMessage(
        subject=config["AUTORESPONDER_SUBJECT"].format(**values),
        recipients=[address],
        sender=config["MAIL_DEFAULT_SENDER"],
        reply_to=recipients()[0],
        body=config["AUTORESPONDER_TEXT"].format(**values),
        extra_headers={"Auto-Submitted": "auto-replied"},
    )
    reply.msgId = enquiry.message_id.replace("@", ".confirmation@", 1)
    return reply, address


def build_message(enquiry: Enquiry, minimal: bool = False) -> Message:
    """Build the clinic's email for an enquiry; only Reply-To and Subject carry its data.

    Minimal: the name, phone and email, so the front desk can call or reply, but not the
    message, which is where the email says (NOTIFY_MESSAGE_TO, or sealed in the store).
    """
    config = current_app.config
    received = enquiry.created_at.astimezone(ZoneInfo(config["CLINIC_TIMEZONE"]))
    context = {
        "enquiry": enquiry,
        "phone_readable": format_phone(enquiry.phone or ""),
        "received": received.strftime("%A %d %B %Y, %H:%M %Z (UTC%z)"),
        "clinic_name": config["CLINIC_NAME"],
        "minimal": minimal,
        "message_to": message_to(),
        "retention_days": config["RETENTION_DAYS"],
    }
    # Only the validated name and address reach a header: recipients and sender come from the
    # configuration alone, whatever the visitor sent.
    message = EnquiryMessage(
        subject=f"New enquiry from {enquiry.name}",
        recipients=list[str | tuple[str, str]](recipients()),
        sender=config["MAIL_DEFAULT_SENDER"],
        reply_to=(enquiry.name or "", ascii_email(enquiry.email or "")),
        body=render_template("email/enquiry.txt", **context),
        html=render_template("email/enquiry.html", **context),
        date=received.timestamp(),
        extra_headers={"Auto-Submitted": "auto-generated", "X-Enquiry-ID": enquiry.id},
    )
    message.msgId = enquiry.message_id
    return message


def ascii_email(address: str) -> str:
    """Return a stored address with its domain in IDNA (xn--) form, as a mail header carries it."""
    if address.isascii():
        return address
    # email-validator's IDNA 2008, not Python's "idna" codec (IDNA 2003), which would send a
    # reply for faß.de to fass.de.
    ascii_form = validate_email(
        address, check_deliverability=False, allow_smtputf8=False
    ).ascii_email
    if ascii_form is None:
        raise ValueError("the address has no ASCII form")
    return ascii_form


def format_phone(e164: str) -> str:
    """Render a stored E.164 number in readable international form."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
