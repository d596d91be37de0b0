"""SMTP one step at a time: connect, secure, log in, then one transaction per message.

What failed decides what it means. A failure at connect, greeting, EHLO, STARTTLS, AUTH or
MAIL FROM is the destination's (down, or misconfigured): every message would meet it. A
failure at RCPT or DATA is the message's own; a refused recipient is that recipient's.
"""

from __future__ import annotations

import functools
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from flask import current_app
from flask_mail import Mail, Message, sanitize_address

mail = Mail()

# The steps whose failure is the destination's, not one message's.
DESTINATION_STEPS = frozenset({"connect", "greeting", "TLS", "EHLO", "STARTTLS", "AUTH", "MAIL"})


@dataclass(frozen=True)
class Failure:
    """How an SMTP step failed, in words fit for a log (no personal data)."""

    step: str
    permanent: bool
    reason: str

    @property
    def of_destination(self) -> bool:
        """True when every message would meet this failure, not only the one being sent."""
        return self.step in DESTINATION_STEPS


class StepFailed(Exception):
    """An SMTP step failed; `failure` says which and what it means."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


@dataclass(frozen=True)
class Sent:
    """One transaction's outcome: who accepted the email, and who refused it at RCPT."""

    accepted: tuple[str, ...]
    refused: dict[str, Failure] = field(default_factory=dict)

    def merged(self, other: Sent) -> Sent:
        """This outcome and another transaction's of the same enquiry."""
        return Sent(self.accepted + other.accepted, {**self.refused, **other.refused})


def tls_context() -> ssl.SSLContext:
    """A context that verifies the server's certificate (optionally against MAIL_TLS_CA_FILE)."""
    return ssl.create_default_context(cafile=current_app.config.get("MAIL_TLS_CA_FILE") or None)


class Session:
    """One SMTP connection, opened and logged in step by step, that sends message after message."""

    def __init__(self, host: smtplib.SMTP) -> None:
        self.host = host
        self.usable = True
        self.transactions = 0  # MAIL commands this connection has answered
        # The sender and the clinic's inboxes are the same on every email of a batch; encoding
        # them again for each was a twentieth of a delivery. Kept as long as the connection.
        self.envelope_address = functools.lru_cache(maxsize=16)(sanitize_address)

    def send(self, message: Message, recipients: Sequence[str]) -> Sent:
        """Send one email to `recipients` as one transaction; raise StepFailed if a step fails."""
        if message.date is None:
            message.date = time.time()
        sender = self.envelope_address(message.sender)
        data = message.as_bytes()
        options = [f"SIZE={len(data)}"] if self.host.has_extn("size") else []
        code = self._step("MAIL", lambda: self.host.mail(sender, options)[0])
        self.transactions += 1
        if code != 250:
            self._reset()
            raise StepFailed(reply_failure("MAIL", code))
        accepted: list[str] = []
        refused: dict[str, Failure] = {}
        for recipient in recipients:
            address = self.envelope_address(recipient)
            code = self._step("RCPT", lambda address=address: self.host.rcpt(address)[0])
            if code in (250, 251):
                accepted.append(recipient)
            else:
                refused[recipient] = reply_failure("RCPT", code)
        if not accepted:
            self._reset()
            return Sent((), refused)
        code = self._step("DATA", lambda: self.host.data(data)[0])
        if code != 250:
            self._reset()
            raise StepFailed(reply_failure("DATA", code))
        return Sent(tuple(accepted), refused)

    def close(self) -> None:
        """Say goodbye if the server is still listening; drop the socket either way."""
        try:
            self.host.quit()
        except (smtplib.SMTPException, OSError):
            self.host.close()
        self.usable = False

    def _step(self, step: str, command: Callable[..., int]) -> int:
        try:
            code = command()
        except Exception as error:
            # The connection is in an unknown state (a timeout, a drop): never reuse it.
            self.usable = False
            raise StepFailed(classify(error, step)) from error
        return code

    def _reset(self) -> None:
        # A refused transaction is ended with RSET, so the connection can carry the next one.
        try:
            self.usable = self.host.rset()[0] == 250
        except (smtplib.SMTPException, OSError):
            self.usable = False


def open_session() -> Session:
    """Connect, secure and log in with the app's mail settings, each step within MAIL_TIMEOUT."""
    config = current_app.config
    settings: Mail = current_app.extensions["mail"]
    timeout = float(config["MAIL_TIMEOUT"])
    # Built only when used: loading the system CA bundle costs tens of milliseconds.
    context = tls_context() if settings.use_ssl or settings.use_tls else None
    step = "connect"  # and the greeting, which smtplib reads as it connects
    try:
        host = (
            smtplib.SMTP_SSL(settings.server, settings.port, timeout=timeout, context=context)
            if settings.use_ssl
            else smtplib.SMTP(settings.server, settings.port, timeout=timeout)
        )
    except Exception as error:
        raise StepFailed(classify(error, step)) from error
    try:
        step = "EHLO"
        host.ehlo_or_helo_if_needed()
        if settings.use_tls:
            step = "STARTTLS"
            host.starttls(context=context)
            step = "EHLO"
            host.ehlo()
        if settings.username and settings.password:
            step = "AUTH"
            host.login(settings.username, settings.password)
    except Exception as error:
        host.close()
        raise StepFailed(classify(error, step)) from error
    return Session(host)


