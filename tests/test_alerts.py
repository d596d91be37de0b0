"""Alerts to the operator: one email for a dead letter, one for a stuck queue, one for its
recovery; not more than one an hour for each cause; no personal data in any."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask

from service.store import lifecycle
from tests.conftest import VALID, deliver_all
from tests.smtp_server import SMTPTestServer
from tests.support import AppFactory, change, enqueue, make_due, personal_data_in

OPS = "ops@clinic.example"
FRONT_DESK = "front-desk@clinic.example"


def alerts_in(server: SMTPTestServer) -> list[str]:
    """The subjects of the alerts the operator got."""
    return [m.header("Subject") or "" for m in server.messages if m.rcpt_tos == [OPS]]


def alerting_app(make_app: AppFactory, server: SMTPTestServer) -> Flask:
    """The service alerting OPS, on the test's SMTP server."""
    return make_app(server, ALERT_TO=OPS, STUCK_AFTER=600)


def test_one_alert_for_dead_letters_in_an_hour_and_none_personal(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    app = alerting_app(make_app, smtp_server)
    client = app.test_client()
    smtp_server.refuse_recipients[FRONT_DESK] = "550 5.1.1 No such mailbox"
    first = enqueue(client)
    assert deliver_all(app) == 0
    enqueue(client)
    assert deliver_all(app) == 0
    assert alerts_in(smtp_server) == ["Contact form: an enquiry could not be delivered"]
    [alert] = [m for m in smtp_server.messages if m.rcpt_tos == [OPS]]
    assert first in (alert.text or "") and "SMTP 550 at RCPT" in (alert.text or "")
    assert (
        personal_data_in(alert.data.decode()) == [] and VALID["message"] not in alert.data.decode()
    )


def test_a_stuck_queue_alerts_once_and_its_recovery_once(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    app = alerting_app(make_app, smtp_server)
    enquiry_id = enqueue(app.test_client())
    smtp_server.refuse_recipients[FRONT_DESK] = "452 4.2.2 Mailbox full"  # for now
    change(app, enquiry_id, queued_at=lifecycle.utcnow() - timedelta(minutes=20))
    assert deliver_all(app) == 0
    assert deliver_all(app) == 0  # another worker pass: no second alert within the hour
    assert alerts_in(smtp_server) == ["Contact form: enquiries are not being delivered"]

    smtp_server.restore()
    make_due(app, enquiry_id)
    assert deliver_all(app) == 1
    deliver_all(app)  # the next look finds nothing waiting: delivery works again
    deliver_all(app)
    assert alerts_in(smtp_server) == [
        "Contact form: enquiries are not being delivered",
        "Contact form: delivery works again",
    ]
    assert all(personal_data_in(m.data.decode()) == [] for m in smtp_server.messages[-1:])


def test_no_alert_without_alert_to(app: Flask, client, smtp_server: SMTPTestServer) -> None:
    smtp_server.refuse_recipients[FRONT_DESK] = "550 5.1.1 No such mailbox"
    enqueue(client)
    assert deliver_all(app) == 0
    assert smtp_server.messages == []
