"""Delivery to the clinic's inbox through a real SMTP server: headers, parts, escaping, once."""

import contextlib
import time
from collections.abc import Iterator

from flask import Flask
from flask.testing import FlaskClient

from service.store import queries
from service.store.models import Enquiry
from tests.conftest import deliver_all
from tests.smtp_server import SMTPTestServer
from tests.support import enqueue, load, make_due


def test_email_reaches_the_inbox_with_the_right_headers(
    app: Flask, client: FlaskClient, smtp_server
) -> None:
    app.config["ALLOWED_ORIGINS"] = ("https://clinic.example",)  # the clinic's own site
    enquiry_id = enqueue(client, page="https://clinic.example/articles/sciatica")
    assert deliver_all(app) == 1
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["front-desk@clinic.example"]
    assert mail.mail_from == "forms@clinic.example"
    assert mail.header("From") == "Contact form <forms@clinic.example>"
    assert mail.header("To") == "front-desk@clinic.example"
    assert mail.header("Reply-To") == "Jane Citizen <jane.citizen@example.com>"
    assert mail.header("Subject") == "New enquiry from Jane Citizen"
    assert mail.header("Message-ID") == f"<enquiry-{enquiry_id}@clinic.example>"
    assert mail.header("Date")
    text = mail.text
    for expected in (
        "Jane Citizen",
        "jane.citizen@example.com",
        "+61 412 345 678",
        "+61412345678",
        "My lower back has been sore since Tuesday.\nCan I book for Friday?",
        "https://clinic.example/articles/sciatica",
        enquiry_id,
        "UTC",
    ):
        assert expected in text
    assert 'href="tel:+61412345678"' in mail.html
    assert 'href="mailto:jane.citizen@example.com"' in mail.html
    assert "+61 412 345 678" in mail.html and enquiry_id in mail.html


def test_received_time_is_in_the_clinic_time_zone(
    app: Flask, client: FlaskClient, smtp_server
) -> None:
    app.config["CLINIC_TIMEZONE"] = "Australia/Sydney"
    enqueue(client)
    deliver_all(app)
    assert "AEDT" in smtp_server.wait_for(1)[0].text


def test_several_inbox_addresses_each_get_it(app: Flask, client: FlaskClient, smtp_server) -> None:
    app.config["CLINIC_INBOX"] = "front-desk@clinic.example, dr.lee@clinic.example"
    enqueue(client)
    deliver_all(app)
    [mail] = smtp_server.wait_for(1)
    assert sorted(mail.rcpt_tos) == ["dr.lee@clinic.example", "front-desk@clinic.example"]


def test_user_input_is_escaped_in_html_and_kept_verbatim_in_text(app, client, smtp_server) -> None:
    hostile = '<script>alert(1)</script> <a href="javascript:alert(2)">x</a> <img src="https://evil.example/t.png">'
    enqueue(client, name="Zoë <b>O'Brien</b>", message=hostile)
    deliver_all(app)
    [mail] = smtp_server.wait_for(1)
    assert (
        "<script>" not in mail.html
        and "<img" not in mail.html
        and '<a href="javascript' not in mail.html
    )
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.html
    assert "&lt;b&gt;O&#39;Brien&lt;/b&gt;" in mail.html
    assert hostile in mail.text
    assert mail.header("Subject") == "New enquiry from Zoë <b>O'Brien</b>"
    assert mail.header("Reply-To").endswith("<jane.citizen@example.com>")


def test_smtp_down_at_submission_then_up_delivers_exactly_one(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer
) -> None:
    smtp_server.refuse()
    enquiry_id = enqueue(client)  # accepted although SMTP is down: the response never waits on it
    assert deliver_all(app) == 0
    with app.app_context():
        assert queries.status().counts["pending"] == 1
    smtp_server.restore()
    make_due(app, enquiry_id)  # skip the back-off wait
    assert deliver_all(app) == 1
    assert deliver_all(app) == 0
    assert len(smtp_server.wait_for(1)) == 1
    time.sleep(0.3)
    assert len(smtp_server.messages) == 1
    with app.app_context():
        assert queries.status().counts == {
            "pending": 0,
            "sending": 0,
            "sent": 1,
            "failed": 0,
            "held": 0,
        }


@contextlib.contextmanager
def embedded_worker_app(app_config: dict, monkeypatch, **worker_timing: float) -> Iterator[Flask]:
    """An app with its own delivery worker, stopped at the end; `worker_timing` sets its timings."""
    from service import create_app
    from service.delivery import worker

    monkeypatch.setenv("SERVICE_ENV", "testing")
    for name, seconds in worker_timing.items():
        monkeypatch.setattr(worker, name, seconds)
    app = create_app({**app_config, "DELIVERY_WORKER": "embedded", "OUTBOX_POLL_SECONDS": 0.2})
    try:
        yield app
    finally:
        app.extensions["delivery"].embedded.stop(5)
        app.extensions["store"].engine.dispose()


