"""The clinic's email as Flask-Mail builds it, made safe to serialise whatever the visitor wrote."""

from __future__ import annotations

import functools
import secrets
import socket
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
        charset = Charset("utf-8")
        charset.body_encoding = QP
        return MIMEText(text or "", _subtype=subtype, _charset=charset)  # type: ignore[arg-type]

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
