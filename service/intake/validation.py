"""Field checks with the exact texts the visitor sees; pure functions, no Flask."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict

import phonenumbers
from email_validator import EmailNotValidError, validate_email

INVALID_EMAIL = "Invalid Email"
INVALID_NUMBER = "Invalid Number"
CAPTCHA_FAILED = "Please check the captcha to verify you are not a robot."
NAME_REQUIRED = "Please enter your name."
NAME_TOO_LONG = "Please shorten your name to 100 characters or fewer."
NAME_NOT_PLAIN = "Please enter your name as plain text, on one line."
MESSAGE_REQUIRED = "Please enter a message."
MESSAGE_TOO_LONG = "Please shorten your message to 5,000 characters or fewer."
MESSAGE_NOT_PLAIN = "Please remove the control characters from your message."

# The fields of an enquiry, in the order the form shows them.
FIELDS = ("name", "email", "phone", "message")

NAME_MAX = 100
MESSAGE_MAX = 5000
PAGE_URL_MAX = 2000
PHONE_MAX = 40

# An RFC 2047 encoded word: a mail client would decode it, so it has no place in a name.
_ENCODED_WORD = re.compile(r"=\?[^?]*\?[bqBQ]\?", re.ASCII)
# Cc (NUL, CR, LF, NEL and the other C0 and C1 controls) and Zl/Zp (U+2028, U+2029): line breaks
# in all their forms. Cs: a lone surrogate (JSON's "\ud800") cannot be stored or mailed as UTF-8.
# Format characters (Cf) stay allowed: ZWNJ and ZWJ belong in names and emoji. Unicode never adds
# to these categories, so one character class is them (a test holds it to unicodedata); searching
# with it costs a tenth of asking unicodedata about each character.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# The same but for the line feed and the tab, which a message may hold.
_CONTROL_IN_MESSAGE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# Bidi embeddings, overrides and isolates: in a Subject they can make the clinic's inbox show
# a name reversed or spliced into the surrounding text (the "Trojan Source" trick).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class FieldError(ValueError):
    """A value the visitor must correct; str(error) is the text shown to them."""


def _has_control(value: str, pattern: re.Pattern[str] = _CONTROL) -> bool:
    return pattern.search(value) is not None


def clean_name(value: str | None) -> str:
    """Return the trimmed name, or raise FieldError."""
    name = (value or "").strip(" \t")
    if _has_control(name) or _ENCODED_WORD.search(name) or not _BIDI_CONTROLS.isdisjoint(name):
        raise FieldError(NAME_NOT_PLAIN)
    name = name.strip()
    if not name:
        raise FieldError(NAME_REQUIRED)
    if len(name) > NAME_MAX:
        raise FieldError(NAME_TOO_LONG)
    return name


def clean_email(value: str | None) -> str:
    """Return the normalised address, or raise FieldError("Invalid Email")."""
    address = (value or "").strip(" \t")
    if not address or _has_control(address) or _ENCODED_WORD.search(address):
        raise FieldError(INVALID_EMAIL)
    try:
        # No DNS: the form must work without network, and fast. No SMTPUTF8: a Reply-To with
        # letters beyond ASCII before the @ needs a mail server that speaks it, and the clinic's
        # may not (the email would fail for good); internationalised domains are fine.
        result = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        raise FieldError(INVALID_EMAIL) from None
    return result.normalized


@dataclass(frozen=True)
class Phone:
    """A valid phone number, as the store keeps it (the email renders it for reading)."""

    e164: str


def clean_phone(value: str | None, default_region: str) -> Phone:
    """Return the number if phonenumbers says it is valid, or raise FieldError("Invalid Number")."""
    raw = (value or "").strip(" \t")
    if not raw or len(raw) > PHONE_MAX or _has_control(raw):
        raise FieldError(INVALID_NUMBER)
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        raise FieldError(INVALID_NUMBER) from None
    if not phonenumbers.is_valid_number(number):
        raise FieldError(INVALID_NUMBER)
    return Phone(e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def clean_message(value: str | None) -> str:
    """Return the message with normalised line ends, or raise FieldError."""
    message = (value or "").replace("\r\n", "\n").replace("\r", "\n")
    message = message.replace("\u2028", "\n").replace("\u2029", "\n\n").strip()
    if not message:
        raise FieldError(MESSAGE_REQUIRED)
    if _has_control(message, _CONTROL_IN_MESSAGE):
        raise FieldError(MESSAGE_NOT_PLAIN)
    if len(message) > MESSAGE_MAX:
        raise FieldError(MESSAGE_TOO_LONG)
    return message


def clean_page_url(value: str | None) -> str | None:
    """Return the page the form was on if it is a plain http(s) URL, else None."""
    url = (value or "").strip()
    if not url or len(url) > PAGE_URL_MAX or _has_control(url):
        return None
    if not re.match(r"^https?://[^\s/]+", url, re.IGNORECASE):
        return None
    return url


class EnquiryFields(TypedDict):
    """A valid enquiry's fields, cleaned: what the store keeps and the clinic reads."""

    name: str
    email: str
    phone: str  # E.164
    message: str
    page_url: NotRequired[str | None]


@dataclass(frozen=True)
class FieldCheck:
    """The outcome of checking the four fields: the clean enquiry, or the text for each error."""

    fields: EnquiryFields | None
    errors: dict[str, str] = field(default_factory=dict)


def check_fields(posted: Mapping[str, str | None], default_region: str) -> FieldCheck:
    """Check name, email, phone and message as posted, and keep the page if it is plain."""
    cleaned: dict[str, str] = {}
    errors: dict[str, str] = {}
    checks: dict[str, Callable[[str | None], str]] = {
        "name": clean_name,
        "email": clean_email,
        "phone": lambda value: clean_phone(value, default_region).e164,
        "message": clean_message,
    }
    for name, clean in checks.items():
        try:
            cleaned[name] = clean(posted.get(name))
        except FieldError as error:
            errors[name] = str(error)
    if errors:
        return FieldCheck(None, errors)
    return FieldCheck(
        EnquiryFields(
            name=cleaned["name"],
            email=cleaned["email"],
            phone=cleaned["phone"],
            message=cleaned["message"],
            page_url=clean_page_url(posted.get("page")),
        )
    )
