"""Spam traps: a honeypot people never see and a minimum time to fill the form. A submission
caught by either is thanked like a person and held for a person to review, never sent on its
own; it is counted and logged (which trap, never what was sent)."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from service.intake import traps
from service.store.models import Enquiry
from tests.conftest import VALID, csrf_token, deliver_all, solve_captcha
from tests.smtp_server import SMTPTestServer
from tests.support import AppFactory, personal_data_in, records

SPAM = "Cheap pills at http://spam.example"
# What browsers, password managers and autofill extensions look for in a field's name.
AUTOFILL_WORDS = (
    "name",
    "mail",
    "phone",
    "tel",
    "address",
    "street",
    "city",
    "zip",
    "postal",
    "country",
    "company",
    "org",
    "url",
    "web",
    "site",
    "user",
    "pass",
    "card",
    "code",
    "note",
    "birth",
    "title",
)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """These tests are about what is not stored, not about the store: SQLite is enough."""
    return f"sqlite:///{tmp_path / 'enquiries.sqlite3'}"


def caught(route: str, outcome: str) -> float:
    """The count of held (or trapped and dropped) submissions on this route, as /metrics has it."""
    labels = {"route": route, "outcome": outcome}
    return REGISTRY.get_sample_value("contact_form_submissions_total", labels) or 0.0


def stored(app: Flask) -> int:
    """How many enquiries the store holds."""
    with app.app_context(), app.extensions["store"].sessions() as session:
        return session.query(Enquiry).count()


def form_post(client: FlaskClient, token: str | None = None, **fields: str) -> Any:
    """Post the form as a browser would, with the token from the page it showed."""
    data = {**VALID, "csrf_token": token or csrf_token(client), "altcha": solve_captcha(client)}
    return client.post("/contact", data={**data, **fields})


def assert_thanked(response: Any) -> None:
    """The answer a stored enquiry gets: 303 to the thank-you page."""
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/contact/thanks")


def assert_trap_logged(caplog: pytest.LogCaptureFixture, route: str, trap: str) -> None:
    """One INFO line that names the trap, and no personal data anywhere in the log."""
    lines = [r.getMessage() for r in records(caplog, logging.INFO, "service.intake.accept")]
    assert [line for line in lines if "trapped" in line] == [
        f"submission on the {route} route trapped: {trap}"
        + (" (`flask outbox held`)" if "held as" in trap else "")
    ]
    assert personal_data_in(caplog.text) == [] and SPAM not in caplog.text


# --- The honeypot ----------------------------------------------------------------------------


def test_the_honeypot_is_hidden_from_people_and_from_assistive_technology(
    client: FlaskClient,
) -> None:
    page = client.get("/contact").get_data(as_text=True)
    box = re.search(r'<div class="field field--extra"([^>]*)>(.*?)</div>', page, re.DOTALL)
    assert box is not None, "the honeypot is in the form"
    assert box[1] == ' aria-hidden="true"'
    field = re.search(rf"<input [^>]*name=\"{traps.HONEYPOT}\"[^>]*>", box[2])[0]
    for attribute in ('type="text"', 'tabindex="-1"', 'autocomplete="off"', 'value=""'):
        assert attribute in field
    assert f'<label for="{traps.HONEYPOT}">Leave this field empty</label>' in box[2]
    # Off-screen, not display:none (which robots know to skip) and not in the page's width.
    with client.get("/static/form.css") as stylesheet:
        css = stylesheet.get_data(as_text=True)
    rule = re.search(r"\.field--extra \{([^}]*)\}", css)[1]
    assert "position: absolute" in rule and "left: -10000px" in rule
    assert "display" not in rule and "visibility" not in rule


def test_the_honeypot_has_a_name_no_browser_autofills() -> None:
    assert not [word for word in AUTOFILL_WORDS if word in traps.HONEYPOT.lower()]


def held(app: Flask) -> list[Enquiry]:
    """The held enquiries in the store, oldest first."""
    with app.app_context(), app.extensions["store"].sessions() as session:
        query = session.query(Enquiry).filter_by(status="held").order_by(Enquiry.created_at)
        return list(query)


def test_a_filled_honeypot_on_the_page_is_thanked_and_held_not_sent(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    before = caught("page", "held")
    assert_thanked(form_post(client, **{traps.HONEYPOT: SPAM}))
    [enquiry] = held(app)
    assert (enquiry.held_reason, enquiry.name, enquiry.attempts) == (
        "honeypot filled",
        VALID["name"],
        0,
    )
    assert enquiry.idempotency_key is None, "a held post blocks no later one"
    assert deliver_all(app) == 0 and smtp_server.messages == []
    assert caught("page", "held") == before + 1
    assert_trap_logged(caplog, "page", f"honeypot filled; held as enquiry {enquiry.id}")


def test_a_filled_honeypot_on_the_api_gets_its_held_id(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    before = caught("api", "held")
    body = {**VALID, "altcha": solve_captcha(client), traps.HONEYPOT: SPAM}
    first, second = (client.post("/api/enquiries", json=body) for _ in range(2))
    for response in (first, second):
        assert response.status_code == 202
        assert response.get_json()["status"] == "queued"
    assert [enquiry.id for enquiry in held(app)] == [
        first.get_json()["id"],
        second.get_json()["id"],
    ]
    assert stored(app) == 2 and caught("api", "held") == before + 2


def test_a_trapped_post_too_invalid_to_deliver_is_thanked_and_not_kept(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    before = caught("page", "trapped")
    assert_thanked(form_post(client, email="not an address", **{traps.HONEYPOT: SPAM}))
    assert stored(app) == 0
    assert caught("page", "trapped") == before + 1
    assert_trap_logged(caplog, "page", "honeypot filled; invalid, not stored")


@pytest.mark.parametrize("value", [1, True, ["x"], {"url": SPAM}])
def test_any_json_value_in_the_honeypot_springs_it(
    app: Flask, client: FlaskClient, value: Any
) -> None:
    body = {**VALID, "altcha": solve_captcha(client), traps.HONEYPOT: value}
    assert client.post("/api/enquiries", json=body).status_code == 202
    assert len(held(app)) == 1


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_honeypot_springs_nothing(app: Flask, client: FlaskClient, value: str) -> None:
    assert_thanked(form_post(client, **{traps.HONEYPOT: value}))
    body = {**VALID, "altcha": solve_captcha(client), traps.HONEYPOT: value}
    assert client.post("/api/enquiries", json=body).status_code == 202
    assert stored(app) == 2 and held(app) == []


# --- The minimum time to fill the form --------------------------------------------------------


def test_a_form_sent_too_soon_is_thanked_and_held(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(FORM_MIN_FILL_SECONDS=30)
    client = app.test_client()
    before = caught("page", "held")
    assert_thanked(form_post(client))
    [enquiry] = held(app)
    assert enquiry.held_reason == "sent too fast"
    assert caught("page", "held") == before + 1
    assert_trap_logged(caplog, "page", f"sent too fast; held as enquiry {enquiry.id}")


def test_a_form_shown_again_for_an_expired_token_is_not_caught_by_the_fill_time(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    # Tokens carry whole seconds: with a limit of 1 s, a token signed at x.999 s and sent back
    # 1.02 s later is 2 s old and refused. A 2 s limit still ends the first token within the
    # 3.2 s wait, and keeps the second valid for the 1 s the visitor takes.
    app = make_app(FORM_MIN_FILL_SECONDS=3, WTF_CSRF_TIME_LIMIT=2)
    client = app.test_client()
    token = csrf_token(client)
    time.sleep(3.2)  # the visitor takes their time; the token expires meanwhile
    again = form_post(client, token=token)
    assert again.status_code == 400
    page = again.get_data(as_text=True)
    assert "This form had expired. Please check your details and press Send again." in page
    fresh = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert fresh is not None and fresh[1] != token
    time.sleep(1)  # and press Send again a second later
    assert_thanked(form_post(client, token=fresh[1]))
    assert held(app) == [] and stored(app) == 1
    assert deliver_all(app) == 1 and len(smtp_server.messages) == 1


def test_a_form_shown_again_with_errors_keeps_the_time_it_was_first_shown(
    make_app: AppFactory,
) -> None:
    app = make_app(FORM_MIN_FILL_SECONDS=2)
    client = app.test_client()
    token = csrf_token(client)
    time.sleep(2.1)
    assert form_post(client, token=token, email="jane@").status_code == 422
    assert_thanked(form_post(client, token=token))  # corrected at once
    assert held(app) == [] and stored(app) == 1


def test_a_form_sent_after_the_minimum_time_is_stored(make_app: AppFactory) -> None:
    app = make_app(FORM_MIN_FILL_SECONDS=1)
    client = app.test_client()
    token = csrf_token(client)  # the page is shown now; its token carries the time
    time.sleep(1.1)
    assert_thanked(form_post(client, token=token))
    assert stored(app) == 1


def test_the_api_has_no_minimum_time(make_app: AppFactory) -> None:
    # API clients render their own form: there is no moment it was shown to measure from.
    app = make_app(FORM_MIN_FILL_SECONDS=3600)
    client = app.test_client()
    response = client.post("/api/enquiries", json={**VALID, "altcha": solve_captcha(client)})
    assert response.status_code == 202
    assert stored(app) == 1


def test_the_testing_configuration_needs_no_wait(client: FlaskClient, app: Flask) -> None:
    assert app.config["FORM_MIN_FILL_SECONDS"] == 0
    assert_thanked(form_post(client))
    assert stored(app) == 1


OUTCOMES = ("accepted", "repeated", "invalid", "captcha_failed", "held", "trapped")


def api_counts() -> dict[str, float]:
    """The API's submission counters for each outcome."""
    return {
        outcome: REGISTRY.get_sample_value(
            "contact_form_submissions_total", {"route": "api", "outcome": outcome}
        )
        or 0.0
        for outcome in OUTCOMES
    }


def test_every_outcome_is_counted_once(client: FlaskClient) -> None:
    before = api_counts()
    body = {**VALID, "altcha": solve_captcha(client)}
    retry = {"Idempotency-Key": "counted-once"}
    client.post("/api/enquiries", json=body, headers=retry)  # accepted
    client.post("/api/enquiries", json=body, headers=retry)  # repeated
    invalid = {**body, "email": "jane@", "altcha": solve_captcha(client)}
    client.post("/api/enquiries", json=invalid)  # invalid
    client.post("/api/enquiries", json={**VALID, "altcha": "forged"})  # captcha_failed
    client.post("/api/enquiries", json={**body, traps.HONEYPOT: SPAM})  # held
    client.post("/api/enquiries", json={**invalid, traps.HONEYPOT: SPAM})  # trapped
    after = api_counts()
    assert {name: after[name] - before[name] for name in OUTCOMES} == dict.fromkeys(OUTCOMES, 1)
