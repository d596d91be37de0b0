"""The hostile corpus, end to end: refused with the exact text, or delivered as inert text."""

from __future__ import annotations

import io
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import markupsafe
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from service.delivery.message import ascii_email
from service.intake import body_checks
from service.store.models import Enquiry
from tests.conftest import VALID, csrf_token, deliver_all, solve_captcha
from tests.hostile_inputs import (
    API_REQUESTS,
    EXTRA_KEYS,
    FIELD_CASES,
    FORM_REQUESTS,
    VALID_JSON,
    FieldCase,
    RequestCase,
)
from tests.smtp_server import SMTPTestServer

INBOX = "front-desk@clinic.example"
SENDER = "Contact form <forms@clinic.example>"
HEADERS = [
    "Auto-Submitted",
    "Content-Type",
    "Date",
    "From",
    "MIME-Version",
    "Message-ID",
    "Reply-To",
    "Subject",
    "To",
    "X-Enquiry-ID",
]
# Every tag the email's HTML part is built from: a visitor's words never add one.
TEMPLATE_TAGS = {"html", "head", "meta", "title", "body", "h1", "h2", "table", "tr", "th", "td"}
TEMPLATE_TAGS |= {"a", "div", "p"}
# Refused before any view runs, so the store is never touched: one kind of store is enough.
BEFORE_THE_STORE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_the_corpus_is_large_and_covers_every_field() -> None:
    assert len(FIELD_CASES) + len(API_REQUESTS) + len(FORM_REQUESTS) >= 50
    fields = {case.field for case in FIELD_CASES}
    assert {"name", "email", "phone", "message", "page", "altcha"} <= fields
    ids = [case.id for case in [*FIELD_CASES, *API_REQUESTS, *FORM_REQUESTS]]
    assert len(ids) == len(set(ids))


