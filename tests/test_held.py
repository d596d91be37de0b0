"""Held enquiries: what a spam trap caught waits for a person, who releases or discards it, and
what nobody releases is erased on time; a flood cannot keep more than HELD_MAX."""

from __future__ import annotations

import re
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import update

from service.delivery import held_links, retention
from service.intake import traps
from service.store import lifecycle, queries
from service.store.models import HeldDigest
from tests.conftest import VALID, deliver_all, solve_captcha
from tests.smtp_server import SMTPTestServer
from tests.support import AppFactory, change, counts, load, personal_data_in

RELEASED = "This message was held as possible spam (honeypot filled) and released by hand."


def post_trapped(client: FlaskClient, **overrides: str) -> str:
    """Post through the API with the honeypot filled; return the id the robot is given."""
    body = {**VALID, **overrides, "altcha": solve_captcha(client), traps.HONEYPOT: "x"}
    response = client.post("/api/enquiries", json=body)
    assert response.status_code == 202
    return response.get_json()["id"]


def test_held_lists_id_time_and_trap_and_no_personal_data(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner
) -> None:
    assert runner.invoke(args=["outbox", "held"]).stdout == "No held enquiries.\n"
    enquiry_id = post_trapped(client)
    result = runner.invoke(args=["outbox", "held"])
    assert result.exit_code == 0
    [line] = result.stdout.splitlines()
    assert line.startswith(f"{enquiry_id}  received ") and line.endswith("trap: honeypot filled")
    assert personal_data_in(result.output) == []
    status = runner.invoke(args=["outbox", "status"])
    assert "held     1" in status.stdout.splitlines()
    assert status.exit_code == 0, "held enquiries are not an alarm"
    assert counts(app)["held"] == 1
    shown = runner.invoke(args=["outbox", "show", enquiry_id]).stdout
    assert f"name: {VALID['name']}" in shown and "held_reason: honeypot filled" in shown


def test_release_delivers_once_and_says_it_was_held(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, smtp_server: SMTPTestServer
) -> None:
    enquiry_id = post_trapped(client)
    assert deliver_all(app) == 0, "never delivered on its own"

    result = runner.invoke(args=["outbox", "release", enquiry_id])
    assert (result.exit_code, result.stdout) == (0, "Released 1 held enquiries for delivery.\n")
    assert deliver_all(app) == 1
    [mail] = smtp_server.messages
    assert mail.text is not None and mail.text.splitlines()[0] == RELEASED
    assert mail.html is not None and RELEASED in mail.html
    assert mail.header("Reply-To") is not None and VALID["email"] in mail.header("Reply-To")
    assert load(app, enquiry_id).status == "sent"

    again = runner.invoke(args=["outbox", "release", enquiry_id])
    assert again.exit_code == 1 and "Released 0 held enquiries" in again.stdout
    assert "not held enquiries" in again.stderr
    assert deliver_all(app) == 0 and len(smtp_server.messages) == 1


def test_a_normal_enquiry_says_nothing_of_being_held(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer
) -> None:
    body = {**VALID, "altcha": solve_captcha(client)}
    assert client.post("/api/enquiries", json=body).status_code == 202
    assert deliver_all(app) == 1
    [mail] = smtp_server.messages
    assert "held as possible spam" not in (mail.text or "") + (mail.html or "")


def test_discard_erases_a_held_enquiry_and_nothing_else(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner
) -> None:
    spam, kept = post_trapped(client), post_trapped(client)
    body = {**VALID, "altcha": solve_captcha(client)}
    real = client.post("/api/enquiries", json=body).get_json()["id"]
    result = runner.invoke(args=["outbox", "discard", spam, real])
    assert result.exit_code == 1, "the real one is not held: it is not erased"
    assert result.stdout == "Erased 1 held enquiries.\n"
    assert counts(app)["held"] == 1 and load(app, kept).status == "held"
    assert load(app, real).status == "pending"


def test_held_enquiries_are_erased_after_their_retention(app: Flask, client: FlaskClient) -> None:
    old, recent = post_trapped(client), post_trapped(client)
    change(app, old, created_at=lifecycle.utcnow() - timedelta(days=14, minutes=1))
    change(app, recent, created_at=lifecycle.utcnow() - timedelta(days=13))
    assert deliver_all(app) == 0  # the worker's daily housekeeping runs on its first pass
    assert counts(app)["held"] == 1 and load(app, recent).status == "held"
    with app.app_context():
        assert retention.erase_held(timedelta(days=14)) == 0


def test_a_flood_keeps_only_the_newest_held_max(make_app: AppFactory) -> None:
    app = make_app(HELD_MAX=5)
    client = app.test_client()
    ids = [post_trapped(client, message=f"Flood number {number}") for number in range(8)]
    assert counts(app)["held"] == 5
    with app.app_context():
        kept = {enquiry.id for enquiry in queries.in_state(lifecycle.HELD, 100)}
    assert kept == set(ids[3:]), "the oldest go first"


