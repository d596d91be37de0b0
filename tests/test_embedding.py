"""Embedding on other sites: origins, CORS, security headers, the cookie-free token, idempotency."""

from __future__ import annotations

import base64
import html
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import event
from werkzeug.test import TestResponse

from service.intake import accept as intake
from service.intake import form_token
from service.intake.form_token import EXPIRED
from service.intake.validation import CAPTCHA_FAILED
from service.store import lifecycle
from service.store.models import Enquiry
from service.web.api import BAD_IDEMPOTENCY_KEY
from service.web.origins import FOREIGN_ORIGIN
from tests.conftest import VALID, csrf_token, deliver_all, solve_captcha
from tests.support import AppFactory, change, load

CLINIC = "https://www.clinic.example"
SHOP = "http://shop.clinic.example:8080"
EVIL = "https://evil.example"
ACCEPTED = {"/contact": 303, "/api/enquiries": 202}


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    """The shared settings, with the clinic's two sites allowed to embed the form."""
    return {**app_config, "ALLOWED_ORIGINS": f"{CLINIC}, {SHOP}"}


def stored(app: Flask) -> int:
    with app.extensions["store"].sessions() as session:
        return session.query(Enquiry).count()


def form_data(client: FlaskClient, **overrides: str) -> dict[str, str]:
    return {**VALID, "csrf_token": csrf_token(client), "altcha": solve_captcha(client), **overrides}


def send(client: FlaskClient, path: str, origin: str | None = None) -> TestResponse:
    """A valid enquiry to the form page or the API, from `origin` (None: no Origin header)."""
    headers = {"Origin": origin} if origin is not None else {}
    if path == "/contact":
        return client.post(path, data=form_data(client), headers=headers)
    return client.post(path, json={**VALID, "altcha": solve_captcha(client)}, headers=headers)


def text_of(response: TestResponse) -> str:
    return html.unescape(response.get_data(as_text=True))


def title_of(response: TestResponse) -> str:
    return html.unescape(re.search(r"<title>(.*?)</title>", response.get_data(as_text=True))[1])


def policy(response: TestResponse) -> dict[str, str]:
    """The Content-Security-Policy as {directive: sources}."""
    directives = response.headers["Content-Security-Policy"].split(";")
    return dict(d.strip().partition(" ")[::2] for d in directives)


def cors_headers(response: TestResponse) -> list[str]:
    return [name for name in response.headers.keys() if name.lower().startswith("access-control")]


# --- Security headers --------------------------------------------------------------------------


EVERY_KIND_OF_RESPONSE = (
    "/contact /contact/thanks /altcha/challenge /healthz /embed.js /theme.css /static/form.css"
    " /no-such-page /api/enquiries"
).split()


@pytest.mark.parametrize("path", EVERY_KIND_OF_RESPONSE)
def test_every_response_carries_the_security_headers(client: FlaskClient, path: str) -> None:
    with client.get(path) as response:
        assert policy(response)["frame-ancestors"] == f"'self' {CLINIC} {SHOP}"
        assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
        assert "Strict-Transport-Security" not in response.headers


@pytest.mark.parametrize(
    ("allowed", "ancestors"),
    [
        ("", "'self'"),
        ("https://WWW.Clinic.example/", f"'self' {CLINIC}"),
        ([CLINIC, "http://shop.clinic.example:8080/"], f"'self' {CLINIC} {SHOP}"),
    ],
)
def test_only_the_service_and_allowed_origins_may_frame_the_form(
    make_app: AppFactory, allowed: str | list[str], ancestors: str
) -> None:
    response = make_app(ALLOWED_ORIGINS=allowed).test_client().get("/contact")
    assert policy(response)["frame-ancestors"] == ancestors


def test_nonce_in_the_policy_matches_the_page_and_changes_per_response(client: FlaskClient) -> None:
    nonces = []
    for response in (client.get("/contact"), client.get("/contact")):
        nonce = re.search(r'<meta name="csp-nonce" content="([^"]+)">', text_of(response))[1]
        assert policy(response)["script-src"] == f"'self' 'nonce-{nonce}'"
        assert f"'nonce-{nonce}'" in policy(response)["style-src"].split()
        nonces.append(nonce)
    assert nonces[0] != nonces[1]


@pytest.mark.parametrize(
    ("base_url", "hsts"), [("http://localhost", False), ("https://localhost", True)]
)
def test_hsts_is_sent_only_over_https(app: Flask, base_url: str, hsts: bool) -> None:
    response = app.test_client().get("/contact", base_url=base_url)
    assert ("Strict-Transport-Security" in response.headers) is hsts


