"""SMTP faults, by the step that failed.

The server's own (connect, TLS, EHLO, STARTTLS, AUTH, MAIL FROM) pause the whole queue with one
back-off and no dead letters; a message's own (RCPT for every inbox, DATA, the reply after the
final dot) back off or end that message alone, and the batch goes on; an inbox's own refusal is
retried, or recorded, for that inbox alone.
"""

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
from tests.smtp_server import SMTPTestServer
from tests.support import (
    AppFactory,
    ServerFactory,
    assert_between,
    change,
    counts,
    enqueue,
    load,
    make_due,
    make_server_due,
    personal_data_in,
    records,
    smtp_health,
)

NO_ENQUIRIES = {"pending": 0, "sending": 0, "sent": 0, "failed": 0, "held": 0}
FRONT_DESK = "front-desk@clinic.example"
PHYSIO = "physio@clinic.example"


# --- the server's own faults: the whole queue waits, nothing is tried or given up --------------


@dataclass(frozen=True)
class ServerFault:
    """A fault of the SMTP server or of our settings for it, and the reason it must be given."""

    name: str
    reason: str  # exactly; {where} is the server's host:port
    fault: str | None = None  # the server's fault mode
    refuse: bool = False  # the server stops listening
    tls: str | None = None  # the server's TLS mode; the app uses the matching setting
    untrusted: bool = False  # the app does not (yet) trust the server's self-signed certificate
    wrong_password: bool = False  # the server wants ("user", "pw"); the app has another password
    copies: int = 1


UNREACHABLE = (
    "SMTP server {where} did not answer within MAIL_TIMEOUT at connect: check MAIL_SERVER, "
    "MAIL_PORT and MAIL_USE_SSL"
)
SERVER_FAULTS = [
    ServerFault(
        "connection refused",
        "SMTP server {where} refused the connection: check MAIL_SERVER and MAIL_PORT, and that "
        "it is running",
        refuse=True,
    ),
    ServerFault(
        "421 at greeting",
        "SMTP server {where} turned the connection away (421 at greeting)",
        fault="greeting_421",
    ),
    ServerFault("hang before greeting", UNREACHABLE, fault="hang"),
    ServerFault("hang before TLS handshake", UNREACHABLE, fault="hang", tls="implicit"),
    ServerFault(
        "STARTTLS self-signed certificate",
        "TLS certificate rejected: self-signed certificate: check MAIL_TLS_CA_FILE",
        tls="starttls",
        untrusted=True,
    ),
    ServerFault(
        "implicit TLS self-signed certificate",
        "TLS certificate rejected: self-signed certificate: check MAIL_TLS_CA_FILE",
        tls="implicit",
        untrusted=True,
    ),
    ServerFault(
        "535 at AUTH",
        "SMTP login refused (535): check MAIL_USERNAME and MAIL_PASSWORD",
        wrong_password=True,
    ),
    ServerFault(
        "550 at MAIL FROM",
        "SMTP server refused the sender (550 at MAIL FROM): check MAIL_DEFAULT_SENDER, and that "
        "the account may send as that address",
        fault="mail_550",
    ),
    ServerFault(
        "451 at MAIL FROM",
        "SMTP server refused the sender (451 at MAIL FROM): check MAIL_DEFAULT_SENDER, and that "
        "the account may send as that address",
        fault="mail_451",
    ),
]


def scrape(app: Flask) -> str:
    """The app's /metrics, as a scraper with the token reads them."""
    app.config["METRICS_TOKEN"] = "scrape-token"
    response = app.test_client().get("/metrics", headers={"Authorization": "Bearer scrape-token"})
    assert response.status_code == 200
    return response.get_data(as_text=True)


def health_step(case: ServerFault) -> str:
    """The SMTP step at which the case fails."""
    if case.wrong_password:
        return "AUTH"
    if case.fault and case.fault.startswith("mail_"):
        return "MAIL"
    if case.untrusted:
        return "TLS"
    return "greeting" if case.fault == "greeting_421" else "connect"


