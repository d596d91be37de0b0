"""No personal data in logs or listings: canary values sent down every path, then searched for."""

from __future__ import annotations

import logging
import re
import smtplib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import text

from service.delivery.worker import Worker
from service.intake import accept as intake
from tests.conftest import csrf_token, deliver_all, solve_captcha
from tests.smtp_server import SMTPTestServer
from tests.support import load, records

CANARY = {
    "name": "Canary-Name-7f3a",
    "email": "canary.7f3a@example.com",
    "phone": "+61 412 999 731",
    "message": "Canary-Message-7f3a\nplease call me back",
}
CANARY_E164 = "+61412999731"
# Every submitted value contains "canary" (no enquiry id can: ids are hex); the phone number is
# searched for in any grouping of its digits.
_CANARY_WORD = re.compile("canary", re.IGNORECASE)
_CANARY_PHONE = re.compile(r"[\s-]?".join("412999731"))
# The SMTP test server stands in for the clinic's mail provider: what it logs is not ours.
FOREIGN_LOGGERS = ("mail.log",)


def canaries_in(text: str) -> list[str]:
    """The canary fragments found in `text`."""
    return [
        match.group(0)
        for pattern in (_CANARY_WORD, _CANARY_PHONE)
        for match in pattern.finditer(text)
    ]


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    """The service at its most talkative: DEBUG logs."""
    return {**app_config, "LOG_LEVEL": "DEBUG"}


class Output:
    """Everything the process logged or printed during the test, gathered for searching."""

    def __init__(
        self, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
    ) -> None:
        self.caplog = caplog
        self.capsys = capsys
        self.printed = ""

    def text(self) -> str:
        """All log records (formatted, with any traceback) and all stdout/stderr so far."""
        captured = self.capsys.readouterr()
        self.printed += captured.out + captured.err
        ours = [r for r in self.caplog.records if not r.name.startswith(FOREIGN_LOGGERS)]
        logged = "\n".join(self.caplog.handler.format(record) for record in ours)
        arguments = "\n".join(repr(record.args) for record in ours)
        return "\n".join((logged, arguments, self.printed))

    def assert_clean(self, *extra: str) -> str:
        """Assert no canary appears anywhere in the output (or in `extra`); return the output."""
        everything = self.text()
        assert canaries_in(everything) == [], "personal data in the logs or on stdout/stderr"
        for item in extra:
            assert canaries_in(item) == [], f"personal data in {item!r}"
        return everything


