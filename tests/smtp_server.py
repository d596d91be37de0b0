"""A real SMTP server for tests: records what it receives and injects faults on demand."""

from __future__ import annotations

import asyncio
import atexit
import email
import email.policy
import logging
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from asyncio import sslproto
from collections.abc import Coroutine
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException

__all__ = ["FAULTS", "ReceivedMessage", "SMTPTestServer", "certificate"]

FAULTS = frozenset(
    {
        "greeting_421",
        "rcpt_452",
        "rcpt_550",
        "data_451",
        "data_554",
        "data_451_quoting",
        "data_550_quoting",
        "auth_535",
        "mail_451",
        "mail_550",
        "hang",
        "drop_after_data",
        "hang_after_data",
        "hang_in_data",
        "hold_after_data",
    }
)
TLS_MODES = (None, "starttls", "implicit")
_LOOP_CALL_TIMEOUT = 10.0

T = TypeVar("T")


def _drop_login_data_notice(record: logging.LogRecord) -> bool:
    """Filter out aiosmtpd's own deprecation notice, which it logs on every successful AUTH."""
    return not str(record.msg).startswith("Session.login_data is deprecated")


_log = logging.getLogger("mail.log")  # aiosmtpd's logger
_log.addFilter(_drop_login_data_notice)

# One certificate per process: key generation is the slowest part of setting up TLS.
_cert_lock = threading.Lock()
_cert_files: tuple[str, str] | None = None

# An explicit config keeps the result independent of the local openssl.cnf defaults; keyUsage and
# the key identifiers keep the self-signed certificate acceptable under VERIFY_X509_STRICT
# (the default in Python 3.13+ client contexts).
_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
x509_extensions = v3
prompt = no
[dn]
CN = localhost
[v3]
basicConstraints = critical, CA:TRUE
keyUsage = critical, digitalSignature, keyEncipherment, keyCertSign
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


def certificate() -> tuple[str, str]:
    """Return (cert_path, key_path) of a self-signed certificate for 127.0.0.1/localhost."""
    global _cert_files
    with _cert_lock:
        if _cert_files is None:
            directory = Path(tempfile.mkdtemp(prefix="smtp-test-cert-"))
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            config, cert, key = (
                directory / "openssl.cnf",
                directory / "cert.pem",
                directory / "key.pem",
            )
            config.write_text(_OPENSSL_CONFIG)
            command = [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-config",
                str(config),
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ]
            try:
                subprocess.run(command, check=True, capture_output=True, timeout=60)
            except FileNotFoundError as error:
                raise RuntimeError(
                    "SMTPTestServer needs the `openssl` command for TLS modes"
                ) from error
            except subprocess.CalledProcessError as error:
                raise RuntimeError(
                    f"openssl failed: {error.stderr.decode(errors='replace')}"
                ) from error
            _cert_files = (str(cert), str(key))
        return _cert_files


@dataclass
class ReceivedMessage:
    """One message accepted by the server (after the final dot)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message: EmailMessage = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Parse the raw DATA; CRLF is normalised so decoded text parts use plain newlines."""
        raw = self.data.replace(b"\r\n", b"\n")
        self.message = email.message_from_bytes(raw, policy=email.policy.default)

    def header(self, name: str) -> str | None:
        """Return the (RFC 2047 decoded) value of header `name`, or None if absent."""
        value = self.message.get(name)
        return None if value is None else str(value)

    @property
    def text(self) -> str | None:
        """Content of the text/plain body part, or None."""
        return self._body("plain")

    @property
    def html(self) -> str | None:
        """Content of the text/html body part, or None."""
        return self._body("html")

    def _body(self, subtype: str) -> str | None:
        """Content of the preferred body part of the given text subtype."""
        part = self.message.get_body(preferencelist=(subtype,))
        return None if part is None else cast(str, part.get_content())


