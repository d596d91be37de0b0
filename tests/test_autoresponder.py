"""The confirmation to the patient (AUTORESPONDER): a fixed text with their name, none of their
words, one per address a day across processes, never for a held, invalid or refused post, and
sent through the outbox like any other email."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from service import create_app
from service.intake import traps
from service.store import lifecycle
from service.store.models import Autoreply
from tests.conftest import VALID, deliver_all, solve_captcha
from tests.smtp_server import SMTPTestServer
from tests.support import AppFactory, load, make_due

TEXT = "Dear {name},\nthank you for writing to {clinic}. We will call you back."
SETTINGS = {
    "AUTORESPONDER": True,
    "AUTORESPONDER_SUBJECT": "Your message to {clinic}",
    "AUTORESPONDER_TEXT": TEXT,
    "CLINIC_NAME": "Northside Spine & Sports",
}
PATIENT = VALID["email"]


def post(app: Flask, **fields: Any) -> Any:
    """Send an enquiry through the API, with a solved captcha."""
    client = app.test_client()
    return client.post("/api/enquiries", json={**VALID, **fields, "altcha": solve_captcha(client)})


def confirmations(server: SMTPTestServer) -> list[Any]:
    """The emails that went to the patient."""
    return [m for m in server.messages if m.rcpt_tos == [PATIENT]]


def test_one_confirmation_with_the_fixed_text_and_none_of_the_patients_words(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    app = make_app(**SETTINGS)
    enquiry_id = post(app).get_json()["id"]
    assert deliver_all(app) == 1
    [reply] = confirmations(smtp_server)
    assert reply.header("Subject") == "Your message to Northside Spine & Sports"
    assert reply.text == TEXT.format(name=VALID["name"], clinic=SETTINGS["CLINIC_NAME"]) + "\n"
    assert VALID["message"] not in reply.data.decode() and VALID["phone"] not in reply.text
    assert reply.header("From") == "Contact form <forms@clinic.example>"
    assert reply.header("Reply-To") == "front-desk@clinic.example"
    assert reply.header("Auto-Submitted") == "auto-replied"
    assert load(app, enquiry_id).autoreply == "sent"
    assert len(smtp_server.messages) == 2, "the clinic's email, and the confirmation"


def test_one_a_day_per_address_even_across_processes(
    make_app: AppFactory, app_config: dict[str, Any], smtp_server: SMTPTestServer
) -> None:
    first = make_app(**SETTINGS)
    second = create_app({**app_config, **SETTINGS})  # another process on the same store
    try:
        ids = [
            post(first).get_json()["id"],
            post(second, message="And another thing.").get_json()["id"],
        ]
        ids.append(post(first, email=PATIENT.upper()).get_json()["id"])
        assert deliver_all(first) == 3
        assert len(confirmations(smtp_server)) == 1
        assert [load(first, i).autoreply for i in ids] == ["sent", None, None]
    finally:
        second.extensions["store"].engine.dispose()


@pytest.mark.parametrize(
    "fields",
    [{traps.HONEYPOT: "filled"}, {"email": "not an address"}, {"altcha": "forged"}],
    ids=["held", "invalid", "captcha refused"],
)
def test_none_for_a_held_invalid_or_refused_post(
    make_app: AppFactory, smtp_server: SMTPTestServer, fields: dict[str, str]
) -> None:
    app = make_app(**SETTINGS)
    client = app.test_client()
    client.post("/api/enquiries", json={**VALID, "altcha": solve_captcha(client), **fields})
    deliver_all(app)
    assert confirmations(smtp_server) == []
    # The address has had none, so its next real enquiry gets one.
    assert post(app).status_code == 202
    assert deliver_all(app) == 1 and len(confirmations(smtp_server)) == 1


def test_a_dead_server_delays_it_and_loses_nothing(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    app = make_app(**SETTINGS)
    enquiry_id = post(app).get_json()["id"]
    smtp_server.refuse()
    assert deliver_all(app) == 0
    smtp_server.restore()
    make_due(app, enquiry_id)
    assert deliver_all(app) == 1
    assert len(confirmations(smtp_server)) == 1 and len(smtp_server.messages) == 2


def test_a_confirmation_refused_for_now_is_retried_and_the_clinic_gets_no_second_copy(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    app = make_app(**SETTINGS)
    enquiry_id = post(app).get_json()["id"]
    smtp_server.refuse_recipients[PATIENT] = "450 4.2.1 Try again later"
    assert deliver_all(app) == 0
    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.autoreply) == ("pending", "due")
    assert enquiry.inboxes_delivered() == ["front-desk@clinic.example"]
    smtp_server.restore()
    make_due(app, enquiry_id)
    assert deliver_all(app) == 1
    assert len(smtp_server.messages) == 2 and len(confirmations(smtp_server)) == 1
    assert load(app, enquiry_id).autoreply == "sent"


def test_a_confirmation_refused_for_good_is_no_alarm_for_the_clinic(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    app = make_app(**SETTINGS)
    enquiry_id = post(app).get_json()["id"]
    smtp_server.refuse_recipients[PATIENT] = "550 5.1.1 No such user"
    assert deliver_all(app) == 1
    enquiry = load(app, enquiry_id)
    assert (enquiry.status, enquiry.autoreply, enquiry.refused_to) == ("sent", "refused", None)
    assert app.test_client().get("/readyz").get_json()["status"] == "ok"


def test_the_day_s_claims_are_forgotten_after_the_day(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    app = make_app(**SETTINGS)
    post(app)
    assert deliver_all(app) == 1
    with app.app_context(), app.extensions["store"].sessions() as session, session.begin():
        session.execute(update(Autoreply).values(created_at=lifecycle.utcnow() - timedelta(days=3)))
    deliver_all(app)
    with app.app_context(), app.extensions["store"].sessions() as session:
        assert session.scalar(select(func.count()).select_from(Autoreply)) == 0


@pytest.mark.parametrize("text", ["Hello {name}, you wrote: {message}", "Hi {email}", "Bad {"])
def test_a_text_asking_for_more_than_name_and_clinic_stops_start_up(
    make_app: AppFactory, text: str
) -> None:
    with pytest.raises(Exception, match="AUTORESPONDER_TEXT"):
        make_app(AUTORESPONDER=True, AUTORESPONDER_TEXT=text)
