"""A stand-in for the captcha providers' siteverify endpoints: real HTTP on 127.0.0.1, in a thread.

It answers as reCAPTCHA, hCaptcha or Turnstile answer, in each one's reply format: it accepts
each token it issued once, honours the providers' documented test secrets as they do, and can
be told to refuse with an error code, fail with an HTTP status, send a body that is not the
JSON expected, report another hostname, or never answer at all. It records what it received.
"""

from __future__ import annotations

import http.server
import json
import secrets
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from tests.served import ServedInThread

PROVIDERS = ("recaptcha", "hcaptcha", "turnstile")

# The providers' documented test keys: (site key, secret key, token the test widget produces).
TEST_KEYS = {
    "recaptcha": (
        "6LeIxAcTAAAAAJcZVRqyHh71UMIEGNQ_MXjiZKhI",
        "6LeIxAcTAAAAAGG-vFI1TnRWxMZNFuojJ4WifJWe",
        "any-token-the-test-widget-made",
    ),
    "hcaptcha": (
        "10000000-ffff-ffff-ffff-000000000001",
        "0x0000000000000000000000000000000000000000",
        "10000000-aaaa-bbbb-cccc-000000000001",
    ),
    "turnstile": (
        "1x00000000000000000000AA",
        "1x0000000000000000000000000000000AA",
        "XXXX.DUMMY.TOKEN.XXXX",
    ),
}
TURNSTILE_FAILING_SITE_KEY = "2x00000000000000000000AB"
TURNSTILE_FAILING_SECRET = "2x0000000000000000000000000000000AA"
TURNSTILE_SPENT_SECRET = "3x0000000000000000000000000000000AA"
# What the test keys report as the hostname: a placeholder, never the site's.
PLACEHOLDER_HOSTNAMES = {
    "recaptcha": "testkey.google.com",
    "hcaptcha": "dummy-key-pass",
    "turnstile": "example.com",
}
# Each provider's code for a token it has seen before.
DUPLICATE = {
    "recaptcha": "timeout-or-duplicate",
    "hcaptcha": "invalid-or-already-seen-response",
    "turnstile": "timeout-or-duplicate",
}
# The documented error codes: those all three share, and each provider's own.
COMMON_CODES = (
    "missing-input-secret",
    "invalid-input-secret",
    "missing-input-response",
    "invalid-input-response",
    "bad-request",
)
ERROR_CODES = {
    "recaptcha": (*COMMON_CODES, "timeout-or-duplicate"),
    "hcaptcha": (
        *COMMON_CODES,
        "expired-input-response",
        "already-seen-response",
        "invalid-or-already-seen-response",
        "missing-remoteip",
        "invalid-remoteip",
        "not-using-dummy-passcode",
        "sitekey-secret-mismatch",
    ),
    "turnstile": (
        *COMMON_CODES,
        "timeout-or-duplicate",
        "invalid-widget-id",
        "invalid-parsed-secret",
        "internal-error",
    ),
}
SITE_KEY = "stand-in-site-key"


class SiteverifyServer(ServedInThread):
    """One provider's siteverify endpoint on 127.0.0.1, answering until the `with` block ends."""

    def __init__(self, provider: str, hostname: str = "localhost") -> None:
        self.provider = provider
        self.site_key = SITE_KEY
        self.secret = f"stand-in-secret-{secrets.token_hex(8)}"
        # The hostname a real token reports: where its widget was solved.
        self.hostname = hostname
        self.received: list[dict[str, str]] = []
        self._issued: dict[str, bool] = {}  # token -> used
        self._scripted: dict[str, Any] | None = None
        self._release = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                fields: dict[str, str] = {}
                # Like the providers, read the form encoding only: anything else has no secret.
                if self.headers.get_content_type() == "application/x-www-form-urlencoded":
                    fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
                status, reply = server._reply(fields)
                if status is None:
                    return  # hung until the test ended; the client has long given up
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        http_server.daemon_threads = True
        self.serve(http_server, poll_interval=0.05)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/siteverify"

    def issue(self) -> str:
        """A fresh token, as the provider's widget gets once a visitor passes; good once."""
        token = f"{self.provider}.{secrets.token_urlsafe(48)}"
        with self._lock:
            self._issued[token] = False
        return token

    def refuse(self, *codes: str) -> None:
        """From now on refuse every token with these error codes."""
        self._scripted = {"codes": list(codes)}

    def fail(self, status: int) -> None:
        """From now on answer every request with this HTTP status."""
        self._scripted = {"status": status}

    def send(self, body: bytes) -> None:
        """From now on answer every request with this body (status 200)."""
        self._scripted = {"body": body}

    def hang(self) -> None:
        """From now on never answer (until the test ends)."""
        self._scripted = {"hang": True}

    def _reply(self, fields: dict[str, str]) -> tuple[int | None, bytes]:
        with self._lock:
            self.received.append(fields)
        scripted = self._scripted
        if scripted is None:
            return 200, self._json(self._verdict(fields))
        if "hang" in scripted:
            self._release.wait(30)
            return None, b""
        if "status" in scripted:
            return scripted["status"], b'{"error": "the stand-in was told to fail"}'
        if "body" in scripted:
            return 200, scripted["body"]
        return 200, self._json(self._failure(scripted["codes"]))

    def _verdict(self, fields: dict[str, str]) -> dict[str, Any]:
        """What the real provider would answer."""
        secret, token = fields.get("secret"), fields.get("response")
        test_site_key, test_secret, dummy_token = TEST_KEYS[self.provider]
        if not secret:
            return self._failure(["missing-input-secret"])
        if self.provider == "turnstile" and secret == TURNSTILE_FAILING_SECRET:
            return self._failure(["invalid-input-response"])
        if self.provider == "turnstile" and secret == TURNSTILE_SPENT_SECRET:
            return self._failure(["timeout-or-duplicate"])
        if secret not in {self.secret, test_secret}:
            return self._failure(["invalid-input-secret"])
        if not token:
            return self._failure(["missing-input-response"])
        if secret == test_secret:
            # hCaptcha's test secret takes only its test token; the others take any token.
            if self.provider == "hcaptcha" and token != dummy_token:
                return self._failure(["not-using-dummy-passcode"])
            return self._success(PLACEHOLDER_HOSTNAMES[self.provider])
        if self.provider == "hcaptcha" and fields.get("sitekey", self.site_key) != self.site_key:
            return self._failure(["sitekey-secret-mismatch"])
        with self._lock:
            used = self._issued.get(token)
            if used is None:
                return self._failure(["invalid-input-response"])
            if used:
                return self._failure([DUPLICATE[self.provider]])
            self._issued[token] = True
        return self._success(self.hostname)

    def _success(self, hostname: str) -> dict[str, Any]:
        now = datetime.now(UTC)
        reply: dict[str, Any] = {"success": True, "hostname": hostname}
        if self.provider == "turnstile":
            reply["challenge_ts"] = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            reply.update({"error-codes": [], "action": "", "cdata": "", "metadata": {}})
        else:
            reply["challenge_ts"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.provider == "hcaptcha":
            reply["credit"] = False
        return reply

    def _failure(self, codes: list[str]) -> dict[str, Any]:
        reply: dict[str, Any] = {"success": False, "error-codes": codes}
        if self.provider == "turnstile":
            reply["messages"] = []
        return reply

    @staticmethod
    def _json(reply: dict[str, Any]) -> bytes:
        return json.dumps(reply).encode()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release.set()  # let any hung reply finish
        super().__exit__(exc_type, exc, tb)
