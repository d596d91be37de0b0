"""A batch sent over several SMTP connections at once (OUTBOX_CONNECTIONS), on a real server."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config import ConfigurationError
from service import create_app
from service.delivery.worker import Worker
from tests.smtp_server import SMTPTestServer
from tests.support import counts, enqueue, load, make_due, smtp_health, wait_until


def deliver_over(app: Flask, connections: int) -> int:
    """One pass of a worker that sends over `connections` connections."""
    return Worker(app, "test", connections=connections).run_once()


def arrivals(smtp_server: SMTPTestServer) -> Counter[str]:
    """How many copies of each enquiry the server accepted."""
    return Counter(str(mail.header("X-Enquiry-ID")) for mail in smtp_server.messages)


def all_sent(app: Flask, ids: list[str]) -> bool:
    """True once the store records every one of these enquiries as sent."""
    return {load(app, enquiry_id).status for enquiry_id in ids} == {"sent"}


def test_two_connections_share_one_batch_and_send_each_enquiry_once(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer
) -> None:
    ids = [enqueue(client) for _ in range(12)]
    assert deliver_over(app, 2) == 12
    assert smtp_server.connections == 2, "one batch of 20, over two connections"
    assert arrivals(smtp_server) == dict.fromkeys(ids, 1)
    assert {load(app, enquiry_id).status for enquiry_id in ids} == {"sent"}
    assert {load(app, enquiry_id).attempts for enquiry_id in ids} == {1}


def test_a_message_whose_reply_is_slow_holds_back_its_own_connection_only(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer
) -> None:
    ids = [enqueue(client) for _ in range(6)]
    slow = ids[0]  # the oldest: the first connection takes it first
    smtp_server.hold_messages.add(slow)
    worker = threading.Thread(target=deliver_over, args=(app, 2))
    worker.start()
    try:
        # The other connection sends and records the other five while the reply waits.
        wait_until(lambda: all_sent(app, ids[1:]), 10, lambda: "the other five were not sent")
        assert load(app, slow).status == "sending"
        assert len(smtp_server.messages) == 6
    finally:
        smtp_server.hold_messages.clear()
        worker.join(10)
    assert not worker.is_alive()
    assert load(app, slow).status == "sent"
    assert arrivals(smtp_server) == dict.fromkeys(ids, 1)


def test_a_server_failing_at_mail_from_pauses_the_queue_once_whatever_the_connections(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer
) -> None:
    ids = [enqueue(client) for _ in range(8)]
    smtp_server.fault = "mail_451"
    assert deliver_over(app, 2) == 0
    assert smtp_server.connections == 2, "both connections met it"
    assert smtp_health(app).failures == 1, "two connections met one outage"
    assert counts(app)["pending"] == 8
    assert {load(app, enquiry_id).attempts for enquiry_id in ids} == {0}, "no message to blame"

    smtp_server.restore()
    make_due(app, *ids)
    before = smtp_server.connections
    assert deliver_over(app, 2) == 8
    assert smtp_server.connections - before == 1, "a server just back is tried over one"
    assert smtp_health(app).failures == 0
    assert deliver_over(app, 2) == 0
    assert arrivals(smtp_server) == dict.fromkeys(ids, 1)


def test_outbox_work_sends_over_the_connections_the_settings_allow(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer
) -> None:
    ids = [enqueue(client) for _ in range(9)]
    app.config["OUTBOX_CONNECTIONS"] = 3
    result = app.test_cli_runner().invoke(args=["outbox", "work", "--once"])
    assert result.exit_code == 0, result.output
    assert "Delivered 9 enquiries." in result.output
    assert smtp_server.connections == 3
    assert arrivals(smtp_server) == dict.fromkeys(ids, 1)


def test_one_connection_by_default_so_a_crash_leaves_at_most_one_message_in_flight(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer
) -> None:
    assert app.config["OUTBOX_CONNECTIONS"] == 1
    for _ in range(5):
        enqueue(client)
    result = app.test_cli_runner().invoke(args=["outbox", "work", "--once"])
    assert result.exit_code == 0, result.output
    assert smtp_server.connections == 1


class Interrupted(Exception):
    """What the test's signal handler raises in the main thread, as Ctrl-C would."""


def test_interrupted_while_two_connections_send_each_finishes_its_message_and_gives_back_the_rest(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer
) -> None:
    ids = [enqueue(client) for _ in range(10)]
    in_flight = set(ids[:2])  # the two oldest: each connection takes one first
    smtp_server.hold_messages.update(in_flight)

    def interrupt() -> None:
        smtp_server.wait_for(2, timeout=10)  # both connections wait for their 250
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.3)
        smtp_server.hold_messages.clear()

    def handler(_signum: int, _frame: Any) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, handler)
    interrupter = threading.Thread(target=interrupt)
    interrupter.start()
    try:
        with pytest.raises(Interrupted):
            deliver_over(app, 2)
    finally:
        interrupter.join(10)
        signal.signal(signal.SIGUSR1, previous)
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("smtp-")]
    assert all_sent(app, sorted(in_flight)), "the messages in flight were finished and recorded"
    rest = [load(app, enquiry_id) for enquiry_id in ids[2:]]
    assert {(enquiry.status, enquiry.attempts) for enquiry in rest} == {("pending", 0)}
    assert arrivals(smtp_server) == dict.fromkeys(in_flight, 1)


@pytest.mark.parametrize("connections", ["0", "9"])
def test_outbox_connections_outside_1_to_8_stops_start_up(
    connections: str, app_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICE_ENV", "testing")
    monkeypatch.setenv("OUTBOX_CONNECTIONS", connections)
    with pytest.raises(ConfigurationError, match="OUTBOX_CONNECTIONS must be a whole number from"):
        create_app(app_config)
