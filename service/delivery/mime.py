"""The clinic's email as Flask-Mail builds it, made safe to serialise whatever the visitor wrote."""

from __future__ import annotations

import functools
import secrets
import socket
from collections.abc import Iterable
from email import quoprimime
from email.charset import QP, Charset
from email.mime.base import MIMEBase
from email.mime.text import MIMEText
from email.policy import EmailPolicy, compat32
from email.utils import make_msgid
from typing import Any

import flask_mail
from flask_mail import Message


class _SendAsBuilt(EmailPolicy):
    """SMTP's policy, with headers written as they were built and read back as plain text."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        """The stored text, as compat32 gives it, not a header object parsed on every read."""
        # Serialising reads Content-Type and the boundary a dozen times per email; parsing them
        # through the header registry each time was a fifth of the cost of a delivery.
        return compat32.header_fetch_parse(name, value)


# Flask-Mail encodes and folds every header itself (the name in an RFC 2047 encoded word), so
# nothing may fold them again: refolding a header longer than 78 characters decodes the name and
# writes it back unquoted, and a name like "x@evil.example, Jane Citizen of ..." would become a
# second Reply-To address.
SEND_AS_BUILT = _SendAsBuilt(linesep="\r\n", refold_source="none")


class EnquiryMessage(Message):
    """A Flask-Mail message with quoted-printable text parts and headers kept as encoded."""

    # An adapter: Flask-Mail has no public way to choose a part's encoding or the policy it
    # serialises with, so this overrides its private _mimetext and _message, checked against
    # Flask-Mail 0.10.0. tests/test_adapters.py fails if a new version changes either.

    def _mimetext(self, text: str | None, subtype: str = "plain") -> MIMEText:
        """Encode a part as quoted-printable rather than Flask-Mail's raw 8bit."""
        # Raw 8bit keeps a visitor's line as it is, and a 5,000-character paragraph breaks SMTP's
        # limit of 998 octets per line: the server refuses the email for good. Quoted-printable
        # wraps every line at 76 and needs no 8BITMIME from the server.
        return quoted_printable_part(text or "", subtype)

    def _message(self) -> MIMEBase:
        """Build the email with Flask-Mail, then serialise its headers exactly as encoded."""
        message = super()._message()
        # Until the boundaries are in, headers are stored as the text given (compat32), not
        # parsed by Flask-Mail's policy.SMTP: writing them into the header cost a twentieth of
        # a delivery that way.
        message.policy = compat32
        for part in message.walk():
            if part.is_multipart():
                # Set here, the serialiser need not search the text for a safe boundary (a regular
                # expression compiled per message). "==" never occurs in quoted-printable output,
                # where "=" is always followed by two hex digits or a line break, and every part
                # is quoted-printable, so no line of any part can match this boundary. Flask-Mail
                # gives its multiparts no parameters: the header is the type and the boundary.
                boundary = f"=={secrets.token_hex(16)}=="
                part.replace_header(
                    "Content-Type", f'{part.get_content_type()}; boundary="{boundary}"'
                )
        message.policy = SEND_AS_BUILT
        return message


# One instance for every part: a Charset is read, never changed, once built.
UTF8_QP = Charset("utf-8")
UTF8_QP.body_encoding = QP


def quoted_printable_part(text: str, subtype: str) -> MIMEText:
    """The part MIMEText(text, subtype, UTF8_QP) builds, byte for byte, without its detours."""
    # MIMEText sets the charset parameter twice and tries the encoding as a function before it
    # encodes the body: 60 us a part, of which the encoding itself is 7. tests/test_adapters.py
    # holds the two to the same bytes for any text.
    part = MIMEText.__new__(MIMEText)
    MIMEBase.__init__(part, "text", subtype, charset="utf-8")
    part.set_payload(quoprimime.body_encode(text.encode("utf-8").decode("latin1")))
    part._charset = UTF8_QP  # type: ignore[attr-defined]  # what get_charset() answers
    part["Content-Transfer-Encoding"] = "quoted-printable"
    return part


# The settings' own addresses (the sender, the clinic's inboxes) as Flask-Mail encodes them for a
# header: the same on every email, so encoded once. Never a visitor's address: those are encoded
# afresh and kept nowhere.
_ENCODED: dict[tuple[str, str], str] = {}
_sanitize_address = flask_mail.sanitize_address


def encode_once(addresses: Iterable[str]) -> None:
    """Have Flask-Mail encode the settings' own addresses once per process, not once per email."""
    # Parsing and encoding an address costs 40-60 us, and every email names the sender and the
    # inboxes again. Flask-Mail looks up its module's sanitize_address at each call.
    for address in addresses:
        try:
            _ENCODED.setdefault((address, "utf-8"), _sanitize_address(address, "utf-8"))
        except ValueError:  # no IDNA form: each email fails on it as before, the app starts
            continue
    flask_mail.sanitize_address = _encoded_or_sanitized


def _encoded_or_sanitized(addr: str | tuple[str, str], encoding: str = "utf-8") -> str:
    if isinstance(addr, str):
        encoded = _ENCODED.get((addr, encoding))
        if encoded is not None:
            return encoded
    return _sanitize_address(addr, encoding)


@functools.cache
def _host_name() -> str:
    # What make_msgid names the host by when given no domain, asked of the resolver once.
    return socket.getfqdn()


def _message_id() -> str:
    return make_msgid(domain=_host_name())


def look_up_the_host_once() -> None:
    """Have Flask-Mail's default Message-IDs name this host without a lookup per email."""
    # Every Message gets make_msgid() in its constructor, which asks the resolver for this
    # host's name (socket.getfqdn, with no timeout) each time, though an enquiry's email then
    # takes the enquiry's own id: a lookup per email that a host with a slow DNS server waits on.
    flask_mail.make_msgid = _message_id  # type: ignore[attr-defined,assignment]