class _SMTP(SMTP):
    """aiosmtpd's SMTP session, able to refuse at greeting time."""

    def __init__(self, handler: _Handler, *, greeting_421: bool, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._greeting_421 = greeting_421

    async def _handle_client(self) -> None:
        """Send 421 and close instead of the greeting when asked to."""
        if not self._greeting_421:
            await super()._handle_client()
            return
        try:
            await self.push("421 Service not available")
        except ConnectionError:  # the client already went away; nothing left to refuse
            pass
        if self.transport is not None:
            self.transport.close()


class _Handler:
    """aiosmtpd hooks that apply the server's current fault at each command."""

    def __init__(self, server: SMTPTestServer) -> None:
        self._server = server

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """Advertise AUTH only with credentials configured, or in auth_535 (logins must fail)."""
        session.host_name = hostname  # the 5-argument hook is responsible for this
        if self._server.auth is None and self._server.fault != "auth_535":
            responses = [line for line in responses if not line[4:].upper().startswith("AUTH")]
        return responses

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """Require authentication here: aiosmtpd's auth_required warns when TLS is not required."""
        if self._server.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        # Limits some providers set: MAIL commands per connection, or in all.
        mails = getattr(session, "mails", 0)
        per_connection = self._server.mail_per_connection
        if per_connection is not None and mails >= per_connection:
            return "421 4.7.0 Too many messages on this connection, reconnect"
        quota = self._server.mail_quota
        if quota is not None and self._server.mails_accepted >= quota:
            return "451 4.7.1 Sending quota reached, try again later"
        if self._server.fault == "mail_451":
            return "451 4.3.2 Sender temporarily rejected"
        if self._server.fault == "mail_550":
            return "550 5.7.1 Sender not allowed"
        session.mails = mails + 1  # type: ignore[attr-defined]
        self._server.mails_accepted += 1
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Refuse recipients in the rcpt_* modes."""
        fault = self._server.fault
        refusal = self._server.refuse_recipients.get(address)
        if refusal is not None:
            return refusal
        if fault == "rcpt_452":
            return "452 4.2.2 Mailbox full"
        if fault == "rcpt_550":
            return "550 5.1.1 User unknown"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Record the message unless a fault rejects or stalls it; drop, hang or hold the reply."""
        fault = self._server.fault
        parsed = email.message_from_bytes(
            envelope.original_content or b"", policy=email.policy.default
        )
        refusal = self._server.refuse_messages.get(str(parsed.get("X-Enquiry-ID", "")))
        if refusal == "drop":  # received, then the connection closes with no reply
            self._server._record(envelope)
            if server.transport is not None:
                server.transport.close()
            await asyncio.get_running_loop().create_future()
        if refusal is not None:
            return refusal
        if fault == "data_451":
            return "451 4.3.0 Temporary failure"
        if fault == "data_554":
            return "554 5.7.1 Rejected"
        if fault in ("data_451_quoting", "data_550_quoting"):
            # Some servers quote what they refuse: here, the message's Subject.
            raw = envelope.original_content or b""
            parsed = email.message_from_bytes(raw, policy=email.policy.default)
            subject = " ".join(str(parsed.get("Subject", "")).split())
            if fault == "data_451_quoting":
                return f"451 4.7.1 Greylisted, try again later: {subject}"
            return f"550 5.7.1 Refused as spam: {subject}"
        if fault == "hang_in_data":
            # Read after the 354 but never acknowledged: not accepted, so only kept in `stalled`.
            self._server._record(envelope, stalled=True)
            await asyncio.get_running_loop().create_future()
        self._server._record(envelope)
        while str(parsed.get("X-Enquiry-ID", "")) in self._server.hold_messages:
            await asyncio.sleep(0.01)
        if fault == "hold_after_data":
            # Accepted, but the 250 waits until the test changes the fault.
            while self._server.fault == "hold_after_data":
                await asyncio.sleep(0.01)
        if fault in ("drop_after_data", "hang_after_data"):
            if fault == "drop_after_data" and server.transport is not None:
                server.transport.close()
            # Never reply; the session task is cancelled when the connection goes away.
            await asyncio.get_running_loop().create_future()
        return "250 OK"

    async def handle_exception(self, error: Exception) -> str:
        """Log like aiosmtpd does, except a failed STARTTLS handshake (tests do that on purpose)."""
        if isinstance(error, TLSSetupException):
            _log.info("STARTTLS handshake failed: %r", error.__cause__)
        else:
            _log.exception("SMTP session exception")
        return f"500 Error: ({type(error).__name__}) {error}"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """Check LOGIN/PLAIN credentials; failure makes aiosmtpd answer 535 5.7.8."""
        expected = self._server.auth
        # One login per connection, however many mechanisms the client tries (smtplib tries
        # each one the server offers).
        if not getattr(session, "tried_login", False):
            session.tried_login = True  # type: ignore[attr-defined]
            self._server.logins += 1
            self._server.login_times.append(time.monotonic())
        ok = (
            self._server.fault != "auth_535"
            and expected is not None
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login, auth_data.password)
            == (expected[0].encode(), expected[1].encode())
        )
        return (
            AuthResult(success=True, auth_data=auth_data)
            if ok
            else AuthResult(success=False, handled=False)
        )