def send_one(message: Message, recipients: Sequence[str]) -> Sent:
    """Open a connection, send one email, close it: for the odd email outside the outbox."""
    session = open_session()
    try:
        return session.send(message, recipients)
    finally:
        session.close()


def reply_failure(step: str, code: int) -> Failure:
    """What a refusing reply code means at a step; only the code, never the server's words."""
    # The server's words may quote the message, and so the visitor.
    permanent = code >= 500
    if step == "MAIL":
        advice = (
            "the server wants a login: set MAIL_USERNAME and MAIL_PASSWORD"
            if code == 530
            else "check MAIL_DEFAULT_SENDER, and that the account may send as that address"
        )
        return Failure(
            step, permanent, f"SMTP server refused the sender ({code} at MAIL FROM): {advice}"
        )
    return Failure(step, permanent, f"SMTP {code} at {step}")


def classify(error: BaseException, step: str) -> Failure:
    """What an error at an SMTP step means, in words an operator can act on."""
    if isinstance(error, StepFailed):
        return error.failure
    config = current_app.config
    where = f"{config['MAIL_SERVER']}:{config['MAIL_PORT']}"
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return Failure(
            step,
            True,
            f"SMTP login refused ({error.smtp_code}): check MAIL_USERNAME and MAIL_PASSWORD",
        )
    if isinstance(error, smtplib.SMTPConnectError):
        return Failure(
            "greeting",
            error.smtp_code >= 500,
            f"SMTP server {where} turned the connection away ({error.smtp_code} at greeting)",
        )
    if isinstance(error, smtplib.SMTPSenderRefused):
        return reply_failure("MAIL", error.smtp_code)
    if isinstance(error, smtplib.SMTPResponseException):
        if step in DESTINATION_STEPS:
            return Failure(
                step, error.smtp_code >= 500, f"SMTP server refused {step} ({error.smtp_code})"
            )
        return reply_failure(step, error.smtp_code)
    if isinstance(error, ssl.SSLCertVerificationError):
        return Failure(
            "TLS",
            False,
            f"TLS certificate rejected: {error.verify_message}: check MAIL_TLS_CA_FILE",
        )
    if isinstance(error, ssl.SSLError):
        return Failure(
            "TLS",
            False,
            f"TLS error: {error.reason or type(error).__name__}: check MAIL_USE_SSL and "
            "MAIL_USE_TLS against the server's port",
        )
    timed_out = isinstance(error, (TimeoutError, socket.timeout)) or (
        # smtplib reports a reply that never came as a disconnect; the timeout is its context.
        isinstance(error, smtplib.SMTPServerDisconnected)
        and isinstance(error.__context__, (TimeoutError, socket.timeout))
    )
    if step not in DESTINATION_STEPS:
        if timed_out:
            return Failure(step, False, "timed out")
        if isinstance(error, smtplib.SMTPServerDisconnected):
            return Failure(step, False, "connection closed by the server")
        if isinstance(error, (smtplib.SMTPException, OSError)):
            return Failure(step, False, type(error).__name__)
        return Failure(step, False, f"unexpected {type(error).__name__}")
    if timed_out:
        return Failure(
            step,
            False,
            f"SMTP server {where} did not answer within MAIL_TIMEOUT at {step}: check "
            "MAIL_SERVER, MAIL_PORT and MAIL_USE_SSL",
        )
    if isinstance(error, socket.gaierror):
        return Failure(step, False, f"SMTP server name {config['MAIL_SERVER']} did not resolve")
    if isinstance(error, smtplib.SMTPNotSupportedError):
        wanted = "STARTTLS" if step == "STARTTLS" else "AUTH"
        return Failure(
            step,
            False,
            f"SMTP server {where} does not offer {wanted}: check MAIL_USE_TLS (many servers offer "
            "AUTH only after STARTTLS)",
        )
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return Failure(step, False, f"SMTP server {where} closed the connection at {step}")
    if isinstance(error, ConnectionRefusedError):
        return Failure(
            step,
            False,
            f"SMTP server {where} refused the connection: check MAIL_SERVER and MAIL_PORT, and "
            "that it is running",
        )
    if isinstance(error, UnicodeEncodeError) and step == "AUTH":
        return Failure(
            step, True, "SMTP login impossible: MAIL_USERNAME and MAIL_PASSWORD must be ASCII"
        )
    if isinstance(error, (smtplib.SMTPException, OSError)):
        return Failure(step, False, f"{type(error).__name__} at {step} with {where}")
    return Failure(step, False, f"unexpected {type(error).__name__} at {step} with {where}")
