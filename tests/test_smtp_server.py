"""Exercise every SMTPTestServer mode with a real smtplib client over real sockets."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from tests.smtp_server import SMTPTestServer

TIMEOUT = 5.0  # generous for normal exchanges
HANG_TIMEOUT = 1.0  # client timeout for the modes that never answer; keeps the suite fast
SENDER = "form@example.org"
RECIPIENT = "owner@example.com"
CREDENTIALS = ("mailer", "s3cret")


def make_message(subject: str = "Contact form") -> EmailMessage:
    """A multipart/alternative message like a contact form would send."""
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = SENDER
    msg["To"] = RECIPIENT
    msg["Reply-To"] = "Zoë Visitor <visitor@example.net>"
    msg.set_content("Hello there\n.leading dot survives\n")
    msg.add_alternative("<p>Hello there</p>\n", subtype="html")
    return msg


def client(server: SMTPTestServer, timeout: float = TIMEOUT) -> smtplib.SMTP:
    """Plain smtplib connection to the server."""
    return smtplib.SMTP(server.host, server.port, timeout=timeout)


@pytest.fixture
def server() -> Iterator[SMTPTestServer]:
    with SMTPTestServer() as srv:
        yield srv


def test_accepts_and_records_message(server: SMTPTestServer) -> None:
    assert server.host == "127.0.0.1" and server.port > 0 and server.cert_path == ""
    with client(server) as smtp:
        assert smtp.send_message(make_message(), to_addrs=[RECIPIENT, "cc@example.com"]) == {}
        assert smtp.noop()[0] == 250
    [received] = server.wait_for(1)
    assert received.mail_from == SENDER
    assert received.rcpt_tos == [RECIPIENT, "cc@example.com"]
    assert received.header("Subject") == "Contact form"
    assert received.header("Reply-To") == "Zoë Visitor <visitor@example.net>"
    assert received.header("X-Missing") is None
    assert received.text == "Hello there\n.leading dot survives\n"
    assert received.html == "<p>Hello there</p>\n"
    # DATA is kept raw (CRLF) but dot-unstuffed.
    assert b"\r\n.leading dot survives\r\n" in received.data
    assert b"\r\n..leading" not in received.data


def test_esmtp_without_auth_does_not_advertise_auth(server: SMTPTestServer) -> None:
    with client(server) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("auth") and not smtp.has_extn("starttls")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            smtp.login(*CREDENTIALS)


def test_greeting_421_then_recovers(server: SMTPTestServer) -> None:
    server.fault = "greeting_421"
    with pytest.raises(smtplib.SMTPConnectError) as info:
        client(server)
    assert info.value.smtp_code == 421
    assert info.value.smtp_error == b"Service not available"
    server.fault = None
    with client(server) as smtp:
        smtp.send_message(make_message())
    assert len(server.wait_for(1)) == 1


@pytest.mark.parametrize(
    ("fault", "code", "text"),
    [("rcpt_452", 452, b"4.2.2 Mailbox full"), ("rcpt_550", 550, b"5.1.1 User unknown")],
)
def test_rcpt_faults(server: SMTPTestServer, fault: str, code: int, text: bytes) -> None:
    server.fault = fault
    with client(server) as smtp, pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        smtp.send_message(make_message())
    assert info.value.recipients == {RECIPIENT: (code, text)}
    assert server.messages == []


@pytest.mark.parametrize(
    ("fault", "code", "text"),
    [("data_451", 451, b"4.3.0 Temporary failure"), ("data_554", 554, b"5.7.1 Rejected")],
)
def test_data_faults(server: SMTPTestServer, fault: str, code: int, text: bytes) -> None:
    server.fault = fault
    with client(server) as smtp, pytest.raises(smtplib.SMTPDataError) as info:
        smtp.send_message(make_message())
    assert (info.value.smtp_code, info.value.smtp_error) == (code, text)
    assert server.messages == []


@pytest.mark.parametrize(
    ("fault", "code"), [("mail_451", 451), ("mail_550", 550)], ids=["mail_451", "mail_550"]
)
def test_mail_from_faults(server: SMTPTestServer, fault: str, code: int) -> None:
    server.fault = fault
    with client(server) as smtp, pytest.raises(smtplib.SMTPSenderRefused) as info:
        smtp.send_message(make_message())
    assert info.value.smtp_code == code
    assert server.messages == []


def test_one_recipient_refused_the_other_receives(server: SMTPTestServer) -> None:
    server.refuse_recipients["cc@example.com"] = "550 5.1.1 No such mailbox"
    with client(server) as smtp:
        refused = smtp.send_message(make_message(), to_addrs=[RECIPIENT, "cc@example.com"])
    assert refused == {"cc@example.com": (550, b"5.1.1 No such mailbox")}
    [received] = server.wait_for(1)
    assert received.rcpt_tos == [RECIPIENT]


def test_one_message_refused_by_its_enquiry_id(server: SMTPTestServer) -> None:
    server.refuse_messages["bad"] = "451 4.7.1 Content scan failed"
    chosen, other = make_message("chosen"), make_message("other")
    chosen["X-Enquiry-ID"], other["X-Enquiry-ID"] = "bad", "good"
    with client(server) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as info:
            smtp.send_message(chosen)
        assert info.value.smtp_code == 451
        smtp.send_message(other)  # the same connection carries the next message
    assert [m.header("Subject") for m in server.wait_for(1)] == ["other"]
    server.restore()
    assert server.refuse_messages == {} and server.refuse_recipients == {}


def test_fault_applies_to_next_command_on_open_connection(server: SMTPTestServer) -> None:
    with client(server) as smtp:
        smtp.send_message(make_message("first"))
        server.fault = "data_554"
        with pytest.raises(smtplib.SMTPDataError):
            smtp.send_message(make_message("second"))
        server.fault = None
        smtp.send_message(make_message("third"))
    assert [m.header("Subject") for m in server.wait_for(2)] == ["first", "third"]


def test_unknown_fault_is_rejected(server: SMTPTestServer) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        server.fault = "rcpt550"


def test_hang_times_out_and_does_not_block_stop() -> None:
    with SMTPTestServer() as server:
        server.fault = "hang"
        started = time.monotonic()
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            client(server, timeout=HANG_TIMEOUT)
        assert time.monotonic() - started < HANG_TIMEOUT + 1
        # A client still waiting for the greeting must not keep stop() waiting.
        with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
            time.sleep(0.2)  # let the server accept it (a connection still in the backlog gets RST)
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < 1
            assert sock.recv(1) == b""  # the server side is gone, without a greeting
    assert server.messages == []


def test_drop_after_data_records_but_never_replies(server: SMTPTestServer) -> None:
    server.fault = "drop_after_data"
    with client(server) as smtp, pytest.raises(smtplib.SMTPServerDisconnected):
        smtp.send_message(make_message())
    assert [m.header("Subject") for m in server.wait_for(1)] == ["Contact form"]


def test_hang_after_data_records_and_client_times_out(server: SMTPTestServer) -> None:
    server.fault = "hang_after_data"
    with client(server, timeout=HANG_TIMEOUT) as smtp:
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            smtp.send_message(make_message())
    assert len(server.wait_for(1)) == 1


def test_hang_in_data_reads_but_never_accepts(server: SMTPTestServer) -> None:
    server.fault = "hang_in_data"
    with client(server, timeout=HANG_TIMEOUT) as smtp:
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            smtp.send_message(make_message())
    assert [m.header("Subject") for m in server.wait_for_stalled(1)] == ["Contact form"]
    assert server.messages == []


def test_hold_after_data_replies_once_the_fault_changes(server: SMTPTestServer) -> None:
    server.fault = "hold_after_data"
    with client(server, timeout=HANG_TIMEOUT) as smtp:
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            smtp.send_message(make_message("timed out"))
    with client(server) as smtp:
        smtp.ehlo()
        smtp.mail(SENDER)
        smtp.rcpt(RECIPIENT)
        smtp.send(b"DATA\r\n")
        assert smtp.getreply()[0] == 354
        smtp.send(smtplib.quotedata(make_message("held").as_string()).encode() + b"\r\n.\r\n")
        assert server.wait_for(2)[-1].header("Subject") == "held"  # recorded before the reply
        server.fault = None
        assert smtp.getreply()[0] == 250
    assert server.stalled == []


def test_refuse_and_restore_on_same_port(server: SMTPTestServer) -> None:
    port = server.port
    server.fault = "data_554"
    server.refuse()
    with pytest.raises(ConnectionRefusedError):
        client(server)
    assert server.port == port
    server.restore()
    assert server.port == port and server.fault is None
    with client(server) as smtp:
        smtp.send_message(make_message())
    assert len(server.wait_for(1)) == 1


def test_wait_for_reports_clearly(server: SMTPTestServer) -> None:
    with pytest.raises(
        AssertionError, match=r"expected at least 1 message\(s\) within 0.1s, got 0"
    ):
        server.wait_for(1, timeout=0.1)


def test_auth_success_and_required() -> None:
    with SMTPTestServer(auth=CREDENTIALS) as server:
        with client(server) as smtp:
            with pytest.raises(smtplib.SMTPSenderRefused) as info:
                smtp.send_message(make_message())
            assert info.value.smtp_code == 530
        for mechanism in ("PLAIN", "LOGIN"):
            with client(server) as smtp:
                smtp.ehlo()
                assert smtp.has_extn("auth")
                smtp.user, smtp.password = CREDENTIALS
                code, _ = smtp.auth(mechanism, getattr(smtp, f"auth_{mechanism.lower()}"))
                assert code == 235
                smtp.send_message(make_message(mechanism))
        assert [m.header("Subject") for m in server.wait_for(2)] == ["PLAIN", "LOGIN"]
        with client(server) as smtp, pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            smtp.login(CREDENTIALS[0], "wrong")
        assert failed.value.smtp_code == 535


@pytest.mark.parametrize("auth", [CREDENTIALS, None], ids=["with-auth", "without-auth"])
def test_auth_535(auth: tuple[str, str] | None) -> None:
    with SMTPTestServer(auth=auth) as server:
        server.fault = "auth_535"
        with client(server) as smtp, pytest.raises(smtplib.SMTPAuthenticationError) as info:
            smtp.login(*CREDENTIALS)
        assert info.value.smtp_code == 535
        assert info.value.smtp_error == b"5.7.8 Authentication credentials invalid"
        assert server.logins == 1, "one login, though smtplib tried PLAIN and LOGIN"


def test_starttls_self_signed_rejected_by_default_context() -> None:
    with SMTPTestServer(tls="starttls") as server:
        with client(server) as smtp:
            smtp.ehlo()
            assert smtp.has_extn("starttls")
            with pytest.raises(ssl.SSLCertVerificationError):
                smtp.starttls(context=ssl.create_default_context())
        assert server.messages == []


def test_starttls_trusted_with_auth() -> None:
    with SMTPTestServer(tls="starttls", auth=CREDENTIALS) as server:
        assert server.cert_path
        context = ssl.create_default_context(cafile=server.cert_path)
        with client(server) as smtp:
            assert smtp.starttls(context=context)[0] == 220
            assert isinstance(smtp.sock, ssl.SSLSocket)
            smtp.login(*CREDENTIALS)
            smtp.send_message(make_message())
        assert len(server.wait_for(1)) == 1


def test_implicit_tls_self_signed_rejected_by_default_context() -> None:
    with SMTPTestServer(tls="implicit") as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            smtplib.SMTP_SSL(
                server.host, server.port, timeout=TIMEOUT, context=ssl.create_default_context()
            )


@pytest.mark.parametrize("hostname", ["127.0.0.1", "localhost"])
def test_implicit_tls_trusted(hostname: str) -> None:
    with SMTPTestServer(tls="implicit") as server:
        context = ssl.create_default_context(cafile=server.cert_path)
        context.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13+ clients verify strictly
        with smtplib.SMTP_SSL(hostname, server.port, timeout=TIMEOUT, context=context) as smtp:
            smtp.ehlo()
            assert not smtp.has_extn("starttls")
            smtp.send_message(make_message())
        assert len(server.wait_for(1)) == 1


def test_implicit_tls_faults() -> None:
    with SMTPTestServer(tls="implicit") as server:
        context = ssl.create_default_context(cafile=server.cert_path)
        server.fault = "greeting_421"
        with pytest.raises(smtplib.SMTPConnectError) as info:
            smtplib.SMTP_SSL(server.host, server.port, timeout=TIMEOUT, context=context)
        assert info.value.smtp_code == 421
        # "hang" is silent at the TCP level, so even the TLS handshake times out.
        server.fault = "hang"
        with pytest.raises(TimeoutError):
            smtplib.SMTP_SSL(server.host, server.port, timeout=HANG_TIMEOUT, context=context)