class _Tags(HTMLParser):
    """Collect every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def stored_enquiries(app: Flask) -> list[Enquiry]:
    """Every enquiry in the store."""
    with app.app_context(), app.extensions["store"].sessions() as session:
        return list(session.scalars(select(Enquiry)))


def count_enquiries(app: Flask) -> int:
    """How many enquiries the store holds."""
    with app.app_context(), app.extensions["store"].sessions() as session:
        return session.scalar(select(func.count()).select_from(Enquiry)) or 0


def assert_delivered_safely(app: Flask, smtp_server: SMTPTestServer) -> Enquiry:
    """Deliver the one stored enquiry and check the email the server received; return it."""
    (enquiry,) = stored_enquiries(app)
    assert deliver_all(app) == 1
    (received,) = smtp_server.wait_for(1)
    # One message in one SMTP transaction: nothing in the text started a second MAIL FROM.
    assert len(smtp_server.messages) == 1
    assert received.rcpt_tos == [INBOX]
    assert received.mail_from == "forms@clinic.example"
    assert sorted(received.message.keys()) == HEADERS
    assert received.header("To") == INBOX
    assert received.header("From") == SENDER
    assert received.header("Subject") == f"New enquiry from {enquiry.name}"
    (reply_to,) = received.message["Reply-To"].addresses
    assert reply_to.addr_spec == ascii_email(enquiry.email or "")
    assert received.text is not None and received.html is not None
    assert (enquiry.message or "") in received.text
    assert str(markupsafe.escape(enquiry.message)) in received.html

    parser = _Tags()
    parser.feed(received.html)
    assert {tag for tag, _ in parser.tags} <= TEMPLATE_TAGS
    links = [attrs.get("href") for tag, attrs in parser.tags if tag == "a"]
    expected = [f"mailto:{enquiry.email}", f"tel:{enquiry.phone}"]
    assert links == expected + ([enquiry.page_url] if enquiry.page_url else [])
    for _, attrs in parser.tags:
        assert not [name for name in attrs if name.startswith("on") or name == "src"]
    return enquiry


def assert_stored_value(enquiry: Enquiry, case: FieldCase) -> None:
    """The field holds what the case expects (page_url: only a plain http(s) URL)."""
    if case.field == "page":
        assert enquiry.page_url is None or enquiry.page_url.startswith("https://")
        assert "\n" not in (enquiry.page_url or "") and "\r" not in (enquiry.page_url or "")
    elif case.field in VALID_JSON:
        expected = case.stored if case.stored is not None else str(case.value).strip()
        assert getattr(enquiry, case.field) == expected


@pytest.mark.parametrize("case", FIELD_CASES, ids=lambda case: case.id)
def test_hostile_field_through_the_api(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer, case: FieldCase
) -> None:
    body: dict[str, Any] = {**VALID_JSON, "altcha": solve_captcha(client), case.field: case.value}
    response = client.post("/api/enquiries", json=body)
    if case.error is not None:
        assert (response.status_code, response.get_json()) == (
            422,
            {"errors": {case.field: [case.error]}},
        )
        assert count_enquiries(app) == 0
        return
    assert response.status_code == 202, response.get_json()
    enquiry = assert_delivered_safely(app, smtp_server)
    assert enquiry.id == response.get_json()["id"]
    assert_stored_value(enquiry, case)


@pytest.mark.parametrize("case", [c for c in FIELD_CASES if c.form], ids=lambda case: case.id)
def test_hostile_field_through_the_form_page(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer, case: FieldCase
) -> None:
    data = {
        **VALID_JSON,
        "csrf_token": csrf_token(client),
        "altcha": solve_captcha(client),
        case.field: case.value,
    }
    response = client.post("/contact", data=data)
    if case.error is not None:
        assert response.status_code == 422
        page = response.get_data(as_text=True)
        assert f'id="{case.field}-error">{markupsafe.escape(case.error)}</p>' in page
        assert count_enquiries(app) == 0
        return
    assert response.status_code == 303
    assert_stored_value(assert_delivered_safely(app, smtp_server), case)


@BEFORE_THE_STORE
@pytest.mark.parametrize("case", API_REQUESTS, ids=lambda case: case.id)
def test_hostile_request_to_the_api_is_refused_with_a_clear_text(
    app: Flask, client: FlaskClient, case: RequestCase
) -> None:
    response = client.post(
        "/api/enquiries",
        data=case.body,
        content_type=case.content_type,
        headers=dict(case.headers),
    )
    assert (response.status_code, response.get_json()) == (case.status, {"error": case.error})
    assert count_enquiries(app) == 0


@BEFORE_THE_STORE
@pytest.mark.parametrize("case", FORM_REQUESTS, ids=lambda case: case.id)
def test_hostile_form_post_is_refused_with_a_clear_page(
    app: Flask, client: FlaskClient, case: RequestCase
) -> None:
    field = case.body.split(b"=", 1)[0].decode("ascii")
    fields = {**VALID_JSON, "csrf_token": csrf_token(client), "altcha": solve_captcha(client)}
    fields.pop(field, None)
    body = urlencode(fields).encode() + b"&" + case.body
    response = client.post("/contact", data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == case.status
    assert response.mimetype == "text/html"
    assert str(markupsafe.escape(case.error)) in response.get_data(as_text=True)
    assert count_enquiries(app) == 0


@BEFORE_THE_STORE
def test_a_multipart_post_that_is_not_utf8_is_refused(app: Flask, client: FlaskClient) -> None:
    boundary = "hostile"
    parts = {**VALID_JSON, "csrf_token": csrf_token(client), "altcha": solve_captcha(client)}
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + (b"J\xffane" if name == "name" else value.encode())
        + b"\r\n"
        for name, value in parts.items()
    )
    body += f"--{boundary}--\r\n".encode()
    response = client.post(
        "/contact", data=body, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert response.status_code == 400
    assert "not valid UTF-8" in response.get_data(as_text=True)
    assert count_enquiries(app) == 0


def test_a_multipart_post_with_a_file_in_place_of_a_field_is_refused(
    app: Flask, client: FlaskClient
) -> None:
    data = {**VALID_JSON, "csrf_token": csrf_token(client), "altcha": solve_captcha(client)}
    data["name"] = (io.BytesIO(b"Jane Citizen"), "name.txt")
    response = client.post("/contact", data=data, content_type="multipart/form-data")
    assert response.status_code == 400
    assert (
        body_checks.FORM_HAS_FILE in markupsafe.Markup(response.get_data(as_text=True)).unescape()
    )
    assert count_enquiries(app) == 0


def test_a_multipart_post_in_utf8_is_accepted(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer
) -> None:
    data = {
        **VALID_JSON,
        "name": "Zoë Nguyễn",
        "csrf_token": csrf_token(client),
        "altcha": solve_captcha(client),
    }
    response = client.post("/contact", data=data, content_type="multipart/form-data")
    assert response.status_code == 303
    assert assert_delivered_safely(app, smtp_server).name == "Zoë Nguyễn"


def test_no_key_in_the_api_changes_recipients_sender_or_subject(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer
) -> None:
    body = {**VALID_JSON, "altcha": solve_captcha(client), **EXTRA_KEYS}
    assert client.post("/api/enquiries", json=body).status_code == 202
    assert assert_delivered_safely(app, smtp_server).name == "Jane Citizen"
    (received,) = smtp_server.messages
    assert received.header("Subject") == "New enquiry from Jane Citizen"
    assert b"evil.example" not in received.data and b"ceo@" not in received.data


def test_no_key_in_the_form_changes_recipients_sender_or_subject(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer
) -> None:
    data = {
        **VALID_JSON,
        "csrf_token": csrf_token(client),
        "altcha": solve_captcha(client),
        **EXTRA_KEYS,
    }
    assert client.post("/contact", data=data).status_code == 303
    assert assert_delivered_safely(app, smtp_server).name == "Jane Citizen"
    (received,) = smtp_server.messages
    assert received.header("Subject") == "New enquiry from Jane Citizen"
    assert b"evil.example" not in received.data and b"ceo@" not in received.data


@pytest.mark.parametrize(
    "key", ["name", "email", "phone", "message", "page", "altcha", "extra_comments"]
)
def test_a_lone_surrogate_in_any_json_value_is_never_a_500(
    app: Flask, client: FlaskClient, key: str
) -> None:
    body = {**VALID, "altcha": solve_captcha(client), key: "x\ud800y"}
    response = client.post("/api/enquiries", json=body)
    assert response.status_code in (202, 400, 422), response.get_data(as_text=True)
    if key == "page":  # not a page of the clinic's: stored as not known
        assert response.status_code == 202
    if key in ("phone", "altcha"):
        assert response.status_code == 422
