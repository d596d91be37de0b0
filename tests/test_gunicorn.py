"""`gunicorn wsgi:app` configured only by environment: form and JSON reach the inbox once each."""

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import altcha
import pytest

from tests.conftest import VALID
from tests.processes import Gunicorn, request
from tests.smtp_server import SMTPTestServer
from tests.support import SEAL_KEYS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def gunicorn(database_url: str, smtp_server: SMTPTestServer, tmp_path: Path) -> Iterator[Gunicorn]:
    """gunicorn serving wsgi:app in production mode, configured only through the environment."""
    env = {
        "SERVICE_ENV": "production",
        **SEAL_KEYS,  # one process: the embedded worker opens what the web tier sealed
        "SECRET_KEY": "gunicorn-test-secret",
        "CLINIC_INBOX": "front-desk@clinic.example",
        "MAIL_SERVER": smtp_server.host,
        "MAIL_PORT": str(smtp_server.port),
        "MAIL_DEFAULT_SENDER": "Clinic website <forms@clinic.example>",
        "DATABASE_URL": database_url,
        "AUTO_MIGRATE": "true",
        "OUTBOX_POLL_SECONDS": "0.5",
        "METRICS_TOKEN": "gunicorn-metrics-token",
        # The test fills the form faster than a person could; the spam trap has its own tests.
        "FORM_MIN_FILL_SECONDS": "0",
    }
    with Gunicorn(env, tmp_path / "gunicorn.log", workers=2) as running:
        yield running


@pytest.fixture
def server(gunicorn: Gunicorn) -> int:
    """The port of the running gunicorn."""
    return gunicorn.port


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


def test_two_workers_add_up_their_metrics_and_log_json_lines(gunicorn: Gunicorn) -> None:
    bad = json.dumps({**VALID, "email": "x@", "altcha": ""}).encode()
    for n in range(6):
        headers = {"Content-Type": "application/json", "X-Request-ID": f"flood-{n}"}
        status, answer, _ = request(gunicorn.port, "POST", "/api/enquiries", bad, headers)
        assert status in {422, 429} and answer["x-request-id"] == f"flood-{n}"
    auth = {"Authorization": "Bearer gunicorn-metrics-token"}
    status, _, body = request(gunicorn.port, "GET", "/metrics", headers=auth)
    assert status == 200
    samples = dict(
        line.rsplit(" ", 1) for line in body.decode().splitlines() if not line.startswith("#")
    )
    # Six requests spread over two workers, counted together through PROMETHEUS_MULTIPROC_DIR.
    assert float(samples['contact_form_request_seconds_count{route="api.create_enquiry"}']) == 6
    assert 'contact_form_outbox_enquiries{state="pending"}' in samples

    lines = [line for line in gunicorn.log().splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in lines]
    access = [e for e in entries if e["logger"] == "gunicorn.access"]
    app = [e for e in entries if e["logger"] == "service.requests"]
    assert {e["request_id"] for e in access} >= {f"flood-{n}" for n in range(6)}
    assert {e["request_id"] for e in app} >= {f"flood-{n}" for n in range(6)}
    assert not any("x@" in line or "Jane" in line for line in lines), "nothing the visitor typed"


def test_each_worker_starts_delivering_without_waiting_for_a_request(gunicorn: Gunicorn) -> None:
    # Only one request (the start-up health check) has reached one of the two workers; both
    # have a delivery thread, so a restarted server sends its backlog at once.
    deadline = time.monotonic() + 10
    while gunicorn.log().count("delivery worker") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    started = [line for line in gunicorn.log().splitlines() if "delivery worker" in line]
    assert len(started) == 2, gunicorn.log()


@pytest.mark.parametrize(
    ("kind", "headers"),
    [
        # Without "Expect: 100-continue", as browsers send: the whole body comes at once.
        ("json", ["-H", "Content-Type: application/json", "-H", "Expect:"]),
        ("form", ["-H", "Content-Type: application/x-www-form-urlencoded", "-H", "Expect:"]),
        ("form, curl's default", ["-H", "Content-Type: application/x-www-form-urlencoded"]),
        (
            "json, no keep-alive",
            ["-H", "Content-Type: application/json", "-H", "Expect:", "-H", "Connection: close"],
        ),
    ],
)
def test_curl_posting_a_megabyte_reads_the_413_and_its_message(
    server: int, tmp_path: Path, kind: str, headers: list[str]
) -> None:
    body = tmp_path / "big"
    body.write_bytes(b"message=" + b"x" * (8 * 1024 * 1024))
    path = "/api/enquiries" if kind == "json" else "/contact"
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            *headers,
            "--data-binary",
            f"@{body}",
            "--write-out",
            "\n%{http_code}",
            f"http://127.0.0.1:{server}{path}",
        ],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr.decode()
    text, _, status = result.stdout.decode().rpartition("\n")
    assert status == "413"
    assert "Please shorten your message to 5,000 characters or fewer" in text