# --- Who may submit: the Origin check ----------------------------------------------------------

FOREIGN = [
    EVIL,
    "null",
    "http://localhost.evil.example",
    "http://localhost:5000",
    "http://www.clinic.example",
    "https://www.clinic.example.evil.example",
]
TRUSTED = [None, "http://localhost", "https://localhost", "http://localhost:80", CLINIC, SHOP]


@pytest.mark.parametrize("origin", FOREIGN)
@pytest.mark.parametrize("path", ACCEPTED)
def test_submission_from_a_foreign_origin_is_refused_and_not_stored(
    app: Flask, client: FlaskClient, path: str, origin: str
) -> None:
    response = send(client, path, origin)
    assert response.status_code == 403
    if path.startswith("/api/"):
        assert response.get_json() == {"error": FOREIGN_ORIGIN}
    else:
        assert FOREIGN_ORIGIN in text_of(response)
    assert stored(app) == 0


@pytest.mark.parametrize("origin", TRUSTED)
@pytest.mark.parametrize("path", ACCEPTED)
def test_submission_from_the_service_or_an_allowed_origin_is_accepted(
    app: Flask, client: FlaskClient, path: str, origin: str | None
) -> None:
    assert send(client, path, origin).status_code == ACCEPTED[path]
    assert stored(app) == 1


# --- CORS: the API and the challenge only ------------------------------------------------------


@pytest.mark.parametrize("origin", [CLINIC, SHOP])
def test_allowed_origin_may_read_the_api_and_the_challenge(
    client: FlaskClient, origin: str
) -> None:
    for response in (
        client.get("/altcha/challenge", headers={"Origin": origin}),
        send(client, "/api/enquiries", origin),
    ):
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert "Origin" in response.vary


def test_allowed_origin_may_read_the_api_errors_too(client: FlaskClient) -> None:
    response = client.post(
        "/api/enquiries", json={**VALID, "email": "jane@"}, headers={"Origin": CLINIC}
    )
    assert response.status_code == 422
    assert response.headers["Access-Control-Allow-Origin"] == CLINIC


def test_preflight_from_an_allowed_origin_permits_post_with_idempotency_key(
    client: FlaskClient,
) -> None:
    response = client.options(
        "/api/enquiries",
        headers={
            "Origin": CLINIC,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, idempotency-key",
        },
    )
    assert response.status_code in {200, 204}
    assert response.headers["Access-Control-Allow-Origin"] == CLINIC
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert "POST" in methods
    assert {"content-type", "idempotency-key"} <= allowed


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/altcha/challenge"), ("OPTIONS", "/api/enquiries"), ("POST", "/api/enquiries")],
)
def test_foreign_origin_gets_no_cors_permission(
    client: FlaskClient, method: str, path: str
) -> None:
    headers = {"Origin": EVIL, "Access-Control-Request-Method": "POST"}
    response = client.open(path, method=method, headers=headers, json={**VALID})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_form_page_never_gets_cors_headers(client: FlaskClient) -> None:
    assert cors_headers(client.get("/contact", headers={"Origin": CLINIC})) == []
    assert cors_headers(send(client, "/contact", CLINIC)) == []


# --- A form that needs no cookie ---------------------------------------------------------------


def test_form_sets_no_cookie(client: FlaskClient) -> None:
    page = client.get("/contact")
    challenge = client.get("/altcha/challenge")
    invalid = client.post("/contact", data=form_data(client, email="jane@"))
    sent = send(client, "/contact")
    assert (invalid.status_code, sent.status_code) == (422, 303)
    for response in (page, challenge, invalid, sent):
        assert "Set-Cookie" not in response.headers


def test_token_from_the_page_works_from_a_browser_without_cookies(
    app: Flask, client: FlaskClient
) -> None:
    token = csrf_token(client)
    cookieless = app.test_client(use_cookies=False)
    data = {**VALID, "csrf_token": token, "altcha": solve_captcha(cookieless)}
    assert cookieless.post("/contact", data=data).status_code == 303
    assert stored(app) == 1


