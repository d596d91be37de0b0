"""Operator commands: outbox status/list/show/retry/purge/work, send-test-email, db commands."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import text

from service import create_app
from service.store import lifecycle, schema
from tests.conftest import VALID, deliver_all
from tests.smtp_server import SMTPTestServer
from tests.support import (
    AppFactory,
    ServerFactory,
    change,
    counts,
    enqueue,
    load,
    personal_data_in,
    smtp_health,
)

TEST_ADDRESS = "ops@clinic.example"


@pytest.fixture
def one_of_each(app: Flask, client: FlaskClient, smtp_server: SMTPTestServer) -> dict[str, str]:
    """Three enquiries: one sent, one failed (550 at RCPT), one pending; their ids by state."""
    sent = enqueue(client)
    assert deliver_all(app) == 1
    failed = enqueue(client)
    smtp_server.fault = "rcpt_550"
    deliver_all(app)
    smtp_server.fault = None
    pending = enqueue(client)
    return {"sent": sent, "failed": failed, "pending": pending}


def invoke(runner: FlaskCliRunner, *args: str) -> Any:
    """Run `flask ARGS...` against the test app."""
    return runner.invoke(args=list(args))


# --- outbox status / list / show ----------------------------------------------------------------


def test_status_of_an_empty_outbox(runner: FlaskCliRunner) -> None:
    result = invoke(runner, "outbox", "status")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "pending  0",
        "sending  0",
        "sent     0",
        "failed   0",
        "held     0",
        "refused  0",
        "oldest pending: none",
    ]


def test_status_counts_each_state_and_fails_on_dead_letters(
    app: Flask, runner: FlaskCliRunner, one_of_each: dict[str, str]
) -> None:
    change(
        app, one_of_each["pending"], queued_at=lifecycle.utcnow() - timedelta(minutes=3, seconds=5)
    )
    result = invoke(runner, "outbox", "status")
    assert result.exit_code == 1, "a dead letter makes the status check fail"
    assert result.stdout.splitlines()[:5] == [
        "pending  1",
        "sending  0",
        "sent     1",
        "failed   1",
        "held     0",
    ]
    assert re.search(r"^oldest pending: 3m [5-9]s old$", result.stdout, re.MULTILINE)
    assert "flask outbox list --state failed" in result.stderr
    assert personal_data_in(result.output) == []


@pytest.mark.parametrize("state", ["failed", "sent", "pending"])
def test_list_shows_one_state_without_personal_data(
    state: str, runner: FlaskCliRunner, one_of_each: dict[str, str]
) -> None:
    result = invoke(runner, "outbox", "list", "--state", state)
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    assert line.startswith(f"{one_of_each[state]}  received ")
    assert ("attempts 1" if state != "pending" else "attempts 0") in line
    expected_error = "SMTP 550 at RCPT" if state == "failed" else "-"
    assert line.endswith(f"last error: {expected_error}")
    others = [enquiry_id for name, enquiry_id in one_of_each.items() if name != state]
    assert not any(enquiry_id in result.output for enquiry_id in others)
    assert personal_data_in(result.output) == []


def test_list_defaults_to_dead_letters_and_says_when_there_are_none(
    runner: FlaskCliRunner, one_of_each: dict[str, str]
) -> None:
    assert one_of_each["failed"] in invoke(runner, "outbox", "list").output
    assert (
        invoke(runner, "outbox", "list", "--state", "sending").stdout == "No sending enquiries.\n"
    )
    bad = invoke(runner, "outbox", "list", "--state", "lost")
    assert bad.exit_code == 2 and "Invalid value for" in bad.output and "--state" in bad.output


def test_show_prints_one_enquiry_in_full(
    runner: FlaskCliRunner, one_of_each: dict[str, str]
) -> None:
    enquiry_id = one_of_each["failed"]
    result = invoke(runner, "outbox", "show", enquiry_id)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for expected in (
        f"id: {enquiry_id}",
        f"name: {VALID['name']}",
        f"email: {VALID['email']}",
        "phone: +61412345678",
        "status: failed",
        "attempts: 1",
        "last_error: SMTP 550 at RCPT",
    ):
        assert expected in lines
    assert f"message: {VALID['message']}" in result.stdout


def test_show_of_an_unknown_id_fails(runner: FlaskCliRunner) -> None:
    result = invoke(runner, "outbox", "show", "0" * 32)
    assert result.exit_code == 1
    assert f"No enquiry {'0' * 32}." in result.output


# --- outbox retry -------------------------------------------------------------------------------


def test_retry_requeues_only_dead_letters(
    app: Flask, runner: FlaskCliRunner, one_of_each: dict[str, str], smtp_server: SMTPTestServer
) -> None:
    not_failed = (one_of_each["sent"], one_of_each["pending"], "0" * 32)
    assert invoke(runner, "outbox", "retry", *not_failed).stdout == "Queued 0 enquiries again.\n"
    assert load(app, one_of_each["sent"]).status == "sent"

    result = invoke(runner, "outbox", "retry", one_of_each["failed"])
    assert (result.exit_code, result.stdout) == (0, "Queued 1 enquiries again.\n")
    assert counts(app) == {"pending": 2, "sending": 0, "sent": 1, "failed": 0, "held": 0}
    assert invoke(runner, "outbox", "retry", "--all-failed").stdout == "Queued 0 enquiries again.\n"
    assert deliver_all(app) == 2
    assert len(smtp_server.messages) == 3


def test_retry_without_ids_is_a_usage_error(runner: FlaskCliRunner) -> None:
    result = invoke(runner, "outbox", "retry")
    assert result.exit_code == 2
    assert "Name enquiry ids, or pass --all-failed or --all-refused." in result.output


def test_retry_all_failed_requeues_every_dead_letter(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, smtp_server: SMTPTestServer
) -> None:
    ids = [enqueue(client) for _ in range(3)]
    smtp_server.fault = "data_554"
    deliver_all(app)
    assert counts(app)["failed"] == 3
    smtp_server.fault = None
    assert invoke(runner, "outbox", "retry", "--all-failed").stdout == "Queued 3 enquiries again.\n"
    assert deliver_all(app) == 3
    assert sorted(mail.header("Message-ID") for mail in smtp_server.messages) == sorted(
        load(app, enquiry_id).message_id for enquiry_id in ids
    )


# --- outbox purge -------------------------------------------------------------------------------

PERSONAL = ("name", "email", "phone", "message", "page_url")


@pytest.fixture
def aged(app: Flask, client: FlaskClient, smtp_server: SMTPTestServer) -> dict[str, str]:
    """Enquiries of several ages: sent 31 days and 2 hours ago, failed and pending long ago."""
    old_sent = enqueue(client)
    recent_sent = enqueue(client, page="https://clinic.example/contact")
    assert deliver_all(app) == 2
    failed = enqueue(client)
    smtp_server.fault = "rcpt_550"
    deliver_all(app)
    stale_pending = enqueue(client)
    now = lifecycle.utcnow()
    long_ago = now - timedelta(days=60)
    change(app, old_sent, created_at=long_ago, sent_at=now - timedelta(days=31))
    change(app, recent_sent, sent_at=now - timedelta(hours=2))
    change(app, failed, created_at=long_ago, failed_at=long_ago)
    change(app, stale_pending, created_at=long_ago, queued_at=long_ago)
    return {
        "old sent": old_sent,
        "recent sent": recent_sent,
        "failed": failed,
        "pending": stale_pending,
    }


@pytest.mark.parametrize(
    ("args", "erased"),
    [
        (["--older-than", "45d"], []),
        (["--older-than", "30d"], ["old sent"]),
        (["--older-than", "3h"], ["old sent"]),
        (["--older-than", "90m"], ["old sent", "recent sent"]),
        ([], ["old sent"]),  # RETENTION_DAYS (30) by default
    ],
)
def test_purge_erases_personal_data_of_old_sent_enquiries_only(
    args: list[str], erased: list[str], app: Flask, runner: FlaskCliRunner, aged: dict[str, str]
) -> None:
    assert app.config["RETENTION_DAYS"] == 30
    result = invoke(runner, "outbox", "purge", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Erased the personal data of {len(erased)} delivered enquiries.\n"
    assert personal_data_in(result.output) == []
    for label, enquiry_id in aged.items():
        enquiry = load(app, enquiry_id)
        if label in erased:
            assert [getattr(enquiry, column) for column in PERSONAL] == [None] * len(PERSONAL)
            assert enquiry.purged_at is not None and enquiry.status == "sent"
        else:
            assert (enquiry.name, enquiry.email, enquiry.phone) == (
                VALID["name"],
                VALID["email"],
                "+61412345678",
            )
            assert enquiry.message == VALID["message"] and enquiry.purged_at is None
    # Purging again finds nothing new; the erased enquiries keep their place in the outbox.
    assert invoke(runner, "outbox", "purge", *args).stdout == (
        "Erased the personal data of 0 delivered enquiries.\n"
    )
    assert counts(app) == {"pending": 1, "sending": 0, "sent": 2, "failed": 1, "held": 0}
    if erased:
        shown = invoke(runner, "outbox", "show", aged["old sent"]).stdout
        assert "name: None" in shown and personal_data_in(shown) == []


@pytest.fixture
def store_free_runner(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskCliRunner]:
    """A CLI runner for checks that fail before the store is touched (one database is enough)."""
    monkeypatch.setenv("SERVICE_ENV", "testing")
    app = create_app(
        {"SECRET_KEY": "test", "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}"}
    )
    yield app.test_cli_runner()
    app.extensions["store"].engine.dispose()


@pytest.mark.parametrize("value", ["30", "30 days", "abc", "-1d", "1w", "0.5d", "d30"])
def test_purge_with_a_bad_age_is_a_usage_error(
    value: str, store_free_runner: FlaskCliRunner
) -> None:
    result = invoke(store_free_runner, "outbox", "purge", "--older-than", value)
    assert result.exit_code == 2
    assert "Error: Invalid value for" in result.output and "--older-than" in result.output
    assert "use a number and a unit: 30d, 12h or 90m" in result.output
    assert "Erased" not in result.output


@pytest.mark.parametrize("value", ["", "  "], ids=["empty", "blank"])
def test_purge_with_an_empty_age_is_a_usage_error_and_erases_nothing(
    value: str, app: Flask, runner: FlaskCliRunner, aged: dict[str, str]
) -> None:
    result = invoke(runner, "outbox", "purge", "--older-than", value)
    assert result.exit_code == 2
    assert "Error: Invalid value for --older-than: is empty;" in result.output
    assert "leave it out for RETENTION_DAYS" in result.output
    assert "Erased" not in result.output
    assert load(app, aged["old sent"]).purged_at is None, "not a silent RETENTION_DAYS purge"


@pytest.mark.parametrize("value", ["-1d", "-30d", " -2h", "-0m"])
def test_purge_with_a_negative_age_is_a_usage_error(
    value: str, store_free_runner: FlaskCliRunner
) -> None:
    result = invoke(store_free_runner, "outbox", "purge", "--older-than", value)
    assert result.exit_code == 2
    assert "Error: Invalid value for --older-than: must not be negative;" in result.output
    assert "Erased" not in result.output


# --- outbox work --------------------------------------------------------------------------------


def test_work_once_delivers_what_is_due_and_exits(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, smtp_server: SMTPTestServer
) -> None:
    assert invoke(runner, "outbox", "work", "--once").stdout == "Delivered 0 enquiries.\n"
    first, second = enqueue(client), enqueue(client)
    result = invoke(runner, "outbox", "work", "--once")
    assert (result.exit_code, result.stdout) == (0, "Delivered 2 enquiries.\n")
    assert result.stderr.count("delivered (attempt 1)") == 2, "the worker logs each delivery"
    assert {load(app, first).status, load(app, second).status} == {"sent"}
    assert len(smtp_server.messages) == 2


def test_work_once_with_the_server_down_leaves_enquiries_queued(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, smtp_server: SMTPTestServer
) -> None:
    enquiry_id = enqueue(client)
    smtp_server.refuse()
    result = invoke(runner, "outbox", "work", "--once")
    assert (result.exit_code, result.stdout) == (0, "Delivered 0 enquiries.\n")
    assert "SMTP delivery paused: SMTP server" in result.stderr
    assert "refused the connection" in result.stderr
    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.attempts) == ("pending", 0), "not tried: the server was down"


# --- send-test-email ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tls", "login", "banner"),
    [
        (None, False, "(TLS: none, login: no, timeout 3.0s)"),
        ("starttls", True, "(TLS: STARTTLS, login: yes, timeout 3.0s)"),
        ("implicit", True, "(TLS: implicit, login: yes, timeout 3.0s)"),
    ],
)
def test_send_test_email_reaches_the_server(
    tls: str | None, login: bool, banner: str, make_app: AppFactory, make_server: ServerFactory
) -> None:
    server = make_server(tls=tls, auth=("user", "s3cret-pw") if login else None)
    credentials = {"MAIL_USERNAME": "user", "MAIL_PASSWORD": "s3cret-pw"} if login else {}
    app = make_app(server, MAIL_TLS_CA_FILE=server.cert_path or None, **credentials)
    result = app.test_cli_runner().invoke(args=["send-test-email", TEST_ADDRESS])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"Connecting to {server.host}:{server.port} {banner}",
        f"Sent. The server accepted the test email for {TEST_ADDRESS}.",
    ]
    assert "s3cret-pw" not in result.output
    [mail] = server.wait_for(1)
    assert mail.rcpt_tos == [TEST_ADDRESS]
    assert mail.header("Subject") == "Contact form: test email"
    assert mail.header("From") == "Contact form <forms@clinic.example>"


@pytest.mark.parametrize(
    ("setup", "report"),
    [
        (
            "refused",
            "Sending failed (temporary): SMTP server {where} refused the connection: check "
            "MAIL_SERVER and MAIL_PORT, and that it is running",
        ),
        (
            "hang",
            "Sending failed (temporary): SMTP server {where} did not answer within MAIL_TIMEOUT "
            "at connect: check MAIL_SERVER, MAIL_PORT and MAIL_USE_SSL",
        ),
        (
            "auth_535",
            "Sending failed (permanent): SMTP login refused (535): check MAIL_USERNAME and "
            "MAIL_PASSWORD",
        ),
        ("rcpt_550", "Sending failed (permanent): SMTP 550 at RCPT"),
        (
            "untrusted",
            "Sending failed (temporary): TLS certificate rejected: self-signed certificate: "
            "check MAIL_TLS_CA_FILE",
        ),
    ],
)
def test_send_test_email_reports_what_failed(
    setup: str, report: str, make_app: AppFactory, make_server: ServerFactory
) -> None:
    server = make_server(
        tls="starttls" if setup == "untrusted" else None,
        auth=("user", "s3cret-pw") if setup == "auth_535" else None,
    )
    wrong_login = (
        {"MAIL_USERNAME": "user", "MAIL_PASSWORD": "wrong-pw"} if setup == "auth_535" else {}
    )
    app = make_app(server, MAIL_TIMEOUT=0.5, **wrong_login)
    if setup == "refused":
        server.refuse()
    elif setup in ("hang", "rcpt_550"):
        server.fault = setup
    result = app.test_cli_runner().invoke(args=["send-test-email", TEST_ADDRESS])
    assert result.exit_code == 1
    tls = "STARTTLS" if setup == "untrusted" else "none"
    login = "yes" if setup == "auth_535" else "no"
    assert result.stdout.splitlines() == [
        f"Connecting to {server.host}:{server.port} (TLS: {tls}, login: {login}, timeout 0.5s)"
    ]
    where = f"{server.host}:{server.port}"
    assert result.stderr == f"Error: {report.format(where=where)}\n"
    assert "wrong-pw" not in result.output
    assert server.messages == []


# --- db upgrade / db current --------------------------------------------------------------------


def test_db_commands_create_and_report_the_schema(make_app: AppFactory) -> None:
    app = make_app(AUTO_MIGRATE=False)
    runner = app.test_cli_runner()
    assert invoke(runner, "db", "current").stdout == "current: None  head: 0004\n"
    assert app.test_client().get("/readyz").status_code == 503, "no tables yet"

    result = invoke(runner, "db", "upgrade")
    assert (result.exit_code, result.stdout) == (0, "Store is at revision 0004.\n")
    assert invoke(runner, "db", "current").stdout == "current: 0004  head: 0004\n"
    assert invoke(runner, "db", "upgrade").stdout == "Store is at revision 0004.\n", "idempotent"
    assert invoke(runner, "outbox", "status").exit_code == 0
    assert app.test_client().get("/readyz").get_json()["status"] == "ok"


def test_upgrading_a_store_of_the_first_version_keeps_its_queue_deliverable(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    app = make_app(AUTO_MIGRATE=False)
    engine = app.extensions["store"].engine
    schema.upgrade(engine, "0001")
    now = lifecycle.utcnow().replace(tzinfo=None)
    with engine.begin() as connection:  # an enquiry queued by the first version
        connection.execute(
            text(
                "INSERT INTO enquiries (id, created_at, name, email, phone, message, message_id,"
                " status, queued_at, attempts, next_attempt_at) VALUES ('a' || :n, :now, 'Jane',"
                " 'jane@example.com', '+61412345678', 'Hello', '<x@clinic.example>', 'pending',"
                " :now, 0, :now)"
            ),
            {"n": "1" * 31, "now": now},
        )
    assert app.test_client().get("/readyz").status_code == 503, "the schema is behind"

    assert invoke(app.test_cli_runner(), "db", "upgrade").stdout == "Store is at revision 0004.\n"
    assert deliver_all(app) == 1
    [mail] = smtp_server.messages
    assert mail.rcpt_tos == ["front-desk@clinic.example"]
    assert smtp_health(app).failures == 0
    assert app.test_client().get("/readyz").get_json()["status"] == "ok"
    command.downgrade(schema.alembic_config(engine), "0001")  # as a rollback of the code would
    assert schema.current_revision(engine) == "0001"
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM enquiries")).scalar() == 1


def test_the_schemas_head_in_the_code_is_alembics(app) -> None:
    # A web worker reads HEAD instead of loading Alembic to find it.
    from service.store import schema
    from service.store.engine import store

    with app.app_context():
        assert schema.HEAD == schema.alembic_head(store.engine)
        assert schema.current_revision(store.engine) == schema.HEAD