def test_embedded_worker_delivers_without_being_asked(app_config, smtp_server, monkeypatch) -> None:
    with embedded_worker_app(app_config, monkeypatch) as app:
        client = app.test_client()
        enqueue(client)
        enqueue(client)
        assert len(smtp_server.wait_for(2)) == 2


def test_every_attempt_carries_the_same_message_id(
    app: Flask, client: FlaskClient, smtp_server
) -> None:
    enquiry_id = enqueue(client)
    with app.app_context():
        from service.delivery import message

        with app.extensions["store"].sessions() as session:
            enquiry = session.get(Enquiry, enquiry_id)
        first, second = message.build_message(enquiry), message.build_message(enquiry)
        assert first.msgId == second.msgId == f"<enquiry-{enquiry_id}@clinic.example>"
        assert first.as_bytes().count(b"Message-ID:") == 1


def _busy_for(client: FlaskClient, seconds: float, smtp_server: SMTPTestServer) -> int | None:
    """Send requests back to back for `seconds`; return when the first email arrived, if it did."""
    started = time.monotonic()
    arrived = None
    while time.monotonic() - started < seconds:
        assert client.get("/healthz").status_code == 200
        if arrived is None and smtp_server.messages:
            arrived = time.monotonic() - started
    return arrived


def test_embedded_worker_delivers_in_a_lull_between_requests(
    app_config, smtp_server, monkeypatch
) -> None:
    # A generous lull, so that a slow test machine's pauses between requests do not count as one
    # (a loaded CI host once paused 0.3 s between two requests).
    timing = {"QUIET_SECONDS": 1.0, "YIELD_AT_MOST_SECONDS": 30.0}
    with embedded_worker_app(app_config, monkeypatch, **timing) as app:
        client = app.test_client()
        enqueue(client)
        assert _busy_for(client, 2.0, smtp_server) is None, "delivered while requests kept coming"
        assert len(smtp_server.wait_for(1, timeout=10)) == 1


def test_embedded_worker_delivers_during_a_flood_that_leaves_no_lull(
    app_config, smtp_server, monkeypatch
) -> None:
    timing = {"QUIET_SECONDS": 0.3, "YIELD_AT_MOST_SECONDS": 0.5}
    with embedded_worker_app(app_config, monkeypatch, **timing) as app:
        client = app.test_client()
        enqueue(client)
        arrived = _busy_for(client, 5.0, smtp_server)
        assert arrived is not None, "the flood held the email back"
        assert arrived >= 0.4, "it did not wait for a lull first"


def test_a_busy_process_pauses_between_the_emails_of_a_batch(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer
) -> None:
    from service.delivery import worker

    for _ in range(3):
        enqueue(client)
    paused: list[tuple[int, float]] = []
    # A process that never has a lull: each pause lasts its longest, and the batch still goes.
    embedded = worker.Worker(app, "paced", busy=lambda: True)
    real_pace = embedded._pace

    def pace() -> None:
        started = time.monotonic()
        real_pace()
        paused.append((len(smtp_server.messages), time.monotonic() - started))

    embedded._pace = pace  # type: ignore[method-assign]
    with app.app_context():
        # The loop of run_once without its wait for a lull before the batch.
        from service.delivery import outbox

        assert outbox.deliver(embedded.id, embedded.stopping.is_set, embedded._pace) == 3
    assert [sent for sent, _ in paused] == [1, 2], "before each email after the first"
    assert all(worker.PACE_AT_MOST_SECONDS * 0.8 <= wait < 2 for _, wait in paused), paused
    assert len(smtp_server.messages) == 3


def test_a_batchs_sent_marks_share_a_connection_and_each_commits_before_the_next_email(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer
) -> None:
    from sqlalchemy import event

    from service.delivery import outbox

    ids = [enqueue(client) for _ in range(4)]
    engine = app.extensions["store"].engine
    checkouts: list[bool] = []
    looking = False
    marked_before_next: list[int] = []

    def between() -> None:
        # From a connection of its own: every email sent so far is marked sent, committed.
        nonlocal looking
        looking = True
        marked_before_next.append(sum(load(app, i).status == "sent" for i in ids))
        looking = False

    def checkout(*_: object) -> None:
        if not looking:
            checkouts.append(True)

    event.listen(engine, "checkout", checkout)
    try:
        with app.app_context():
            assert outbox.deliver("batch-worker", lambda: False, between) == 4
    finally:
        event.remove(engine, "checkout", checkout)
    assert marked_before_next == [1, 2, 3]
    assert len(smtp_server.messages) == 4
    # The claim, and one connection for the four marks (a connection each, before).
    assert len(checkouts) <= 3, len(checkouts)
