"""SMTP through Flask-Mail: connections with timeouts and verified TLS, and what failures mean."""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass

from flask import current_app
from flask_mail import Connection, Mail

mail = Mail()


class SMTPConnection(Connection):
    """Flask-Mail's connection with a timeout on every operation and verified TLS."""

    def configure_host(self) -> smtplib.SMTP:
        """Connect, secure and log in, each step bounded by MAIL_TIMEOUT."""
        config = current_app.config
        timeout = float(config["MAIL_TIMEOUT"])
        # Built only when used: loading the system CA bundle costs tens of milliseconds.
        context = tls_context() if self.mail.use_ssl or self.mail.use_tls else None
        host: smtplib.SMTP
        if self.mail.use_ssl:
            host = smtplib.SMTP_SSL(
                self.mail.server, self.mail.port, timeout=timeout, context=context
            )
        else:
            host = smtplib.SMTP(self.mail.server, self.mail.port, timeout=timeout)
        try:
            if self.mail.use_tls:
                host.starttls(context=context)
            if self.mail.username and self.mail.password:
                host.login(self.mail.username, self.mail.password)
        except BaseException:
            host.close()
            raise
        return host

    def close(self) -> None:
        """Say goodbye if the server is still listening; drop the socket either way."""
        if self.host is None:
            return
        try:
            self.host.quit()
        except (smtplib.SMTPException, OSError):
            self.host.close()
        self.host = None


def tls_context() -> ssl.SSLContext:
    """A context that verifies the server's certificate (optionally against MAIL_TLS_CA_FILE)."""
    return ssl.create_default_context(cafile=current_app.config.get("MAIL_TLS_CA_FILE") or None)


def connect() -> SMTPConnection:
    """Open an SMTP connection with the app's mail settings."""
    connection = SMTPConnection(current_app.extensions["mail"])
    connection.host = connection.configure_host()
    connection.num_emails = 0
    return connection


# The SMTP command each of smtplib's reply errors stands for.
_STAGES: dict[type[smtplib.SMTPResponseException], str] = {
    smtplib.SMTPConnectError: "greeting",
    smtplib.SMTPHeloError: "HELO",
    smtplib.SMTPSenderRefused: "MAIL",
    smtplib.SMTPDataError: "DATA",
}


@dataclass(frozen=True)
class Failure:
    """How a delivery attempt failed, in words fit for a log (no personal data)."""

    permanent: bool
    reason: str


def classify(error: BaseException) -> Failure:
    """Sort an SMTP error into transient (retry later) or permanent (a dead letter)."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in error.recipients.values()})
        permanent = any(code >= 500 for code in codes)
        return Failure(permanent, f"SMTP {', '.join(map(str, codes))} at RCPT")
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return Failure(True, f"SMTP {error.smtp_code} at AUTH")
    if isinstance(error, smtplib.SMTPResponseException):
        # Only the code: the server's own words may quote the message, and so the visitor.
        stage = _STAGES.get(type(error))
        where = f" at {stage}" if stage else ""
        return Failure(error.smtp_code >= 500, f"SMTP {error.smtp_code}{where}")
    if isinstance(error, ssl.SSLCertVerificationError):
        return Failure(False, f"TLS certificate rejected: {error.verify_message}")
    if isinstance(error, ssl.SSLError):
        return Failure(False, f"TLS error: {error.reason or type(error).__name__}")
    if isinstance(error, (TimeoutError, socket.timeout)):
        return Failure(False, "timed out")
    if isinstance(error, smtplib.SMTPServerDisconnected):
        # smtplib reports a reply that never came as a disconnect; the timeout is its context.
        if isinstance(error.__context__, (TimeoutError, socket.timeout)):
            return Failure(False, "timed out")
        return Failure(False, "connection closed by the server")
    if isinstance(error, socket.gaierror):
        return Failure(False, "mail server name did not resolve")
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return Failure(False, "server does not support a required extension (STARTTLS or AUTH)")
    if isinstance(error, (smtplib.SMTPException, OSError)):
        return Failure(False, type(error).__name__)
    return Failure(False, f"unexpected {type(error).__name__}")