@pytest.fixture
def output(
    app: Flask, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> Output:
    """Capture every log record at DEBUG (root logger included) and everything printed."""
    caplog.set_level(logging.DEBUG)
    return Output(caplog, capsys)


def post_api(client: FlaskClient, **overrides: Any) -> Any:
    """Send the canary enquiry (with any changes) through the JSON API."""
    return client.post(
        "/api/enquiries", json={**CANARY, "altcha": solve_captcha(client), **overrides}
    )


def post_page(client: FlaskClient, with_csrf: bool = True, **overrides: Any) -> Any:
    """Send the canary enquiry (with any changes) through the form page."""
    data = {**CANARY, "altcha": solve_captcha(client), **overrides}
    if with_csrf:
        data["csrf_token"] = csrf_token(client)
    return client.post("/contact", data=data)


def listings(runner: FlaskCliRunner) -> str:
    """What an operator sees from the listing commands (stdout and stderr)."""
    results = [runner.invoke(args=["outbox", "status"])]
    results += [
        runner.invoke(args=["outbox", "list", "--state", state])
        for state in ("pending", "sending", "sent", "failed")
    ]
    return "\n".join(result.output for result in results)


def test_canaries_are_findable(output: Output) -> None:
    # The search itself must work, or every test below would pass for nothing.
    found = canaries_in(f"{CANARY} {CANARY_E164} 0412-999-731")
    assert len(found) == 6
    logging.getLogger("service.test").warning("leak %s", CANARY_E164)
    with pytest.raises(AssertionError, match="personal data"):
        output.assert_clean()


def test_accepted_and_delivered_enquiries_leave_no_trace_in_logs(
    app: Flask,
    client: FlaskClient,
    runner: FlaskCliRunner,
    smtp_server: SMTPTestServer,
    output: Output,
) -> None:
    api = post_api(client)
    assert api.status_code == 202
    assert post_page(client).status_code == 303
    assert deliver_all(app) == 2
    for mail in smtp_server.wait_for(2):  # the canaries did go all the way through
        assert CANARY["name"] in mail.header("Subject") and CANARY["email"] in mail.header(
            "Reply-To"
        )
        assert CANARY_E164 in mail.text and CANARY["phone"] in mail.text
        assert "Canary-Message-7f3a" in mail.text
    output.assert_clean(listings(runner))
    for seen in (output.caplog.text, output.printed):  # both captures saw the service speak
        assert "accepted from the API" in seen and "accepted from the form page" in seen
        assert seen.count("delivered (attempt 1)") == 2
    shown = runner.invoke(args=["outbox", "show", api.get_json()["id"]]).stdout
    assert CANARY["name"] in shown and CANARY_E164 in shown, "`show` is where personal data belongs"


@pytest.mark.parametrize(
    "overrides",
    [
        {"altcha": "forged"},
        {"email": "canary.7f3a@"},
        {"phone": "+61 412 999 73"},
        {"name": "Canary-Name-7f3a\r\nBcc: x@evil.example"},
        {"message": "Canary-Message-7f3a " * 300},
        {"message": "Canary-Message-7f3a\x00"},
    ],
    ids=[
        "bad captcha",
        "bad email",
        "bad phone",
        "name with a line break",
        "message too long",
        "message with a control character",
    ],
)
def test_rejected_enquiries_leave_no_trace_in_logs(
    overrides: dict[str, str],
    app: Flask,
    client: FlaskClient,
    runner: FlaskCliRunner,
    output: Output,
) -> None:
    api = post_api(client, **overrides)
    assert api.status_code == 422
    page = post_page(client, **overrides)
    assert page.status_code == 422
    output.assert_clean(api.get_data(as_text=True), listings(runner))  # the API never echoes them


def test_an_expired_form_and_an_oversized_body_leave_no_trace_in_logs(
    app: Flask, client: FlaskClient, output: Output
) -> None:
    page = post_page(client, with_csrf=False)
    assert page.status_code == 400
    huge = post_api(client, message="Canary-Message-7f3a " * 4000)
    assert huge.status_code == 413
    logged = output.assert_clean(huge.get_data(as_text=True))
    assert "CSRF check failed" in logged


@pytest.mark.parametrize(
    ("fault", "state"),
    [
        ("data_451", "pending"),
        ("rcpt_452", "pending"),
        ("hang", "pending"),
        ("drop_after_data", "pending"),
        ("rcpt_550", "failed"),
        ("data_554", "failed"),
    ],
)
def test_smtp_failures_leave_no_trace_in_logs_or_listings(
    fault: str,
    state: str,
    app: Flask,
    client: FlaskClient,
    runner: FlaskCliRunner,
    smtp_server: SMTPTestServer,
    output: Output,
) -> None:
    enquiry_id = post_api(client).get_json()["id"]
    smtp_server.fault = fault
    if fault == "hang":  # short for the hang alone: a busy CI host is slow, not hanging
        app.config["MAIL_TIMEOUT"] = 0.5
    assert deliver_all(app) == 0
    enquiry = load(app, enquiry_id)
    assert enquiry.status == state and enquiry.last_error
    logged = output.assert_clean(enquiry.last_error, listings(runner))
    assert enquiry.last_error in logged
    if state == "failed":
        retried = runner.invoke(args=["outbox", "retry", "--all-failed"])
        output.assert_clean(retried.output)


def test_a_crash_while_building_the_email_leaves_no_trace_in_logs(
    app: Flask,
    client: FlaskClient,
    runner: FlaskCliRunner,
    smtp_server: SMTPTestServer,
    output: Output,
) -> None:
    app.config["CLINIC_TIMEZONE"] = "Nowhere/Atlantis"  # not a zone: building the email raises
    enquiry_id = post_api(client).get_json()["id"]
    assert deliver_all(app) == 0
    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.last_error) == ("failed", "unexpected ZoneInfoNotFoundError")
    output.assert_clean(listings(runner))
    [error, dead_letter] = records(output.caplog, logging.ERROR, "service.delivery.outbox")
    expected = f"unexpected error while delivering enquiry {enquiry_id}: ZoneInfoNotFoundError"
    assert expected in error.getMessage()
    assert "build_message" in error.getMessage(), "the traceback says where it happened"
    assert f"enquiry {enquiry_id} is a dead letter" in dead_letter.getMessage()
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    ("fault", "state", "reason"),
    [
        ("data_451_quoting", "pending", "SMTP 451 at DATA"),
        ("data_550_quoting", "failed", "SMTP 550 at DATA"),
    ],
)
def test_an_smtp_reply_quoting_the_visitor_leaves_no_trace_in_logs_or_listings(
    fault: str,
    state: str,
    reason: str,
    app: Flask,
    client: FlaskClient,
    runner: FlaskCliRunner,
    smtp_server: SMTPTestServer,
    output: Output,
) -> None:
    smtp_server.fault = fault
    # The server really does quote the visitor's name back (its reply to a plain smtplib client).
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("a@x.example", ["b@x.example"], f"Subject: {CANARY['name']}\r\n\r\nhi")
    assert CANARY["name"] in refused.value.smtp_error.decode()

    enquiry_id = post_api(client).get_json()["id"]
    assert deliver_all(app) == 0
    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.last_error) == (state, reason)
    shown = runner.invoke(args=["outbox", "show", enquiry_id]).stdout
    assert f"last_error: {reason}" in shown.splitlines()
    logged = output.assert_clean(listings(runner))
    assert reason in logged


