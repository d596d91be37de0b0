"""SMTP faults: transient ones are retried with back-off, permanent ones wait for a person."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask_mail import Message

from service.delivery import message, outbox
from service.store import lifecycle
from service.store.models import Enquiry
from tests.conftest import deliver_all
from tests.support import (
    AppFactory,
    ServerFactory,
    assert_between,
    change,
    counts,
    enqueue,
    load,
    make_due,
    personal_data_in,
    records,
    seconds_until,
)

NO_ENQUIRIES = {"pending": 0, "sending": 0, "sent": 0, "failed": 0}


# --- transient faults: retried later, then delivered once ---------------------------------------


@dataclass(frozen=True)
class Transient:
    """A fault the outbox should wait out, and what it must record about it."""

    name: str
    reason: str  # last_error and the warning, exactly: no personal data, no server chatter
    fault: str | None = None  # the server's fault mode
    refuse: bool = False  # the server stops listening
    tls: str | None = None  # the server's TLS mode; the app uses the matching setting
    untrusted: bool = False  # the app does not (yet) trust the server's self-signed certificate
    copies: int = (
        1  # copies in the inbox in the end: 2 when the first was received but not confirmed
    )


TRANSIENT = [
    Transient("connection refused", "ConnectionRefusedError", refuse=True),
    Transient("421 at greeting", "SMTP 421 at greeting", fault="greeting_421"),
    Transient("452 at RCPT", "SMTP 452 at RCPT", fault="rcpt_452"),
    Transient("451 after DATA", "SMTP 451 at DATA", fault="data_451"),
    Transient("hang before greeting", "timed out", fault="hang"),
    Transient("hang before TLS handshake", "timed out", fault="hang", tls="implicit"),
    Transient(
        "drop after DATA", "connection closed by the server", fault="drop_after_data", copies=2
    ),
    Transient("hang after DATA", "timed out", fault="hang_after_data", copies=2),
    Transient(
        "STARTTLS self-signed certificate",
        "TLS certificate rejected: self-signed certificate",
        tls="starttls",
        untrusted=True,
    ),
    Transient(
        "implicit TLS self-signed certificate",
        "TLS certificate rejected: self-signed certificate",
        tls="implicit",
        untrusted=True,
    ),
]


@pytest.mark.parametrize("case", TRANSIENT, ids=lambda case: case.name)
def test_transient_fault_is_retried_later_then_delivered_once(
    case: Transient,
    make_app: AppFactory,
    make_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server(tls=case.tls)
    trusted = server.cert_path if case.tls and not case.untrusted else None
    app = make_app(server, MAIL_TIMEOUT=0.5, MAIL_TLS_CA_FILE=trusted)
    enquiry_id = enqueue(app.test_client())
    if case.refuse:
        server.refuse()
    server.fault = case.fault

    before = lifecycle.utcnow()
    assert deliver_all(app) == 0
    after = lifecycle.utcnow()

    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.attempts, enquiry.last_error) == ("pending", 1, case.reason)
    first_delay = timedelta(seconds=app.config["OUTBOX_RETRY_BASE_SECONDS"])
    assert_between(enquiry.next_attempt_at, before + first_delay, after + first_delay)
    assert 0 < seconds_until(enquiry.next_attempt_at) <= 60
    [warning] = records(caplog, logging.WARNING, "service")
    assert enquiry_id in warning.getMessage() and case.reason in warning.getMessage()
    assert not records(caplog, logging.ERROR, "service")
    assert personal_data_in(caplog.text) == []
    assert deliver_all(app) == 0, "nothing is tried again before the back-off ends"
    assert load(app, enquiry_id).attempts == 1

    server.restore()
    if case.untrusted:
        app.config["MAIL_TLS_CA_FILE"] = server.cert_path
    make_due(app, enquiry_id)
    assert deliver_all(app) == 1
    assert deliver_all(app) == 0

    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.attempts, enquiry.last_error) == ("sent", 2, None)
    assert len(server.messages) == case.copies
    assert {mail.header("Message-ID") for mail in server.messages} == {enquiry.message_id}
    assert counts(app) == {**NO_ENQUIRIES, "sent": 1}


@pytest.mark.parametrize(
    ("server_tls", "use_tls", "use_ssl", "reason"),
    [
        (None, False, True, "TLS error: WRONG_VERSION_NUMBER"),
        ("starttls", False, True, "TLS error: WRONG_VERSION_NUMBER"),
        (None, True, False, "server does not support a required extension (STARTTLS or AUTH)"),
        ("implicit", False, False, "timed out"),
    ],
    ids=[
        "implicit TLS to a plain server",
        "implicit TLS to a STARTTLS server",
        "STARTTLS to a server without it",
        "plain to an implicit TLS server",
    ],
)
def test_tls_handshake_failure_is_transient_and_named(
    server_tls: str | None,
    use_tls: bool,
    use_ssl: bool,
    reason: str,
    make_app: AppFactory,
    make_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server(tls=server_tls)
    app = make_app(
        server,
        MAIL_USE_TLS=use_tls,
        MAIL_USE_SSL=use_ssl,
        MAIL_TIMEOUT=0.5,
        MAIL_TLS_CA_FILE=server.cert_path or None,
    )
    enquiry_id = enqueue(app.test_client())
    assert deliver_all(app) == 0
    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.attempts, enquiry.last_error) == ("pending", 1, reason)
    assert 0 < seconds_until(enquiry.next_attempt_at) <= 60
    assert server.messages == []
    assert personal_data_in(caplog.text) == []


# --- permanent faults: a dead letter at once, until an operator retries it ----------------------


@dataclass(frozen=True)
class Permanent:
    """A fault retrying cannot cure, and what it must record about it."""

    name: str
    reason: str
    fault: str | None = None  # the server's fault mode
    wrong_password: bool = False  # the server wants ("user", "pw"); the app has another password


PERMANENT = [
    Permanent("550 at RCPT", "SMTP 550 at RCPT", fault="rcpt_550"),
    Permanent("554 after DATA", "SMTP 554 at DATA", fault="data_554"),
    Permanent("535 at AUTH", "SMTP 535 at AUTH", wrong_password=True),
]


@pytest.mark.parametrize(
    "retry_args", [["{id}"], ["--all-failed"]], ids=["retry ID", "retry --all-failed"]
)
@pytest.mark.parametrize("case", PERMANENT, ids=lambda case: case.name)
def test_permanent_fault_is_a_dead_letter_until_retried(
    case: Permanent,
    retry_args: list[str],
    make_app: AppFactory,
    make_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server(auth=("user", "pw") if case.wrong_password else None)
    login = (
        {"MAIL_USERNAME": "user", "MAIL_PASSWORD": "not-the-password"}
        if case.wrong_password
        else {}
    )
    app = make_app(server, **login)
    client = app.test_client()
    enquiry_id = enqueue(client)
    server.fault = case.fault

    before = lifecycle.utcnow()
    assert deliver_all(app) == 0
    after = lifecycle.utcnow()

    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.attempts, enquiry.last_error) == ("failed", 1, case.reason)
    assert enquiry.failed_at is not None
    assert_between(enquiry.failed_at, before, after)
    [error] = records(caplog, logging.ERROR, "service")
    assert error.name == "service.delivery.outbox"
    assert enquiry_id in error.getMessage() and case.reason in error.getMessage()
    assert "permanent failure" in error.getMessage()
    assert not records(caplog, logging.WARNING, "service")
    assert personal_data_in(caplog.text) == []

    health = client.get("/readyz")
    assert health.status_code == 200
    assert health.get_json() == {"status": "degraded", "outbox": {**NO_ENQUIRIES, "failed": 1}}
    status = app.test_cli_runner().invoke(args=["outbox", "status"])
    assert status.exit_code == 1, status.output
    assert "failed   1" in status.output.splitlines()
    assert "flask outbox list --state failed" in status.stderr
    make_due(app, enquiry_id)
    assert deliver_all(app) == 0, "a dead letter waits for a person, however due it looks"
    assert load(app, enquiry_id).status == "failed"

    # The cause goes away (the operator fixes the password and restarts), then requeues it.
    server.restore()
    if case.wrong_password:
        app = make_app(server, MAIL_USERNAME="user", MAIL_PASSWORD="pw")
    args = [arg.format(id=enquiry_id) for arg in retry_args]
    result = app.test_cli_runner().invoke(args=["outbox", "retry", *args])
    assert result.exit_code == 0, result.output
    assert result.stdout == "Queued 1 enquiries again.\n"
    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.failed_at) == ("pending", None)
    assert seconds_until(enquiry.next_attempt_at) <= 0

    assert deliver_all(app) == 1
    assert deliver_all(app) == 0
    [mail] = server.messages
    assert mail.header("Message-ID") == enquiry.message_id
    assert (load(app, enquiry_id).status, load(app, enquiry_id).attempts) == ("sent", 2)
    assert app.test_client().get("/readyz").get_json()["status"] == "ok"


def test_permanent_failure_does_not_hold_back_the_rest_of_the_batch(
    app: Flask, client, smtp_server, caplog
) -> None:
    ids = [enqueue(client) for _ in range(3)]
    smtp_server.fault = "data_554"
    assert deliver_all(app) == 0
    for enquiry_id in ids:
        enquiry = load(app, enquiry_id)
        assert (enquiry.status, enquiry.attempts, enquiry.last_error) == (
            "failed",
            1,
            "SMTP 554 at DATA",
        )
    assert len(records(caplog, logging.ERROR, "service.delivery.outbox")) == 3


# --- back-off and giving up ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(0, 30), (1, 30), (2, 60), (3, 120), (4, 240), (5, 300), (6, 300), (1000, 300)],
)
def test_backoff_doubles_per_attempt_up_to_the_cap(attempts: int, seconds: int) -> None:
    app = Flask(__name__)
    app.config.update(OUTBOX_RETRY_BASE_SECONDS=30, OUTBOX_RETRY_MAX_SECONDS=300)
    with app.app_context():
        assert outbox.backoff(attempts) == timedelta(seconds=seconds)


def test_retry_times_double_up_to_the_cap_through_real_failures(
    app: Flask, client, smtp_server
) -> None:
    app.config.update(OUTBOX_RETRY_BASE_SECONDS=30, OUTBOX_RETRY_MAX_SECONDS=200)
    enquiry_id = enqueue(client)
    smtp_server.refuse()
    for attempt, delay in enumerate([30, 60, 120, 200, 200], start=1):
        make_due(app, enquiry_id)
        before = lifecycle.utcnow()
        assert deliver_all(app) == 0
        after = lifecycle.utcnow()
        enquiry = load(app, enquiry_id)
        assert (enquiry.status, enquiry.attempts) == ("pending", attempt)
        assert_between(
            enquiry.next_attempt_at,
            before + timedelta(seconds=delay),
            after + timedelta(seconds=delay),
        )


@pytest.mark.parametrize(
    ("give_up_seconds", "queued_seconds_ago", "status"),
    [
        (0, 0, "failed"),  # no patience at all: the first transient failure is final
        (1, 2, "failed"),  # queued longer ago than the window
        (60, 0, "pending"),  # within the window: try again later
        (60, 120, "failed"),
    ],
)
def test_transient_failures_give_up_after_the_window(
    give_up_seconds: int,
    queued_seconds_ago: int,
    status: str,
    app: Flask,
    client,
    smtp_server,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app.config["OUTBOX_GIVE_UP_SECONDS"] = give_up_seconds
    enquiry_id = enqueue(client)
    change(app, enquiry_id, queued_at=lifecycle.utcnow() - timedelta(seconds=queued_seconds_ago))
    smtp_server.fault = "data_451"
    assert deliver_all(app) == 0

    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.attempts, enquiry.last_error) == (
        status,
        1,
        "SMTP 451 at DATA",
    )
    errors = records(caplog, logging.ERROR, "service")
    if status == "failed":
        assert enquiry.failed_at is not None
        [error] = errors
        assert "gave up after retrying" in error.getMessage() and enquiry_id in error.getMessage()
        assert counts(app)["failed"] == 1
    else:
        assert errors == [] and enquiry.failed_at is None
    assert personal_data_in(caplog.text) == []


def test_a_retried_dead_letter_gets_a_fresh_give_up_window(
    app: Flask, client, smtp_server, runner
) -> None:
    app.config["OUTBOX_GIVE_UP_SECONDS"] = 1
    enquiry_id = enqueue(client)
    change(app, enquiry_id, queued_at=lifecycle.utcnow() - timedelta(seconds=5))
    smtp_server.refuse()
    deliver_all(app)
    assert load(app, enquiry_id).status == "failed"

    assert (
        runner.invoke(args=["outbox", "retry", enquiry_id]).stdout == "Queued 1 enquiries again.\n"
    )
    deliver_all(app)  # still down, but the clock started again at the retry
    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.attempts) == ("pending", 2)


# --- batches ------------------------------------------------------------------------------------


def test_transient_failure_releases_the_rest_of_the_batch_uncounted(
    app: Flask, client, smtp_server, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [enqueue(client) for _ in range(3)]
    smtp_server.fault = "rcpt_452"
    assert deliver_all(app) == 0

    enquiries = [load(app, enquiry_id) for enquiry_id in ids]
    [tried] = [enquiry for enquiry in enquiries if enquiry.attempts == 1]
    assert tried.last_error == "SMTP 452 at RCPT"
    for enquiry in enquiries:
        assert enquiry.status == "pending" and enquiry.lease_expires_at is None
        if enquiry is not tried:
            assert (enquiry.attempts, enquiry.last_error) == (0, None)
            assert enquiry.next_attempt_at == tried.next_attempt_at, (
                "they wait with the one that failed"
            )
    assert len(records(caplog, logging.WARNING, "service.delivery.outbox")) == 1

    smtp_server.restore()
    make_due(app, *ids)
    assert deliver_all(app) == 3
    assert sorted(load(app, enquiry_id).attempts for enquiry_id in ids) == [1, 1, 2]
    assert len(smtp_server.messages) == 3


def damage_the_record(app: Flask, monkeypatch: pytest.MonkeyPatch, enquiry_id: str) -> str:
    """Its arrival time cannot be shown in the clinic's time zone: building its email overflows."""
    app.config["CLINIC_TIMEZONE"] = "America/New_York"
    change(app, enquiry_id, created_at=datetime(1, 1, 1, tzinfo=UTC))
    return "OverflowError"


