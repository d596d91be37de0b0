"""NOTIFY_CONTENT=minimal: the clinic's email says who wrote and how to reach them, never what
they wrote; the message goes to NOTIFY_MESSAGE_TO, or stays sealed in the store."""

from __future__ import annotations

import pytest
from flask import Flask

from service.store import sealing
from tests.conftest import VALID, deliver_all, solve_captcha
from tests.smtp_server import ReceivedMessage, SMTPTestServer
from tests.support import AppFactory, load, make_due

HEALTH = "Canary-Health-4d7e: a herniated disc at L5, since the fall"


def post(app: Flask, **fields: str) -> str:
    """Send an enquiry whose message is health content; its id."""
    client = app.test_client()
    body = {**VALID, "message": HEALTH, **fields, "altcha": solve_captcha(client)}
    response = client.post("/api/enquiries", json=body)
    assert response.status_code == 202
    return response.get_json()["id"]


def assert_minimal(mail: ReceivedMessage, enquiry_id: str) -> None:
    """The front desk can call or reply; the message is not there, in any part or header."""
    raw = mail.data.decode("ascii", "replace")
    assert "Canary-Health" not in raw and "herniated" not in raw
    assert VALID["name"] in (mail.text or "") and VALID["email"] in (mail.text or "")
    assert "+61 412 345 678" in (mail.text or "")
    assert VALID["email"] in (mail.header("Reply-To") or "")
    assert (
        "not in this email" in (mail.text or "")
        and "not in this email" in (mail.html or "").lower()
    )


def test_minimal_keeps_the_message_sealed_in_the_store_and_says_how_to_read_it(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    public, private = sealing.generate()
    app = make_app(
        NOTIFY_CONTENT="minimal",
        SEAL_AT_REST=True,
        SEAL_PUBLIC_KEY=public,
        SEAL_PRIVATE_KEY=private,
    )
    enquiry_id = post(app)
    assert deliver_all(app) == 1
    [mail] = smtp_server.messages
    assert_minimal(mail, enquiry_id)
    assert f"flask --app wsgi outbox show {enquiry_id}" in (mail.text or "")
    assert "kept sealed in the service's store" in (mail.text or "")
    shown = app.test_cli_runner().invoke(args=["outbox", "show", enquiry_id]).stdout
    assert HEALTH in shown


def test_minimal_with_a_message_address_sends_the_message_there_only(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    app = make_app(NOTIFY_CONTENT="minimal", NOTIFY_MESSAGE_TO="records@secure.clinic.example")
    enquiry_id = post(app)
    assert deliver_all(app) == 1
    by_inbox = {tuple(mail.rcpt_tos): mail for mail in smtp_server.messages}
    assert set(by_inbox) == {("front-desk@clinic.example",), ("records@secure.clinic.example",)}
    clinic = by_inbox[("front-desk@clinic.example",)]
    assert_minimal(clinic, enquiry_id)
    assert "sent separately to records@secure.clinic.example" in (clinic.text or "")
    full = by_inbox[("records@secure.clinic.example",)]
    assert HEALTH in (full.text or "")
    assert full.header("Message-ID") != clinic.header("Message-ID")
    assert sorted(load(app, enquiry_id).inboxes_delivered()) == [
        "front-desk@clinic.example",
        "records@secure.clinic.example",
    ]


def test_the_message_address_refusing_for_now_is_retried_for_it_alone(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    app = make_app(NOTIFY_CONTENT="minimal", NOTIFY_MESSAGE_TO="records@secure.clinic.example")
    enquiry_id = post(app)
    smtp_server.refuse_messages[enquiry_id] = "451 4.3.0 Try later"  # both emails carry its id
    assert deliver_all(app) == 0
    assert load(app, enquiry_id).status == "pending"
    smtp_server.restore()
    make_due(app, enquiry_id)
    assert deliver_all(app) == 1
    assert len(smtp_server.messages) == 2, "each inbox once"


def test_full_is_the_default_and_carries_the_message(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    app = make_app()
    assert app.config["NOTIFY_CONTENT"] == "full"
    post(app)
    assert deliver_all(app) == 1
    assert HEALTH in (smtp_server.messages[0].text or "")


def test_an_unknown_notify_content_stops_start_up(make_app: AppFactory) -> None:
    with pytest.raises(Exception, match="NOTIFY_CONTENT must be 'full' or 'minimal'"):
        make_app(NOTIFY_CONTENT="some")