@pytest.mark.parametrize("case", SERVER_FAULTS, ids=lambda case: case.name)
def test_a_server_fault_pauses_the_queue_without_trying_or_giving_up_any_enquiry(
    case: ServerFault,
    make_app: AppFactory,
    make_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server(tls=case.tls, auth=("user", "pw") if case.wrong_password else None)
    trusted = server.cert_path if case.tls and not case.untrusted else None
    login = {"MAIL_USERNAME": "user", "MAIL_PASSWORD": "not-the-pw"} if case.wrong_password else {}
    app = make_app(server, MAIL_TIMEOUT=0.5, MAIL_TLS_CA_FILE=trusted, **login)
    client = app.test_client()
    ids = [enqueue(client) for _ in range(3)]
    if case.refuse:
        server.refuse()
    server.fault = case.fault
    reason = case.reason.format(where=f"{server.host}:{server.port}")

    before = lifecycle.utcnow()
    assert deliver_all(app) == 0
    after = lifecycle.utcnow()

    health = smtp_health(app)
    assert (health.failures, health.reason) == (1, reason)
    first_delay = timedelta(seconds=app.config["OUTBOX_RETRY_BASE_SECONDS"])
    assert health.next_try_at is not None
    assert_between(health.next_try_at, before + first_delay, after + first_delay)
    for enquiry_id in ids:
        enquiry = load(app, enquiry_id)
        assert (enquiry.status, enquiry.attempts, enquiry.last_error) == ("pending", 0, reason)
        assert enquiry.next_attempt_at == health.next_try_at
    [error] = records(caplog, logging.ERROR, "service")
    assert error.getMessage().startswith(f"SMTP delivery paused: {reason}; ")
    assert not records(caplog, logging.WARNING, "service")
    assert personal_data_in(caplog.text) == []

    ready = client.get("/readyz")
    assert ready.status_code == 200, "the form still takes enquiries, and keeps them"
    body = ready.get_json()
    assert (body["status"], body["reason"]) == ("degraded", f"delivery paused: {reason}")
    assert body["outbox"] == {**NO_ENQUIRIES, "pending": 3}
    status = app.test_cli_runner().invoke(args=["outbox", "status"])
    assert status.exit_code == 1
    assert "SMTP server failing (1 tries in a row) since " in status.stdout
    assert reason in status.stdout
    metrics = scrape(app)
    assert "contact_form_smtp_failures_in_a_row 1.0" in metrics
    assert f'contact_form_smtp_failures_total{{step="{health_step(case)}"}}' in metrics

    connections, logins = server.connections, server.logins
    for enquiry_id in ids:  # the enquiries are due, the server is not: nobody connects
        change(app, enquiry_id, next_attempt_at=lifecycle.utcnow())
    assert deliver_all(app) == 0
    assert (server.connections, server.logins) == (connections, logins)
    assert smtp_health(app).failures == 1

    server.restore()
    app.config["MAIL_TIMEOUT"] = 3.0  # short only to find the hang; a busy CI host is no fault
    if case.untrusted:
        app.config["MAIL_TLS_CA_FILE"] = server.cert_path
    if case.wrong_password:
        app.config["MAIL_PASSWORD"] = "pw"
        app.extensions["mail"].password = "pw"
    make_server_due(app)
    assert deliver_all(app) == 3
    assert deliver_all(app) == 0
    assert smtp_health(app).failures == 0
    for enquiry_id in ids:
        enquiry = load(app, enquiry_id)
        assert (enquiry.status, enquiry.attempts, enquiry.last_error) == ("sent", 1, None)
    assert len(server.messages) == 3, "each exactly once"
    assert client.get("/readyz").get_json() == {
        "status": "ok",
        "outbox": {**NO_ENQUIRIES, "sent": 3},
    }


@pytest.mark.parametrize(
    ("server_tls", "use_tls", "use_ssl", "reason"),
    [
        (
            None,
            False,
            True,
            "TLS error: WRONG_VERSION_NUMBER: check MAIL_USE_SSL and MAIL_USE_TLS against the "
            "server's port",
        ),
        (
            "starttls",
            False,
            True,
            "TLS error: WRONG_VERSION_NUMBER: check MAIL_USE_SSL and MAIL_USE_TLS against the "
            "server's port",
        ),
        (
            None,
            True,
            False,
            "SMTP server {where} does not offer STARTTLS: check MAIL_USE_TLS (many servers offer "
            "AUTH only after STARTTLS)",
        ),
        ("implicit", False, False, UNREACHABLE),
    ],
    ids=[
        "implicit TLS to a plain server",
        "implicit TLS to a STARTTLS server",
        "STARTTLS to a server without it",
        "plain to an implicit TLS server",
    ],
)
def test_a_tls_mismatch_is_the_servers_fault_and_named(
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
    expected = reason.format(where=f"{server.host}:{server.port}")
    assert smtp_health(app).reason == expected
    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.attempts, enquiry.last_error) == ("pending", 0, expected)
    assert server.messages == []
    assert personal_data_in(caplog.text) == []


def test_the_servers_back_off_doubles_up_to_the_cap_and_one_error_is_logged(
    app: Flask, client, smtp_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    app.config.update(OUTBOX_RETRY_BASE_SECONDS=30, OUTBOX_RETRY_MAX_SECONDS=200)
    enquiry_id = enqueue(client)
    smtp_server.refuse()
    for failures, delay in enumerate([30, 60, 120, 200, 200], start=1):
        make_due(app, enquiry_id)
        before = lifecycle.utcnow()
        assert deliver_all(app) == 0
        after = lifecycle.utcnow()
        health = smtp_health(app)
        assert health.failures == failures and health.next_try_at is not None
        assert_between(
            health.next_try_at, before + timedelta(seconds=delay), after + timedelta(seconds=delay)
        )
        enquiry = load(app, enquiry_id)
        assert (enquiry.status, enquiry.attempts) == ("pending", 0)
    assert len(records(caplog, logging.ERROR, "service")) == 1, "one ERROR per outage"
    warnings = records(caplog, logging.WARNING, "service.delivery.outbox")
    assert [w.getMessage().split(":")[0] for w in warnings] == [
        f"SMTP still failing ({n} tries in a row)" for n in range(2, 6)
    ]
    smtp_server.restore()
    make_due(app, enquiry_id)
    assert deliver_all(app) == 1
    assert "SMTP server accepts again after 5 failed tries" in caplog.text


def test_the_give_up_window_still_ends_an_enquiry_that_waited_it_out(
    app: Flask, client, smtp_server: SMTPTestServer, runner, caplog: pytest.LogCaptureFixture
) -> None:
    app.config["OUTBOX_GIVE_UP_SECONDS"] = 60
    old, new = enqueue(client), enqueue(client)
    change(app, old, queued_at=lifecycle.utcnow() - timedelta(seconds=61))
    smtp_server.refuse()
    assert deliver_all(app) == 0
    expired, waiting = load(app, old), load(app, new)
    assert (expired.status, waiting.status, waiting.attempts) == ("failed", "pending", 0)
    assert expired.last_error == smtp_health(app).reason
    assert any(
        f"enquiry {old} is a dead letter (gave up after retrying" in r.getMessage()
        for r in records(caplog, logging.ERROR, "service.delivery.outbox")
    )

    # Queued again, it gets a fresh window: still down, it waits with the rest.
    assert runner.invoke(args=["outbox", "retry", old]).stdout == "Queued 1 enquiries again.\n"
    make_due(app, new)
    assert deliver_all(app) == 0
    assert load(app, old).status == "pending"


def test_a_password_smtplib_cannot_send_pauses_the_queue_and_says_why(
    make_app: AppFactory, make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(auth=("user", "pw"))
    app = make_app(server, MAIL_USERNAME="user", MAIL_PASSWORD="pässword")
    ids = [enqueue(app.test_client()) for _ in range(3)]
    assert deliver_all(app) == 0
    reason = "SMTP login impossible: MAIL_USERNAME and MAIL_PASSWORD must be ASCII"
    assert smtp_health(app).reason == reason
    assert [load(app, enquiry_id).attempts for enquiry_id in ids] == [0, 0, 0]
    assert counts(app) == {**NO_ENQUIRIES, "pending": 3}
    [error] = records(caplog, logging.ERROR, "service.delivery.outbox")
    assert reason in error.getMessage() and "pässword" not in caplog.text


# --- one message's own faults: it alone backs off or ends; the batch goes on --------------------


@dataclass(frozen=True)
class MessageFault:
    """A fault of one message, and what the outbox must record about it."""

    name: str
    reason: str
    fault: str
    copies: int = 1  # 2 when the first was received but never confirmed


TRANSIENT = [
    MessageFault("452 at RCPT", "SMTP 452 at RCPT", "rcpt_452"),
    MessageFault("451 after DATA", "SMTP 451 at DATA", "data_451"),
    MessageFault("drop after DATA", "connection closed by the server", "drop_after_data", 2),
    MessageFault("hang after DATA", "timed out", "hang_after_data", 2),
]


@pytest.mark.parametrize("case", TRANSIENT, ids=lambda case: case.name)
def test_a_transient_message_fault_is_retried_later_then_delivered_once(
    case: MessageFault,
    make_app: AppFactory,
    smtp_server: SMTPTestServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(smtp_server, MAIL_TIMEOUT=0.5)
    enquiry_id = enqueue(app.test_client())
    smtp_server.fault = case.fault

    before = lifecycle.utcnow()
    assert deliver_all(app) == 0
    after = lifecycle.utcnow()

    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.attempts, enquiry.last_error) == ("pending", 1, case.reason)
    first_delay = timedelta(seconds=app.config["OUTBOX_RETRY_BASE_SECONDS"])
    assert_between(enquiry.next_attempt_at, before + first_delay, after + first_delay)
    [warning] = records(caplog, logging.WARNING, "service")
    assert enquiry_id in warning.getMessage() and case.reason in warning.getMessage()
    assert not records(caplog, logging.ERROR, "service")
    assert smtp_health(app).failures == 0, "the server is fine: only this message waits"
    assert personal_data_in(caplog.text) == []
    assert deliver_all(app) == 0, "nothing is tried again before the back-off ends"

    smtp_server.restore()
    app.config["MAIL_TIMEOUT"] = 3.0  # short only to find the hang; a busy CI host is no fault
    make_due(app, enquiry_id)
    assert deliver_all(app) == 1
    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.attempts, enquiry.last_error) == ("sent", 2, None)
    assert len(smtp_server.messages) == case.copies
    assert {mail.header("Message-ID") for mail in smtp_server.messages} == {enquiry.message_id}


PERMANENT = [
    MessageFault("550 at RCPT", "SMTP 550 at RCPT", "rcpt_550"),
    MessageFault("554 after DATA", "SMTP 554 at DATA", "data_554"),
]


@pytest.mark.parametrize(
    "retry_args", [["{id}"], ["--all-failed"]], ids=["retry ID", "retry --all-failed"]
)
@pytest.mark.parametrize("case", PERMANENT, ids=lambda case: case.name)
def test_a_permanent_message_fault_is_a_dead_letter_until_retried(
    case: MessageFault,
    retry_args: list[str],
    app: Flask,
    client,
    smtp_server: SMTPTestServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    enquiry_id = enqueue(client)
    smtp_server.fault = case.fault
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

    smtp_server.restore()
    args = [arg.format(id=enquiry_id) for arg in retry_args]
    result = app.test_cli_runner().invoke(args=["outbox", "retry", *args])
    assert (result.exit_code, result.stdout) == (0, "Queued 1 enquiries again.\n")
    assert deliver_all(app) == 1
    [mail] = smtp_server.messages
    assert mail.header("Message-ID") == load(app, enquiry_id).message_id
    assert (load(app, enquiry_id).status, load(app, enquiry_id).attempts) == ("sent", 2)
    assert client.get("/readyz").get_json()["status"] == "ok"


def claim_in_order(app: Flask, ids: list[str]) -> None:
    """Make the worker claim the enquiries in the order given."""
    now = lifecycle.utcnow()
    for position, enquiry_id in enumerate(ids):
        change(app, enquiry_id, next_attempt_at=now - timedelta(seconds=100 - position))


@pytest.mark.parametrize(
    ("reply", "status"),
    [("451 4.7.1 Content scan failed, try later", "pending"), ("554 5.7.1 Refused", "failed")],
    ids=["451", "554"],
)
def test_one_refused_message_in_a_batch_of_20_holds_back_none_of_the_other_19(
    reply: str, status: str, app: Flask, client, smtp_server: SMTPTestServer
) -> None:
    app.config["OUTBOX_BATCH_SIZE"] = 20
    ids = [enqueue(client) for _ in range(20)]
    claim_in_order(app, ids)
    refused = ids[3]
    smtp_server.refuse_messages[refused] = reply

    assert deliver_all(app) == 19, "the other 19 arrive in the first pass"
    assert smtp_server.connections == 1, "over the one connection"
    assert len(smtp_server.messages) == 19
    assert refused not in {mail.header("X-Enquiry-ID") for mail in smtp_server.messages}
    enquiry = load(app, refused)
    assert (enquiry.status, enquiry.attempts) == (status, 1)
    assert enquiry.last_error == f"SMTP {reply[:3]} at DATA"
    assert smtp_health(app).failures == 0
    assert deliver_all(app) == 0, "later passes do not lead with it either"


def test_a_message_whose_reply_never_comes_costs_the_rest_a_new_connection_only(
    app: Flask, client, smtp_server: SMTPTestServer
) -> None:
    ids = [enqueue(client) for _ in range(5)]
    claim_in_order(app, ids)
    smtp_server.refuse_messages[ids[1]] = "drop"
    assert deliver_all(app) == 4
    dropped = load(app, ids[1])
    assert (dropped.status, dropped.last_error) == ("pending", "connection closed by the server")
    assert smtp_server.connections == 2
    assert smtp_health(app).failures == 0


def test_a_server_that_limits_messages_per_connection_costs_a_reconnect_not_a_pause(
    app: Flask, client, smtp_server: SMTPTestServer
) -> None:
    ids = [enqueue(client) for _ in range(5)]
    smtp_server.mail_per_connection = 2  # then 421: reconnect
    assert deliver_all(app) == 5
    assert smtp_server.connections == 3 and len(smtp_server.messages) == 5
    assert smtp_health(app).failures == 0
    assert {load(app, enquiry_id).attempts for enquiry_id in ids} == {1}


def test_the_server_failing_after_one_inbox_took_it_sends_it_to_that_inbox_once(
    two_inboxes: Flask, smtp_server: SMTPTestServer
) -> None:
    app = two_inboxes
    app.config.update(NOTIFY_CONTENT="minimal", NOTIFY_MESSAGE_TO="records@clinic.example")
    enquiry_id = enqueue(app.test_client())
    smtp_server.mail_quota = 1  # the clinic's email goes; then every MAIL gets 451
    assert deliver_all(app) == 0
    enquiry = load(app, enquiry_id)
    assert enquiry.status == "pending"
    assert enquiry.inboxes_delivered() == sorted([FRONT_DESK, PHYSIO])
    assert smtp_health(app).failures == 1
    smtp_server.restore()
    make_due(app, enquiry_id)
    assert deliver_all(app) == 1
    by_inbox = sorted(rcpt for mail in smtp_server.messages for rcpt in mail.rcpt_tos)
    assert by_inbox == sorted([FRONT_DESK, PHYSIO, "records@clinic.example"]), "each once"


def test_an_enquiry_past_the_give_up_window_is_a_dead_letter_on_its_next_transient_fault(
    app: Flask, client, smtp_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    app.config["OUTBOX_GIVE_UP_SECONDS"] = 60
    enquiry_id = enqueue(client)
    change(app, enquiry_id, queued_at=lifecycle.utcnow() - timedelta(seconds=120))
    smtp_server.fault = "data_451"
    assert deliver_all(app) == 0
    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.last_error) == ("failed", "SMTP 451 at DATA")
    [error] = records(caplog, logging.ERROR, "service")
    assert "gave up after retrying" in error.getMessage()


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(0, 30), (1, 30), (2, 60), (3, 120), (4, 240), (5, 300), (6, 300), (1000, 300)],
)
def test_backoff_doubles_per_attempt_up_to_the_cap(attempts: int, seconds: int) -> None:
    app = Flask(__name__)
    app.config.update(OUTBOX_RETRY_BASE_SECONDS=30, OUTBOX_RETRY_MAX_SECONDS=300)
    with app.app_context():
        assert outbox.backoff(attempts) == timedelta(seconds=seconds)


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
    smtp_server: SMTPTestServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, poisoned, third = ids = [enqueue(client) for _ in range(3)]
    claim_in_order(app, ids)
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
    assert sorted(mail.header("Message-ID") for mail in smtp_server.messages) == sorted(
        (done.message_id, also_done.message_id)
    )
    errors = [r.getMessage() for r in records(caplog, logging.ERROR, "service.delivery.outbox")]
    assert any(f"enquiry {poisoned} is a dead letter" in error for error in errors)
    assert any(f"while delivering enquiry {poisoned}: {error_type}" in error for error in errors)
    assert personal_data_in(caplog.text) == [], "the exception's message is never logged"
    health = client.get("/readyz").get_json()
    assert health == {"status": "degraded", "outbox": {**NO_ENQUIRIES, "sent": 2, "failed": 1}}


# --- one inbox's own refusal: the others have it, that one is retried or recorded ---------------


@pytest.fixture
def two_inboxes(make_app: AppFactory, smtp_server: SMTPTestServer) -> Flask:
    """The service sending every enquiry to the front desk and the physiotherapist."""
    return make_app(smtp_server, CLINIC_INBOX=f"{FRONT_DESK}, {PHYSIO}")


def test_an_inbox_that_refuses_for_good_is_recorded_and_shown_and_the_other_has_it(
    two_inboxes: Flask, smtp_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    app, client, runner = two_inboxes, two_inboxes.test_client(), two_inboxes.test_cli_runner()
    enquiry_id = enqueue(client)
    smtp_server.refuse_recipients[PHYSIO] = "550 5.1.1 No such mailbox"

    assert deliver_all(app) == 1
    [mail] = smtp_server.messages
    assert mail.rcpt_tos == [FRONT_DESK]
    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.attempts) == ("sent", 1)
    assert enquiry.inboxes_delivered() == [FRONT_DESK]
    assert enquiry.inboxes_refused() == {PHYSIO: "SMTP 550 at RCPT"}
    [error] = records(caplog, logging.ERROR, "service.delivery.outbox")
    assert f"enquiry {enquiry_id} delivered to 1 of 2 inboxes" in error.getMessage()
    assert f"{PHYSIO} (SMTP 550 at RCPT)" in error.getMessage()
    assert personal_data_in(caplog.text) == []

    assert "contact_form_outbox_refused_enquiries 1.0" in scrape(app)
    status = runner.invoke(args=["outbox", "status"])
    assert status.exit_code == 1
    assert "refused  1" in status.stdout.splitlines()
    assert "flask outbox list --state refused" in status.stderr
    [line] = runner.invoke(args=["outbox", "list", "--state", "refused"]).stdout.splitlines()
    assert line.startswith(enquiry_id)
    assert line.endswith(f"refused by: {PHYSIO} (SMTP 550 at RCPT)")
    assert personal_data_in(line) == []
    body = client.get("/readyz").get_json()
    assert (body["status"], body["refused"]) == ("degraded", 1)
    assert "1 enquiries were refused by some inbox" in body["reason"]

    # The inbox is fixed; a person sends it again, to that inbox only.
    smtp_server.restore()
    result = runner.invoke(args=["outbox", "retry", "--all-refused"])
    assert result.stdout == "Queued 1 enquiries again.\n"
    assert deliver_all(app) == 1
    first, second = smtp_server.messages
    assert second.rcpt_tos == [PHYSIO], "the front desk does not get a second copy"
    assert first.header("Message-ID") == second.header("Message-ID")
    enquiry = load(app, enquiry_id)
    assert enquiry.inboxes_delivered() == sorted([FRONT_DESK, PHYSIO])
    assert enquiry.inboxes_refused() == {}
    assert client.get("/readyz").get_json()["status"] == "ok"


def test_an_inbox_that_refuses_for_now_gets_it_later_and_the_other_gets_no_second_copy(
    two_inboxes: Flask, smtp_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = two_inboxes
    enquiry_id = enqueue(app.test_client())
    smtp_server.refuse_recipients[PHYSIO] = "452 4.2.2 Mailbox full"

    assert deliver_all(app) == 0, "not delivered until every inbox has it"
    [mail] = smtp_server.messages
    assert mail.rcpt_tos == [FRONT_DESK]
    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.attempts) == ("pending", 1)
    assert enquiry.last_error == "SMTP 452 at RCPT for 1 of 2 inboxes"
    assert enquiry.inboxes_delivered() == [FRONT_DESK]
    [warning] = records(caplog, logging.WARNING, "service.delivery.outbox")
    assert "SMTP 452 at RCPT for 1 of 2 inboxes" in warning.getMessage()

    smtp_server.restore()
    make_due(app, enquiry_id)
    assert deliver_all(app) == 1
    first, second = smtp_server.messages
    assert second.rcpt_tos == [PHYSIO]
    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.attempts) == ("sent", 2)
    assert enquiry.inboxes_delivered() == sorted([FRONT_DESK, PHYSIO])
    assert counts(app)["sent"] == 1


def test_an_inbox_that_refuses_for_now_past_the_give_up_window_is_recorded_refused(
    two_inboxes: Flask, smtp_server: SMTPTestServer
) -> None:
    app = two_inboxes
    app.config["OUTBOX_GIVE_UP_SECONDS"] = 60
    enquiry_id = enqueue(app.test_client())
    change(app, enquiry_id, queued_at=lifecycle.utcnow() - timedelta(seconds=120))
    smtp_server.refuse_recipients[PHYSIO] = "452 4.2.2 Mailbox full"
    assert deliver_all(app) == 1
    enquiry = load(app, enquiry_id)
    assert enquiry.status == "sent"
    assert enquiry.inboxes_refused() == {PHYSIO: "gave up after retrying: SMTP 452 at RCPT"}


def test_every_inbox_refusing_is_the_messages_fault(
    two_inboxes: Flask, smtp_server: SMTPTestServer
) -> None:
    app = two_inboxes
    enquiry_id = enqueue(app.test_client())
    smtp_server.fault = "rcpt_550"
    assert deliver_all(app) == 0
    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.last_error) == ("failed", "SMTP 550 at RCPT")
    assert smtp_server.messages == []
    assert smtp_health(app).failures == 0