def break_the_builder(app: Flask, monkeypatch: pytest.MonkeyPatch, enquiry_id: str) -> str:
    """A bug in our own email builder meets this enquiry; its error quotes the visitor."""
    build = message.build_message

    def build_or_raise(enquiry: Enquiry) -> Message:
        if enquiry.id == enquiry_id:
            raise ValueError(f"cannot encode {enquiry.name} <{enquiry.email}>")
        return build(enquiry)

    monkeypatch.setattr(message, "build_message", build_or_raise)
    return "ValueError"


@pytest.mark.parametrize(
    "poison", [damage_the_record, break_the_builder], ids=["damaged record", "builder bug"]
)
def test_an_enquiry_whose_email_cannot_be_built_is_a_dead_letter_and_the_batch_goes_on(
    poison: Callable[[Flask, pytest.MonkeyPatch, str], str],
    app: Flask,
    client,
    smtp_server,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, poisoned, third = ids = [enqueue(client) for _ in range(3)]
    now = lifecycle.utcnow()
    for position, enquiry_id in enumerate(ids):  # the order the worker claims them in
        change(app, enquiry_id, next_attempt_at=now - timedelta(seconds=10 - position))
    error_type = poison(app, monkeypatch, poisoned)

    assert deliver_all(app) == 2, "one pass delivers the rest of the batch"
    done, broken, also_done = (load(app, enquiry_id) for enquiry_id in ids)
    for delivered in (done, also_done):
        assert (delivered.status, delivered.attempts) == ("sent", 1)
    assert (broken.status, broken.attempts, broken.last_error) == (
        "failed",
        1,
        f"unexpected {error_type}",
    )
    assert broken.failed_at is not None
    assert sorted(mail.header("Message-ID") for mail in smtp_server.messages) == sorted(
        (done.message_id, also_done.message_id)
    )
    errors = [
        record.getMessage() for record in records(caplog, logging.ERROR, "service.delivery.outbox")
    ]
    assert any(
        f"enquiry {poisoned} is a dead letter" in error and f"unexpected {error_type}" in error
        for error in errors
    )
    assert any(f"while delivering enquiry {poisoned}: {error_type}" in error for error in errors)
    assert personal_data_in(caplog.text) == [], "the exception's message is never logged"
    health = client.get("/readyz").get_json()
    assert health == {"status": "degraded", "outbox": {**NO_ENQUIRIES, "sent": 2, "failed": 1}}


def test_an_unexpected_error_while_connecting_holds_the_batch_back(
    make_app: AppFactory, make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # smtplib cannot send a non-ASCII password: the fault is the settings', not an enquiry's.
    server = make_server(auth=("user", "pw"))
    app = make_app(server, MAIL_USERNAME="user", MAIL_PASSWORD="pässword")
    ids = [enqueue(app.test_client()) for _ in range(3)]
    assert deliver_all(app) == 0
    enquiries = [load(app, enquiry_id) for enquiry_id in ids]
    assert sorted(enquiry.attempts for enquiry in enquiries) == [0, 0, 1]
    assert {enquiry.status for enquiry in enquiries} == {"pending"}
    assert counts(app) == {**NO_ENQUIRIES, "pending": 3}
    [error] = records(caplog, logging.ERROR, "service.delivery.outbox")
    assert "unexpected error while delivering enquiry" in error.getMessage()
    assert "UnicodeEncodeError" in error.getMessage()