def test_held_posts_count_against_the_per_client_limit(make_app: AppFactory) -> None:
    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_PER_CLIENT="2 per minute")
    client = app.test_client()
    post_trapped(client), post_trapped(client)
    body = {**VALID, "altcha": solve_captcha(client), traps.HONEYPOT: "x"}
    assert client.post("/api/enquiries", json=body).status_code == 429
    assert counts(app)["held"] == 2


# --- the daily digest ---------------------------------------------------------------------------


def digest_app(make_app: AppFactory, **settings: object) -> Flask:
    """The service with the digest on, as in production."""
    return make_app(HELD_DIGEST=True, SERVICE_URL="https://forms.clinic.example", **settings)


def links_in(text: str) -> list[str]:
    """The release links a digest carries, as paths on the service."""
    return [
        link.removeprefix("https://forms.clinic.example")
        for link in re.findall(r"https://forms\.clinic\.example/held/\S+", text)
    ]


def test_the_digest_arrives_once_a_day_with_a_link_per_held_message(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    app = digest_app(make_app)
    client = app.test_client()
    assert deliver_all(app) == 0 and smtp_server.messages == [], "nothing held: no digest"
    first, second = post_trapped(client), post_trapped(client, message="Another one")

    # The day's digest was claimed (empty) by the first pass: the next day's lists them.
    change_digest_day(app)
    assert deliver_all(app) == 0
    [digest] = smtp_server.messages
    assert digest.rcpt_tos == ["front-desk@clinic.example"]
    assert digest.header("Subject") == "Held as possible spam: 2 messages"
    assert digest.text is not None
    assert digest.text.count(": honeypot filled") == 2
    assert len(links_in(digest.text)) == 2
    assert personal_data_in(digest.text) == [] and "Another one" not in digest.text
    assert deliver_all(app) == 0 and len(smtp_server.messages) == 1, "once a day"
    assert {load(app, first).status, load(app, second).status} == {"held"}


def change_digest_day(app: Flask) -> None:
    """Make today's digest yesterday's, as if a day had passed."""
    with app.app_context(), app.extensions["store"].sessions() as session, session.begin():
        session.execute(update(HeldDigest).values(day="2000-01-01"))


def test_a_link_shows_a_button_and_releases_once_and_a_get_releases_nothing(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    app = digest_app(make_app)
    client = app.test_client()
    enquiry_id = post_trapped(client)
    assert deliver_all(app) == 0
    [digest] = smtp_server.messages
    [link] = links_in(digest.text or "")

    for _ in range(2):  # a mail scanner, then the receptionist, open the link
        page = client.get(link)
        assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
        assert "Deliver this message" in page.get_data(as_text=True)
        assert VALID["name"] not in page.get_data(as_text=True)
    assert load(app, enquiry_id).status == "held", "a GET releases nothing"

    pressed = client.post(link)
    assert pressed.status_code == 200 and "Delivered" in pressed.get_data(as_text=True)
    again = client.post(link)
    assert again.status_code == 404 and "Nothing was changed" in again.get_data(as_text=True)
    assert deliver_all(app) == 1
    delivered = smtp_server.messages[1:]
    assert len(delivered) == 1 and delivered[0].text.splitlines()[0] == RELEASED
    assert client.get(link).status_code == 404, "released: the link is spent"


def test_a_forged_or_damaged_link_does_nothing(make_app: AppFactory) -> None:
    app = digest_app(make_app)
    client = app.test_client()
    enquiry_id = post_trapped(client)
    with app.app_context():
        token = held_links.token_for(enquiry_id)
    for path in (f"/held/{token[:-2]}", f"/held/{enquiry_id}", "/held/x"):
        assert client.get(path).status_code == 404
        assert client.post(path).status_code == 404
    assert load(app, enquiry_id).status == "held"


def test_without_service_url_the_digest_says_how_to_release_by_command(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    app = make_app(HELD_DIGEST=True)
    enquiry_id = post_trapped(app.test_client())
    assert deliver_all(app) == 0
    [digest] = smtp_server.messages
    assert f"flask --app wsgi outbox release {enquiry_id}" in (digest.text or "")
    assert "/held/" not in (digest.text or "")


def test_held_digest_false_sends_none(make_app: AppFactory, smtp_server: SMTPTestServer) -> None:
    app = make_app(HELD_DIGEST=False, SERVICE_URL="https://forms.clinic.example")
    post_trapped(app.test_client())
    assert deliver_all(app) == 0 and smtp_server.messages == []


def test_a_digest_the_server_refuses_is_sent_on_a_later_pass(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    app = digest_app(make_app)
    post_trapped(app.test_client())
    smtp_server.refuse()
    assert deliver_all(app) == 0
    smtp_server.restore()
    assert deliver_all(app) == 0
    assert [mail.header("Subject") for mail in smtp_server.messages] == [
        "Held as possible spam: 1 message"
    ]