@pytest.fixture
def store_without_page_url(app: Flask) -> Iterator[None]:
    """Damage the store as a bad manual migration would: the enquiries table loses a column."""
    with app.app_context():
        engine = app.extensions["store"].engine
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE enquiries DROP COLUMN page_url"))
        engine.dispose()  # no pooled connection may remember the old table
    yield


def test_a_crashing_store_leaves_no_trace_in_logs(
    app: Flask, client: FlaskClient, output: Output, store_without_page_url: None
) -> None:
    # The database's own error quotes the values it was given: it must never reach a log.
    with app.test_request_context(), pytest.raises(Exception) as crash:
        fields = {**CANARY, "phone": CANARY_E164, "page_url": None}
        intake.accept(fields, None)
    assert CANARY["name"] in str(crash.value)

    api = post_api(client)
    assert api.status_code == 500
    page = post_page(client)
    assert page.status_code == 500
    logged = output.assert_clean(api.get_data(as_text=True))
    assert len(records(output.caplog, logging.ERROR, "service.web.errors")) == 2
    assert "unhandled error on POST /api/enquiries" in logged


def test_a_crashing_worker_loop_leaves_no_trace_in_logs(
    app: Flask, client: FlaskClient, output: Output
) -> None:
    assert post_api(client).status_code == 202
    with app.app_context():
        engine = app.extensions["store"].engine
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE enquiries DROP COLUMN page_url"))
        engine.dispose()
    app.config["OUTBOX_POLL_SECONDS"] = 0.05
    worker = Worker(app, "privacy")
    thread = threading.Thread(target=worker.run, name="privacy-worker")
    thread.start()
    try:
        for _ in range(200):  # up to 10 s
            if records(output.caplog, logging.ERROR, "service.delivery.worker"):
                break
            worker.stopping.wait(0.05)
    finally:
        worker.stop()
        thread.join(5)
    [error, *_] = records(output.caplog, logging.ERROR, "service.delivery.worker")
    assert error.getMessage().startswith("delivery worker error: ")
    output.assert_clean()
