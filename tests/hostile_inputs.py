"""Hostile inputs for the form and the API, each with the outcome the service must give."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from service.intake import body_checks
from service.intake import validation as v
from service.web.api import BAD_IDEMPOTENCY_KEY, NOT_AN_OBJECT
from service.web.errors import MESSAGES

VALID_JSON = {
    "name": "Jane Citizen",
    "email": "jane.citizen@example.com",
    "phone": "0412 345 678",
    "message": "Can I book for Friday?",
}
BIG = 70 * 1024  # over MAX_CONTENT_LENGTH (64 KiB)


@dataclass(frozen=True)
class FieldCase:
    """One hostile value in an otherwise valid enquiry."""

    id: str
    field: str
    value: Any
    # None: accepted (202, or 303 from the form) and delivered safely. Otherwise the field's only
    # error text (422).
    error: str | None = None
    # Also sent through the form page (only text can be; JSON carries numbers and surrogates).
    form: bool = False
    # The value stored, when it is not the value sent.
    stored: str | None = None


@dataclass(frozen=True)
class RequestCase:
    """A whole request the service must refuse, with its status and exact error text."""

    id: str
    body: bytes
    status: int
    error: str
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


# Everything a visitor can put in a field: rejected with the exact text, or delivered as inert text.
FIELD_CASES = [
    # Header injection in the name, which goes into Subject and Reply-To.
    FieldCase("name-crlf-bcc", "name", "Jane\r\nBcc: victim@evil.example", v.NAME_NOT_PLAIN, True),
    FieldCase("name-lf-bcc", "name", "Jane\nBcc: victim@evil.example", v.NAME_NOT_PLAIN),
    FieldCase("name-cr-bcc", "name", "Jane\rBcc: victim@evil.example", v.NAME_NOT_PLAIN),
    FieldCase("name-blank-line-body", "name", "Jane\r\n\r\nForged body", v.NAME_NOT_PLAIN),
    FieldCase("name-u2028", "name", "Jane\u2028Bcc: victim@evil.example", v.NAME_NOT_PLAIN),
    FieldCase("name-u2029-trailing", "name", "Jane\u2029", v.NAME_NOT_PLAIN),
    FieldCase("name-nel", "name", "Jane\u0085Bcc: victim@evil.example", v.NAME_NOT_PLAIN, True),
    FieldCase("name-nul", "name", "Ja\x00ne", v.NAME_NOT_PLAIN, True),
    FieldCase("name-inner-tab", "name", "Jane\tCitizen", v.NAME_NOT_PLAIN),
    FieldCase("name-vertical-tab", "name", "Jane\x0bCitizen", v.NAME_NOT_PLAIN),
    FieldCase("name-form-feed", "name", "Jane\x0cCitizen", v.NAME_NOT_PLAIN),
    FieldCase("name-ansi-escape", "name", "Jane\x1b[31mCitizen", v.NAME_NOT_PLAIN),
    FieldCase(
        "name-encoded-word-q", "name", "=?UTF-8?Q?=0A?=Bcc:x@evil.example", v.NAME_NOT_PLAIN, True
    ),
    FieldCase(
        "name-encoded-word-b",
        "name",
        "=?utf-8?b?SmFuZQpCY2M6IHhAZXZpbC5leGFtcGxl?=",
        v.NAME_NOT_PLAIN,
    ),
    FieldCase("name-lone-surrogate", "name", "Ja\ud800ne", v.NAME_NOT_PLAIN),
    FieldCase("name-bidi-override", "name", "Jane \u202eenilC", v.NAME_NOT_PLAIN, True),
    FieldCase("name-bidi-isolate", "name", "Jane \u2067Citizen\u2069", v.NAME_NOT_PLAIN),
    FieldCase("name-too-long", "name", "x" * 101, v.NAME_TOO_LONG, True),
    FieldCase("name-empty", "name", "", v.NAME_REQUIRED),
    FieldCase("name-true", "name", True, v.NAME_REQUIRED),
    FieldCase("name-null", "name", None, v.NAME_REQUIRED),
    FieldCase("name-array", "name", ["Jane"], v.NAME_REQUIRED),
    FieldCase("name-object", "name", {"$ne": ""}, v.NAME_REQUIRED),
    # Names that look dangerous but are only text: delivered, and inert.
    FieldCase(
        "name-address-syntax", "name", "Jane <x@evil.example>, Bcc: y@evil.example", form=True
    ),
    FieldCase(
        "name-long-address-list", "name", "x@evil.example, y@evil.example, Jane Citizen of Sydney"
    ),
    FieldCase("name-script", "name", "<script>alert(1)</script>", form=True),
    FieldCase("name-100-characters", "name", "x" * 100),
    FieldCase("name-number", "name", 42, stored="42"),
    FieldCase("name-zwnj", "name", "محمد\u200cرضا"),
    FieldCase("name-accents", "name", "Zoë O'Brien-Nguyễn", form=True),
    # The email goes into Reply-To.
    FieldCase(
        "email-crlf-bcc",
        "email",
        "jane@example.com\r\nBcc: victim@evil.example",
        v.INVALID_EMAIL,
        True,
    ),
    FieldCase("email-lf-to", "email", "jane@example.com\nTo: victim@evil.example", v.INVALID_EMAIL),
    FieldCase("email-encoded-word", "email", "=?UTF-8?Q?=0A?=Bcc:x@evil.example", v.INVALID_EMAIL),
    FieldCase(
        "email-two-addresses", "email", "jane@example.com, x@evil.example", v.INVALID_EMAIL, True
    ),
    FieldCase("email-display-name", "email", "Jane <x@evil.example>", v.INVALID_EMAIL),
    FieldCase("email-u2028", "email", "jane@example.com\u2028", v.INVALID_EMAIL),
    FieldCase("email-nul", "email", "ja\x00ne@example.com", v.INVALID_EMAIL),
    FieldCase("email-nel", "email", "jane\u0085@example.com", v.INVALID_EMAIL),
    FieldCase("email-bidi", "email", "jane\u202e@example.com", v.INVALID_EMAIL),
    FieldCase("email-zero-width-joiner", "email", "jane@ex\u200dample.com", v.INVALID_EMAIL),
    FieldCase("email-unicode-local-part", "email", "jösé@example.com", v.INVALID_EMAIL, True),
    FieldCase("email-lone-surrogate", "email", "jane@ex\ud800ample.com", v.INVALID_EMAIL),
    FieldCase("email-quoted-crlf", "email", '"x\r\nBcc"@example.com', v.INVALID_EMAIL),
    FieldCase("email-too-long", "email", "a" * 250 + "@example.com", v.INVALID_EMAIL),
    FieldCase("email-number", "email", 12345, v.INVALID_EMAIL),
    FieldCase("email-array", "email", ["jane@example.com"], v.INVALID_EMAIL),
    FieldCase("email-idn", "email", "jane@bücher.example", form=True),
    FieldCase("email-idna2008-eszett", "email", "jane@faß.de"),
    FieldCase("email-homoglyph-cyrillic-a", "email", "jane@exаmple.com"),
    FieldCase("email-mixed-case", "email", "  Jane@Example.COM ", stored="Jane@example.com"),
    # The phone number is only in the body, as a tel: link.
    FieldCase("phone-crlf", "phone", "0412 345 678\r\nBcc: x@evil.example", v.INVALID_NUMBER),
    FieldCase("phone-nul", "phone", "+61 412 345 678\x00", v.INVALID_NUMBER, True),
    FieldCase("phone-script", "phone", "<script>alert(1)</script>", v.INVALID_NUMBER),
    FieldCase("phone-javascript", "phone", "javascript:alert(1)", v.INVALID_NUMBER),
    FieldCase("phone-huge-float", "phone", 1e308, v.INVALID_NUMBER),
    FieldCase("phone-false", "phone", False, v.INVALID_NUMBER),
    FieldCase("phone-number", "phone", 412345678, stored="+61412345678"),
    # The message: any text, delivered escaped in HTML and whole inside one SMTP message.
    FieldCase("message-script", "message", "<script>alert(1)</script>", form=True),
    FieldCase(
        "message-javascript-link", "message", '<a href="javascript:alert(1)">Book</a>', form=True
    ),
    FieldCase("message-remote-image", "message", '<img src="http://tracker.example/p.png">'),
    FieldCase(
        "message-svg-onload", "message", '<svg onload="alert(1)"><style>@import url(//x)</style>'
    ),
    FieldCase(
        "message-smtp-dot-crlf",
        "message",
        "Hello\r\n.\r\nMAIL FROM:<x@evil.example>\r\nRCPT TO:<x@evil.example>\r\n"
        "DATA\r\nSmuggled\r\n.\r\n",
        form=True,
        stored="Hello\n.\nMAIL FROM:<x@evil.example>\nRCPT TO:<x@evil.example>\nDATA\nSmuggled\n.",
    ),
    FieldCase(
        "message-smtp-lf-dot-crlf",
        "message",
        "Hello\n.\r\nMAIL FROM:<x@evil.example>\r\nDATA\r\nSmuggled",
        stored="Hello\n.\nMAIL FROM:<x@evil.example>\nDATA\nSmuggled",
    ),
    FieldCase("message-smtp-bare-lf-dot", "message", "Hello\n.\nMAIL FROM:<x@evil.example>\n"),
    FieldCase(
        "message-smtp-bare-cr",
        "message",
        "Hello\r.\rMAIL FROM:<x@evil.example>\r",
        stored="Hello\n.\nMAIL FROM:<x@evil.example>",
    ),
    FieldCase("message-lone-dot", "message", "."),
    FieldCase("message-dot-lines", "message", "..\n.\n. .\n...", form=True),
    FieldCase(
        "message-forged-headers",
        "message",
        "Subject: hi\r\nBcc: x@evil.example\r\n\r\nbody",
        stored="Subject: hi\nBcc: x@evil.example\n\nbody",
    ),
    FieldCase(
        "message-forged-mime-boundary",
        "message",
        "--===============0==\nContent-Type: text/html\n\n<script>alert(1)</script>",
    ),
    FieldCase("message-encoded-word", "message", "=?UTF-8?Q?=0A?=Bcc:x@evil.example"),
    FieldCase(
        "message-line-separators", "message", "one\u2028two\u2029three", stored="one\ntwo\n\nthree"
    ),
    FieldCase("message-bidi-override", "message", "Total: \u202e0001$"),
    FieldCase("message-one-5000-character-line", "message", "x" * 5000, form=True),
    FieldCase("message-5000-emoji", "message", "\U0001f600" * 5000),
    # The longest messages in the widest encodings still fit under MAX_CONTENT_LENGTH.
    FieldCase("message-5000-cjk", "message", "\u75db" * 5000, form=True),
    FieldCase("message-5001-characters", "message", "x" * 5001, v.MESSAGE_TOO_LONG, True),
    FieldCase("message-bell", "message", "ring\x07", v.MESSAGE_NOT_PLAIN),
    FieldCase("message-nul", "message", "nul\x00byte", v.MESSAGE_NOT_PLAIN, True),
    FieldCase("message-nel", "message", "next\u0085line", v.MESSAGE_NOT_PLAIN),
    FieldCase("message-lone-surrogate", "message", "half \ud83d a pair", v.MESSAGE_NOT_PLAIN),
    FieldCase("message-empty-lines", "message", "\r\n\r\n", v.MESSAGE_REQUIRED),
    FieldCase("message-object", "message", {"text": "hi"}, v.MESSAGE_REQUIRED),
    # The page the form was on: a link in the email, kept only if plain http(s).
    FieldCase("page-javascript", "page", "javascript:alert(1)"),
    FieldCase(
        "page-attribute-breakout", "page", 'https://clinic.example/"><script>alert(1)</script>'
    ),
    FieldCase("page-crlf", "page", "https://clinic.example/\r\nBcc: x@evil.example"),
    # The captcha.
    FieldCase("altcha-oversized", "altcha", "A" * 5000, v.CAPTCHA_FAILED),
    FieldCase(
        "altcha-forged-json", "altcha", '{"algorithm":"SHA-256","verified":true}', v.CAPTCHA_FAILED
    ),
    FieldCase("altcha-null", "altcha", None, v.CAPTCHA_FAILED),
    # Keys the service does not read: ignored, whatever they say.
    FieldCase("extra-to", "to", "x@evil.example", form=True),
    FieldCase("extra-bcc-list", "bcc", ["x@evil.example", "y@evil.example"]),
    FieldCase("extra-headers-object", "headers", {"Bcc": "x@evil.example", "X-Injected": "1"}),
    FieldCase("extra-mail-default-sender", "MAIL_DEFAULT_SENDER", "x@evil.example", form=True),
]

API_REQUESTS = [
    RequestCase("json-invalid-utf8", b'{"name": "J\xffane"}', 400, body_checks.JSON_NOT_UTF8),
    RequestCase(
        "json-latin-1", '{"name": "José"}'.encode("latin-1"), 400, body_checks.JSON_NOT_UTF8
    ),
    RequestCase(
        "json-utf-16-bom", json.dumps(VALID_JSON).encode("utf-16"), 400, body_checks.JSON_NOT_UTF8
    ),
    RequestCase(
        "json-utf-16-le-no-bom",
        json.dumps(VALID_JSON).encode("utf-16-le"),
        400,
        body_checks.JSON_NOT_UTF8,
    ),
    RequestCase(
        "json-utf-32", json.dumps(VALID_JSON).encode("utf-32"), 400, body_checks.JSON_NOT_UTF8
    ),
    RequestCase(
        "json-utf-16-declared",
        json.dumps(VALID_JSON).encode("utf-16"),
        400,
        body_checks.JSON_NOT_UTF8,
        content_type="application/json; charset=utf-16",
    ),
    RequestCase(
        "json-overlong-less-than", b'{"name": "\xc0\xbcscript"}', 400, body_checks.JSON_NOT_UTF8
    ),
    RequestCase("json-cesu-surrogate", b'{"name": "\xed\xa0\x80"}', 400, body_checks.JSON_NOT_UTF8),
    RequestCase("json-truncated-sequence", b'{"name": "J\xc3"}', 400, body_checks.JSON_NOT_UTF8),
    RequestCase("json-deep-arrays", b"[" * 50_000, 400, body_checks.JSON_TOO_DEEP),
    RequestCase("json-deep-objects", b'{"a":' * 12_000, 400, body_checks.JSON_TOO_DEEP),
    RequestCase(
        "json-deep-field",
        b'{"name": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        400,
        body_checks.JSON_TOO_DEEP,
    ),
    RequestCase("json-array", b'[{"name": "Jane"}]', 400, NOT_AN_OBJECT),
    RequestCase("json-null", b"null", 400, NOT_AN_OBJECT),
    RequestCase("json-string", b'"Jane"', 400, NOT_AN_OBJECT),
    RequestCase("json-huge-integer", b'{"phone": ' + b"9" * 5_000 + b"}", 400, NOT_AN_OBJECT),
    RequestCase(
        "json-oversized",
        json.dumps({**VALID_JSON, "message": "x" * BIG}).encode(),
        413,
        MESSAGES[413],
    ),
    RequestCase(
        "json-as-text-plain",
        json.dumps(VALID_JSON).encode(),
        415,
        "Send the enquiry as JSON, with Content-Type: application/json.",
        content_type="text/plain",
    ),
    RequestCase(
        "idempotency-key-too-long",
        b"{}",
        400,
        BAD_IDEMPOTENCY_KEY,
        headers=(("Idempotency-Key", "k" * 201),),
    ),
    RequestCase(
        "idempotency-key-not-ascii",
        b"{}",
        400,
        BAD_IDEMPOTENCY_KEY,
        headers=(("Idempotency-Key", "clé"),),
    ),
    RequestCase(
        "idempotency-key-control",
        b"{}",
        400,
        BAD_IDEMPOTENCY_KEY,
        headers=(("Idempotency-Key", "key\x7f"),),
    ),
]

# Raw name=value pairs spliced into an otherwise valid form post (percent-encoded as sent).
FORM_REQUESTS = [
    RequestCase("form-percent-ff", b"name=J%FFane", 400, body_checks.FORM_NOT_UTF8),
    RequestCase("form-truncated-sequence", b"name=J%C3", 400, body_checks.FORM_NOT_UTF8),
    RequestCase("form-raw-latin-1", b"name=Jos\xe9", 400, body_checks.FORM_NOT_UTF8),
    RequestCase("form-cesu-surrogate", b"name=%ED%A0%80", 400, body_checks.FORM_NOT_UTF8),
    RequestCase("form-overlong-less-than", b"message=%C0%BCscript", 400, body_checks.FORM_NOT_UTF8),
    RequestCase("form-key-not-utf8", b"%FF=1", 400, body_checks.FORM_NOT_UTF8),
    RequestCase("form-oversized", b"message=" + b"x" * BIG, 413, MESSAGES[413]),
]

# Every key a mail library or a careless handler might read, with a hostile value: all ignored.
EXTRA_KEYS = {
    "to": "victim@evil.example",
    "cc": "victim@evil.example",
    "bcc": "victim@evil.example",
    "from": "ceo@clinic.example",
    "subject": "Urgent: reset your password\r\nBcc: victim@evil.example",
    "recipients": "victim@evil.example",
    "reply_to": "victim@evil.example",
    "headers": "Bcc: victim@evil.example",
    "sender": "ceo@clinic.example",
    "MAIL_DEFAULT_SENDER": "ceo@clinic.example",
    "CLINIC_INBOX": "victim@evil.example",
    "envelope_from": "bounce@evil.example",
    "mail_options": "SMTPUTF8",
}