def forged(token: str, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    return "forged"


def spliced(token: str, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """Another value under the original timestamp and signature."""
    return "ImFub3RoZXIgdmFsdWUi" + token[token.index(".") :]


def other_key(token: str, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    return csrf_token(make_app(SECRET_KEY="another-secret-key").test_client())


def expired(token: str, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """The page was left open for seven hours (the limit is six)."""
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda _: int(time.time()) + 7 * 3600)
    return token


@pytest.mark.parametrize("spoil", [forged, spliced, other_key, expired])
def test_bad_token_shows_the_form_again_with_the_visitors_words(
    app: Flask,
    client: FlaskClient,
    make_app: AppFactory,
    monkeypatch: pytest.MonkeyPatch,
    spoil: Any,
) -> None:
    token = spoil(csrf_token(client), make_app, monkeypatch)
    response = client.post("/contact", data={**form_data(client), "csrf_token": token})
    assert response.status_code == 400
    page = text_of(response)
    assert EXPIRED in page
    assert 'value="Jane Citizen"' in page and VALID["message"] in page
    assert stored(app) == 0
    fresh = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)[1]
    again = client.post("/contact", data={**form_data(client), "csrf_token": fresh})
    assert again.status_code == 303, "pressing Send again sends it"


# --- Idempotency: the same form or request sent twice is stored once --------------------------


def test_same_form_posted_twice_stores_and_mails_one_enquiry(
    app: Flask, client: FlaskClient, smtp_server: Any
) -> None:
    data = form_data(client)
    for response in (client.post("/contact", data=data), client.post("/contact", data=data)):
        assert response.status_code == 303
        assert response.headers["Location"].endswith("/contact/thanks")
    assert stored(app) == 1
    assert deliver_all(app) == 1
    assert len(smtp_server.wait_for(1)) == 1


def test_edited_message_with_the_same_token_is_a_new_enquiry(
    app: Flask, client: FlaskClient
) -> None:
    data = form_data(client)
    assert client.post("/contact", data=data).status_code == 303
    edited = {**data, "message": "Sorry, I meant Monday, not Friday."}
    reused = client.post("/contact", data=edited)
    assert reused.status_code == 422
    assert f'<p class="error" id="altcha-error">{CAPTCHA_FAILED}</p>' in text_of(reused)
    assert stored(app) == 1
    resolved = client.post("/contact", data={**edited, "altcha": solve_captcha(client)})
    assert resolved.status_code == 303
    assert stored(app) == 2


@pytest.mark.parametrize("key", ["b7e1c2a0-retry", "k" * 200, "a key with spaces ~!"])
def test_api_retry_with_the_same_idempotency_key_is_one_enquiry(
    app: Flask, client: FlaskClient, smtp_server: Any, key: str
) -> None:
    body = {**VALID, "altcha": solve_captcha(client)}
    first, retry = (
        client.post("/api/enquiries", json=body, headers={"Idempotency-Key": key}) for _ in range(2)
    )
    assert (first.status_code, retry.status_code) == (202, 202)
    assert retry.get_json()["id"] == first.get_json()["id"]
    assert stored(app) == 1
    assert deliver_all(app) == 1
    assert len(smtp_server.wait_for(1)) == 1


def test_an_idempotency_key_is_honoured_for_a_day_and_freed_by_the_purge(
    app: Flask, client: FlaskClient, smtp_server: Any
) -> None:
    headers = {"Idempotency-Key": "reused-by-the-client"}

    def post() -> str:
        body = {**VALID, "altcha": solve_captcha(client)}
        response = client.post("/api/enquiries", json=body, headers=headers)
        assert response.status_code == 202
        return response.get_json()["id"]

    first = post()
    assert post() == first, "within the day: the same enquiry, even with a new captcha"
    change(app, first, created_at=lifecycle.utcnow() - timedelta(hours=24, minutes=1))
    second = post()
    assert second != first and stored(app) == 2, "a day later: a new enquiry"
    assert load(app, first).idempotency_key is None
    assert deliver_all(app) == 2

    # The retention purge takes the digest of the fields with the fields.
    result = app.test_cli_runner().invoke(args=["outbox", "purge", "--older-than", "0m"])
    assert result.exit_code == 0, result.output
    assert load(app, second).idempotency_key is None
    assert post() not in {first, second}


@pytest.mark.parametrize(
    "altcha",
    ["", "not-base64!", "forged"],
    ids=["missing", "unreadable", "wrong-solution"],
)
@pytest.mark.parametrize("path", ACCEPTED)
def test_a_post_without_a_genuine_captcha_answer_costs_no_store_query(
    app: Flask, client: FlaskClient, path: str, altcha: str
) -> None:
    """Only a genuine answer used before can mean a resend; junk is refused without a look-up."""
    if altcha == "forged":
        genuine = json.loads(base64.b64decode(solve_captcha(client)))
        genuine["solution"]["derivedKey"] = "00" * 32
        altcha = base64.b64encode(json.dumps(genuine).encode()).decode()
    data = {**VALID, "csrf_token": csrf_token(client), "altcha": altcha}
    statements: list[str] = []
    engine = app.extensions["store"].engine
    record = lambda *args: statements.append(args[2])  # noqa: E731 - (conn, cursor, statement, ...)
    event.listen(engine, "before_cursor_execute", record)
    try:
        if path == "/contact":
            response = client.post(path, data=data)
        else:
            response = client.post(path, json={k: v for k, v in data.items() if k != "csrf_token"})
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 422
    assert statements == []


def statements_of(app: Flask, post: Any) -> tuple[TestResponse, list[str]]:
    """A request's response, and the SQL statements it sent to the store."""
    statements: list[str] = []
    engine = app.extensions["store"].engine
    record = lambda *args: statements.append(args[2])  # noqa: E731 - (conn, cursor, statement, ...)
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = post()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return response, statements


@pytest.mark.parametrize("path", ACCEPTED)
def test_a_fresh_answer_is_not_looked_up_before_the_insert_that_spends_it(
    app: Flask, client: FlaskClient, path: str
) -> None:
    """The insert refuses a used answer itself; a read before it was a statement per enquiry."""
    data = {**VALID, "csrf_token": csrf_token(client), "altcha": solve_captcha(client)}
    if path == "/contact":
        response, statements = statements_of(app, lambda: client.post(path, data=data))
    else:
        body = {k: v for k, v in data.items() if k != "csrf_token"}
        response, statements = statements_of(app, lambda: client.post(path, json=body))
    assert response.status_code == ACCEPTED[path]
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert not [s for s in reads if "used_captchas" in s], statements


def test_a_spent_answer_sent_again_costs_this_process_no_store_statement(
    app: Flask, client: FlaskClient
) -> None:
    spent = solve_captcha(client)
    assert client.post("/api/enquiries", json={**VALID, "altcha": spent}).status_code == 202
    for message in ("Again?", "And again?"):
        body = {**VALID, "message": message, "altcha": spent}
        response, statements = statements_of(
            app, lambda body=body: client.post("/api/enquiries", json=body)
        )
        assert response.status_code == 422
        assert response.get_json()["errors"] == {"altcha": [CAPTCHA_FAILED]}
        assert statements == []
    assert stored(app) == 1


def test_an_answer_spent_by_another_process_is_refused_by_the_insert_and_not_stored(
    app: Flask, client: FlaskClient, make_app: AppFactory
) -> None:
    """Another instance on the same store has not seen it spent: its insert finds it so."""
    spent = solve_captcha(client)
    assert client.post("/api/enquiries", json={**VALID, "altcha": spent}).status_code == 202
    other = make_app()
    body = {**VALID, "message": "Another message.", "altcha": spent}
    response = other.test_client().post("/api/enquiries", json=body)
    assert response.status_code == 422
    assert response.get_json()["errors"] == {"altcha": [CAPTCHA_FAILED]}
    assert stored(app) == 1
    # Now this instance knows it too: no statement the next time.
    response, statements = statements_of(
        other, lambda: other.test_client().post("/api/enquiries", json=body)
    )
    assert response.status_code == 422 and statements == []


@pytest.mark.parametrize(
    ("key", "messages"),
    [(None, ["Friday, please."] * 2), ("same-key", ["Friday, please.", "Monday, please."])],
    ids=["no-key", "same-key-new-message"],
)
def test_api_posts_that_are_not_retries_are_each_stored(
    app: Flask, client: FlaskClient, key: str | None, messages: list[str]
) -> None:
    headers = {"Idempotency-Key": key} if key else {}
    bodies = [{**VALID, "message": m, "altcha": solve_captcha(client)} for m in messages]
    ids = {client.post("/api/enquiries", json=b, headers=headers).get_json()["id"] for b in bodies}
    assert len(ids) == 2 and stored(app) == 2


@pytest.mark.parametrize(
    "key",
    ["", "k" * 201, "clé-1", "tab\there", "nul\x00", "del\x7f", "bell\x07"],
    ids=["empty", "too-long", "non-ascii", "tab", "nul", "del", "bell"],
)
def test_malformed_idempotency_key_gives_400(app: Flask, client: FlaskClient, key: str) -> None:
    body = {**VALID, "altcha": solve_captcha(client)}
    response = client.post("/api/enquiries", json=body, headers={"Idempotency-Key": key})
    assert response.status_code == 400
    assert response.get_json() == {"error": BAD_IDEMPOTENCY_KEY}
    assert stored(app) == 0


@pytest.mark.parametrize("solutions", [1, 2], ids=["one-captcha", "two-captchas"])
@pytest.mark.parametrize("path", ACCEPTED)
def test_simultaneous_duplicates_store_one_enquiry(
    app: Flask, monkeypatch: pytest.MonkeyPatch, path: str, solutions: int
) -> None:
    """Both copies have passed validation before either stores its enquiry: a real race."""
    store_enquiry, both_ready = intake.accept, threading.Barrier(2, timeout=10)

    def accept_when_the_twin_is_ready(*args: Any, **kwargs: Any) -> Enquiry:
        both_ready.wait()
        return store_enquiry(*args, **kwargs)

    monkeypatch.setattr(intake, "accept", accept_when_the_twin_is_ready)
    client = app.test_client()
    token, captchas = csrf_token(client), [solve_captcha(client) for _ in range(solutions)]

    def post(altcha: str) -> TestResponse:
        if path == "/contact":
            data = {**VALID, "csrf_token": token, "altcha": altcha}
            return app.test_client().post(path, data=data)
        headers = {"Idempotency-Key": "double-click"}
        return app.test_client().post(path, json={**VALID, "altcha": altcha}, headers=headers)

    with ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(pool.map(post, [captchas[0], captchas[-1]]))
    assert [r.status_code for r in responses] == [ACCEPTED[path]] * 2, [r.data for r in responses]
    if path == "/api/enquiries":
        assert responses[0].get_json()["id"] == responses[1].get_json()["id"]
    assert stored(app) == 1


# --- The loader, the theme, and the page title -------------------------------------------------


def test_embed_loader_is_cacheable_javascript_any_site_may_load(client: FlaskClient) -> None:
    with client.get("/embed.js") as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert response.cache_control.public and response.cache_control.max_age == 3600
        assert "no-cache" not in response.headers["Cache-Control"]
        assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
        script = response.get_data(as_text=True)
    assert "event.origin" in script and "contact-form:height" in script


def test_theme_css_without_settings_sets_no_property(client: FlaskClient) -> None:
    response = client.get("/theme.css")
    assert response.mimetype == "text/css"
    assert "--form-" not in response.get_data(as_text=True)


def test_theme_css_sets_the_configured_properties(make_app: AppFactory) -> None:
    app = make_app(THEME_ACCENT="#8a1538", THEME_RADIUS="0")
    css = app.test_client().get("/theme.css").get_data(as_text=True)
    assert "--form-accent: #8a1538;" in css and "--form-radius: 0;" in css


@pytest.mark.parametrize("path", ["/contact", "/contact/thanks", "/no-such-page"])
def test_pages_load_the_theme_after_the_form_styles(client: FlaskClient, path: str) -> None:
    page = client.get(path).get_data(as_text=True)
    assert 0 <= page.index('href="/static/form.css"') < page.index('href="/theme.css"')


def test_site_stylesheet_from_an_allowed_origin_is_linked_and_permitted(
    make_app: AppFactory,
) -> None:
    sheet = f"{CLINIC}/forms.css"
    response = make_app(THEME_STYLESHEET=sheet).test_client().get("/contact")
    page = response.get_data(as_text=True)
    assert page.index('href="/theme.css"') < page.index(f'<link rel="stylesheet" href="{sheet}">')
    assert CLINIC in policy(response)["style-src"].split()


def test_title_says_error_only_when_the_form_comes_back_with_errors(client: FlaskClient) -> None:
    assert title_of(client.get("/contact")) == "Drop us a Line"
    invalid = client.post("/contact", data=form_data(client, email="jane@"))
    assert invalid.status_code == 422
    assert title_of(invalid) == "Error: Drop us a Line"
    sent = send(client, "/contact")
    assert title_of(client.get(sent.headers["Location"])) == "Thank you"


@pytest.mark.parametrize("payload", ["a-random-nonce-of-24-chars", ["a-random-nonce", 1764667195]])
def test_form_tokens_are_those_itsdangerous_signs_and_each_reads_the_others(
    app: Flask, payload: Any
) -> None:
    stock = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=form_token.SALT)
    ours = app.extensions["form_token"]
    assert ours.dumps(payload) == stock.dumps(payload)  # both within one second
    assert ours.loads(stock.dumps(payload)) == payload == stock.loads(ours.dumps(payload))
    assert ours.loads(ours.dumps(payload), max_age=60) == payload  # the signer, built once
    other = URLSafeTimedSerializer("another secret", salt=form_token.SALT)
    with pytest.raises(BadSignature):
        ours.loads(other.dumps(payload))