class _Connection(asyncio.Protocol):
    """Accepts a TCP connection and hands it to an SMTP session (via TLS if implicit), or hangs."""

    def __init__(self, server: SMTPTestServer) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Pick the behaviour for this connection from the fault set right now."""
        server = self._server
        server._track(cast(asyncio.Transport, transport))
        server.connections += 1
        fault = server.fault
        if fault == "hang":
            return  # keep the socket open and silent (no TLS handshake either); stop() aborts it
        smtp = server._new_session(greeting_421=fault == "greeting_421")
        protocol: asyncio.BaseProtocol = smtp
        if server.tls == "implicit":
            # TLS is layered per connection, after the fault check, so "hang" stays silent at the
            # TCP level and every raw socket (even mid-handshake) is tracked for stop().
            assert server._ssl_context is not None
            protocol = sslproto.SSLProtocol(
                asyncio.get_running_loop(),
                smtp,
                server._ssl_context,
                None,  # type: ignore[arg-type]  # no waiter: smtp.connection_made() follows success
                server_side=True,
            )
        cast(asyncio.Transport, transport).set_protocol(protocol)
        protocol.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """Ignore whatever a client sends to a hanging connection."""

    def eof_received(self) -> bool | None:
        """Let the transport close when a client gives up on a hanging connection."""
        return None


class SMTPTestServer:
    """SMTP server on 127.0.0.1 in a background thread, with switchable fault modes."""

    host: str = "127.0.0.1"

    def __init__(self, *, tls: str | None = None, auth: tuple[str, str] | None = None) -> None:
        if tls not in TLS_MODES:
            raise ValueError(f"tls must be one of {TLS_MODES}, not {tls!r}")
        self.tls = tls
        self.auth = auth
        self.port = 0
        self.cert_path = ""
        self._ssl_context: ssl.SSLContext | None = None
        if tls is not None:
            self.cert_path, key_path = certificate()
            self._ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ssl_context.load_cert_chain(self.cert_path, key_path)
        self.messages: list[ReceivedMessage] = []
        self.stalled: list[ReceivedMessage] = []  # read in hang_in_data mode, never acknowledged
        self.connections = 0  # TCP connections accepted
        self.mail_per_connection: int | None = None  # MAIL commands a connection may carry
        self.mail_quota: int | None = None  # MAIL commands accepted in all, then 451
        self.mails_accepted = 0
        self.logins = 0  # connections that tried to log in, successfully or not
        self.login_times: list[float] = []  # time.monotonic() of each of those
        # Replies that refuse one recipient at RCPT (address -> reply), or one message after
        # DATA (its X-Enquiry-ID -> reply, or "drop" to close the connection instead of
        # replying), whatever the fault mode.
        self.refuse_recipients: dict[str, str] = {}
        self.refuse_messages: dict[str, str] = {}
        # Messages (by X-Enquiry-ID) accepted but not answered while their id is in this set.
        self.hold_messages: set[str] = set()
        self._fault: str | None = None
        self._received = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._accepted: set[socket.socket] = set()  # accepted, not yet owned by a transport
        self._transports: set[asyncio.Transport] = set()

    @property
    def fault(self) -> str | None:
        """The fault applied to the next connection/command (None = behave normally)."""
        return self._fault

    @fault.setter
    def fault(self, value: str | None) -> None:
        # Reject typos loudly: an unknown mode would otherwise silently mean "no fault".
        if value is not None and value not in FAULTS:
            raise ValueError(f"unknown fault {value!r}; expected None or one of {sorted(FAULTS)}")
        self._fault = value

    def start(self) -> SMTPTestServer:
        """Bind (a free port the first time) and serve in a background thread."""
        if self._thread is not None:
            raise RuntimeError("SMTPTestServer already started")
        loop = asyncio.SelectorEventLoop()  # add_reader() is needed; Windows' default loop lacks it
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, args=(loop,), name="SMTPTestServer", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._listen())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close the listener and every open connection, then end the thread (idempotent)."""
        if self._thread is None or self._loop is None:
            return
        try:
            self._call(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_LOOP_CALL_TIMEOUT)
            self._thread = None
            self._loop = None

    def refuse(self) -> None:
        """Stop listening (connections get ConnectionRefusedError); open connections stay up."""
        self._require_started()
        self._call(self._unlisten())

    def restore(self) -> None:
        """Clear the fault and listen again on the same port if refuse() stopped listening."""
        self._require_started()
        self.fault = None
        self.refuse_recipients.clear()
        self.refuse_messages.clear()
        self.hold_messages.clear()
        self.mail_per_connection = self.mail_quota = None
        if self._listener is None:
            self._call(self._listen())

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until at least `count` messages were received; return a snapshot of them."""
        return self._wait(self.messages, count, timeout, "message(s)")

    def wait_for_stalled(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until at least `count` messages stalled in DATA; return a snapshot of them."""
        return self._wait(self.stalled, count, timeout, "stalled message(s)")

    def __enter__(self) -> SMTPTestServer:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    def __repr__(self) -> str:
        where, auth = f"{self.host}:{self.port}", self.auth is not None
        return f"<SMTPTestServer {where} tls={self.tls} auth={auth} fault={self.fault}>"

    # --- internals (the underscore methods below run on the server's event loop) ---

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        """Thread body: run the loop until stop(), then close it."""
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server loop and wait for its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_LOOP_CALL_TIMEOUT)

    def _wait(
        self, messages: list[ReceivedMessage], count: int, timeout: float, what: str
    ) -> list[ReceivedMessage]:
        """Block until `messages` holds at least `count` entries; return a snapshot of it."""
        with self._received:
            if not self._received.wait_for(lambda: len(messages) >= count, timeout):
                got = [(m.mail_from, m.rcpt_tos, m.header("Subject")) for m in messages]
                raise AssertionError(
                    f"SMTPTestServer {self.host}:{self.port} (tls={self.tls}, fault={self.fault}): "
                    f"expected at least {count} {what} within {timeout:g}s, "
                    f"got {len(got)}: {got}"
                )
            return list(messages)

    def _require_started(self) -> None:
        """Raise unless start() was called."""
        if self._thread is None:
            raise RuntimeError("SMTPTestServer is not started")

    async def _listen(self) -> None:
        """Bind 127.0.0.1:self.port (0 picks a free port) and start accepting."""
        # A hand-made accept loop instead of loop.create_server(): closing an asyncio Server while
        # a connection is being accepted leaks that socket (ResourceWarning) on Python 3.11.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(
                socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
            )  # rebind despite TIME_WAIT
            listener.bind((self.host, self.port))
            listener.listen(64)
            listener.setblocking(False)
        except OSError as error:
            listener.close()
            raise RuntimeError(
                f"SMTPTestServer could not listen on {self.host}:{self.port}: {error}"
            ) from error
        self.port = listener.getsockname()[1]
        self._listener = listener
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)

    async def _unlisten(self) -> None:
        """Close the listening socket; established connections are left alone."""
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None

    def _accept(self) -> None:
        """Accept one pending connection (the listener is readable) and serve it."""
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        conn.setblocking(False)
        self._accepted.add(conn)
        asyncio.get_running_loop().create_task(self._serve(conn))

    async def _serve(self, conn: socket.socket) -> None:
        """Wrap an accepted socket in a transport driven by a _Connection."""
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: _Connection(self), conn
            )
        finally:
            self._accepted.discard(conn)  # from here on the transport owns (and closes) it

    async def _shutdown(self) -> None:
        """Close the listener, every connection and every task, leaving no socket unclosed."""
        await self._unlisten()
        for transport in self._transports:
            transport.abort()
        self._transports.clear()
        await asyncio.sleep(0)  # let the scheduled connection_lost callbacks run
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in self._accepted:  # accepted, but its _serve() task never got to run
            conn.close()
        self._accepted.clear()
        for _ in range(3):  # closes triggered by the cancellations are scheduled, not immediate
            await asyncio.sleep(0)

    def _track(self, transport: asyncio.Transport) -> None:
        """Remember a connection so stop() can abort it."""
        # Forget fully closed transports (their protocol is reset to None) so the set stays small.
        self._transports = {t for t in self._transports if t.get_protocol() is not None}
        self._transports.add(transport)

    def _new_session(self, *, greeting_421: bool) -> _SMTP:
        """A fresh aiosmtpd session for one connection."""
        handler = _Handler(self)
        return _SMTP(
            handler,
            greeting_421=greeting_421,
            loop=self._loop,
            hostname="localhost",  # avoids a per-connection socket.getfqdn() DNS lookup
            enable_SMTPUTF8=True,
            tls_context=self._ssl_context if self.tls == "starttls" else None,
            require_starttls=False,
            auth_require_tls=False,  # tests may log in over plain connections
            authenticator=handler.authenticate,
        )

    def _record(self, envelope: Envelope, *, stalled: bool = False) -> None:
        """Append a received (or stalled) message and wake up the waiters."""
        message = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
        )
        with self._received:
            (self.stalled if stalled else self.messages).append(message)
            self._received.notify_all()
