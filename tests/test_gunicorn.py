"""`gunicorn wsgi:app` configured only by environment: form and JSON reach the inbox once each."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import altcha
import pytest

from tests.conftest import VALID
from tests.smtp_server import SMTPTestServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(database_url: str, smtp_server: SMTPTestServer, tmp_path: Path) -> Iterator[int]:
    """gunicorn serving wsgi:app in production mode, configured only through the environment."""
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "SERVICE_ENV": "production",
        "SECRET_KEY": "gunicorn-test-secret",
        "CLINIC_INBOX": "front-desk@clinic.example",
        "MAIL_SERVER": smtp_server.host,
        "MAIL_PORT": str(smtp_server.port),
        "MAIL_DEFAULT_SENDER": "Clinic website <forms@clinic.example>",
        "DATABASE_URL": database_url,
        "AUTO_MIGRATE": "true",
        "OUTBOX_POLL_SECONDS": "0.5",
    }
    gunicorn = Path(sys.executable).with_name("gunicorn")
    log = open(tmp_path / "gunicorn.log", "wb")
    process = subprocess.Popen(
        [str(gunicorn), "--bind", f"127.0.0.1:{port}", "--workers", "2", "wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, _ = request(port, "GET", "/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
            assert time.monotonic() < deadline, "gunicorn did not come up"
            time.sleep(0.2)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def solve(port: int) -> str:
    _, _, body = request(port, "GET", "/altcha/challenge")
    challenge = altcha.Challenge.from_dict(json.loads(body))
    return altcha.Payload(challenge, altcha.solve_challenge(challenge)).to_base64()


def test_form_and_json_each_reach_the_inbox_once(server: int, smtp_server: SMTPTestServer) -> None:
    status, headers, page = request(server, "GET", "/contact")
    assert status == 200
    token = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1).decode()
    assert "set-cookie" not in headers  # the token in the form is all a post needs
    assert "frame-ancestors 'self'" in headers["content-security-policy"]
    form = urlencode(
        {**VALID, "name": "Form Visitor", "csrf_token": token, "altcha": solve(server)}
    )
    status, headers, _ = request(
        server,
        "POST",
        "/contact",
        form.encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 303 and headers["location"].endswith("/contact/thanks")

    body = json.dumps({**VALID, "name": "Api Visitor", "altcha": solve(server)}).encode()
    status, _, reply = request(
        server, "POST", "/api/enquiries", body, {"Content-Type": "application/json"}
    )
    assert status == 202 and json.loads(reply)["status"] == "queued"

    bad = json.dumps({**VALID, "email": "x@", "phone": "1", "altcha": "forged"}).encode()
    status, _, reply = request(
        server, "POST", "/api/enquiries", bad, {"Content-Type": "application/json"}
    )
    assert status == 422
    assert json.loads(reply)["errors"] == {
        "email": ["Invalid Email"],
        "phone": ["Invalid Number"],
        "altcha": ["Please check the captcha to verify you are not a robot."],
    }

    mails = smtp_server.wait_for(2, timeout=20)
    time.sleep(1.5)  # both workers have polled again: still exactly two
    assert len(smtp_server.messages) == 2
    subjects = sorted(m.header("Subject") for m in mails)
    assert subjects == ["New enquiry from Api Visitor", "New enquiry from Form Visitor"]
    for mail in mails:
        assert mail.header("Reply-To").endswith("<jane.citizen@example.com>")
        assert mail.header("From") == "Clinic website <forms@clinic.example>"
        assert mail.rcpt_tos == ["front-desk@clinic.example"]
