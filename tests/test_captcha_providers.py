"""reCAPTCHA, hCaptcha and Turnstile, checked against a real local stand-in of their siteverify:
every refusal and every fault of the provider fails closed with the captcha's text, and says why
in the log."""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from config import ConfigurationError
from service.intake.captcha import third_party
from service.intake.validation import CAPTCHA_FAILED
from service.store.models import Enquiry
from tests.conftest import IN_CI, VALID
from tests.siteverify_server import (
    ERROR_CODES,
    PLACEHOLDER_HOSTNAMES,
    PROVIDERS,
    TEST_KEYS,
    TURNSTILE_FAILING_SECRET,
    TURNSTILE_FAILING_SITE_KEY,
    TURNSTILE_SPENT_SECRET,
    SiteverifyServer,
)
from tests.support import AppFactory, personal_data_in, records

REDIS = "redis://127.0.0.1:6379/15"
ROUTES = ("page", "api")
FIELDS = {
    "recaptcha": "g-recaptcha-response",
    "hcaptcha": "h-captcha-response",
    "turnstile": "cf-turnstile-response",
}
WIDGETS = {
    "recaptcha": ("g-recaptcha", "https://www.google.com/recaptcha/api.js"),
    "hcaptcha": ("h-captcha", "https://js.hcaptcha.com/1/api.js"),
    "turnstile": ("cf-turnstile", "https://challenges.cloudflare.com/turnstile/v0/api.js"),
}
SITEVERIFY = {
    "recaptcha": "https://www.google.com/recaptcha/api/siteverify",
    "hcaptcha": "https://api.hcaptcha.com/siteverify",
    "turnstile": "https://challenges.cloudflare.com/turnstile/v0/siteverify",
}


@pytest.fixture
def database_url(tmp_path: Any) -> str:
    """These tests are about the captcha, not the store: SQLite is enough."""
    return f"sqlite:///{tmp_path / 'enquiries.sqlite3'}"


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    """Each third-party provider in turn."""
    return request.param


@pytest.fixture
def stand_in(provider: str) -> Iterator[SiteverifyServer]:
    """The provider's siteverify, on 127.0.0.1, for this test only."""
    with SiteverifyServer(provider) as server:
        yield server


@pytest.fixture
def provider_app(make_app: AppFactory, stand_in: SiteverifyServer) -> Flask:
    """The service with the provider's widget, checking its tokens against the stand-in."""
    return make_app(**provider_settings(stand_in))


def provider_settings(server: SiteverifyServer, **overrides: Any) -> dict[str, Any]:
    """The settings that choose the stand-in's provider and point the checks at it."""
    return {
        "CAPTCHA_PROVIDER": server.provider,
        "CAPTCHA_SITE_KEY": server.site_key,
        "CAPTCHA_SECRET_KEY": server.secret,
        "CAPTCHA_VERIFY_URL": server.url,
        **overrides,
    }


def post(client: FlaskClient, route: str, provider: str, token: str | None, **fields: str) -> Any:
    """Send the enquiry with the widget's token, through the form page (its token included) or
    the JSON API."""
    data = {**VALID, **fields}
    if token is not None:
        data[FIELDS[provider]] = token
    if route == "api":
        return client.post("/api/enquiries", json=data)
    page = client.get("/contact").get_data(as_text=True)
    data["csrf_token"] = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)[1]
    return client.post("/contact", data=data)


def stored(app: Flask) -> int:
    """How many enquiries the store holds."""
    with app.app_context(), app.extensions["store"].sessions() as session:
        return session.query(Enquiry).count()


def counted(route: str, outcome: str) -> float:
    """The submissions counter for this route and outcome, as /metrics would show it."""
    labels = {"route": route, "outcome": outcome}
    return REGISTRY.get_sample_value("contact_form_submissions_total", labels) or 0.0


def assert_accepted(response: Any, route: str) -> None:
    """The answer to a stored enquiry: the thank-you redirect, or 202 queued."""
    if route == "api":
        assert response.status_code == 202, response.get_json()
        assert response.get_json()["status"] == "queued"
    else:
        assert response.status_code == 303, response.get_data(as_text=True)
        assert response.headers["Location"].endswith("/contact/thanks")


def assert_captcha_failed(response: Any, route: str, provider: str) -> None:
    """422 with exactly the captcha's text, next to the widget and in the summary (or JSON)."""
    assert response.status_code == 422
    if route == "api":
        assert response.get_json() == {"errors": {FIELDS[provider]: [CAPTCHA_FAILED]}}
        return
    page = response.get_data(as_text=True)
    assert re.findall(r'<p class="error" id="([^"]+)">([^<]*)</p>', page) == [
        ("captcha-error", CAPTCHA_FAILED)
    ]
    assert f'<li><a href="#captcha">{CAPTCHA_FAILED}</a></li>' in page
    assert '<div class="field field--error" id="captcha" tabindex="-1">' in page


def refusal_logged(caplog: pytest.LogCaptureFixture, reason: str) -> str:
    """The WARNING that says why the captcha failed; it must hold no personal data."""
    warnings = [
        r.getMessage()
        for r in records(caplog, logging.WARNING, "service.intake.captcha.third_party")
    ]
    assert any(reason in message for message in warnings), warnings
    return "\n".join(warnings)


# --- The widget on the page ---------------------------------------------------------------------


def test_the_page_shows_the_providers_widget_and_script_under_the_csp(
    provider_app: Flask, provider: str
) -> None:
    response = provider_app.test_client().get("/contact")
    page = response.get_data(as_text=True)
    widget_class, script = WIDGETS[provider]
    assert f'<div class="{widget_class}" data-sitekey="stand-in-site-key"' in page
    nonce = re.search(r"'nonce-([^']+)'", response.headers["Content-Security-Policy"])[1]
    assert re.search(
        rf'<script src="{re.escape(script)}(\?[^"]*)?" nonce="{nonce}" async defer></script>', page
    )
    assert "altcha" not in page
    assert "The captcha needs JavaScript" in page


GOOGLE_SCRIPTS = "https://www.google.com/recaptcha/ https://www.gstatic.com/recaptcha/"
GOOGLE_FRAMES = "https://www.google.com/recaptcha/ https://recaptcha.google.com/recaptcha/"
HCAPTCHA = "https://hcaptcha.com https://*.hcaptcha.com"
CLOUDFLARE = "https://challenges.cloudflare.com"


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        (
            "recaptcha",
            {
                "script-src": f"'self' 'nonce' {GOOGLE_SCRIPTS}",
                "frame-src": f"'self' {GOOGLE_FRAMES}",
                "style-src": "'self' 'nonce'",
                "connect-src": "'self'",
            },
        ),
        (
            "hcaptcha",
            {
                "script-src": f"'self' 'nonce' {HCAPTCHA}",
                "frame-src": f"'self' {HCAPTCHA}",
                "style-src": f"'self' 'nonce' {HCAPTCHA}",
                "connect-src": f"'self' {HCAPTCHA}",
            },
        ),
        (
            "turnstile",
            {
                "script-src": f"'self' 'nonce' {CLOUDFLARE}",
                "frame-src": f"'self' {CLOUDFLARE}",
                "style-src": "'self' 'nonce'",
                "connect-src": "'self'",
            },
        ),
    ],
)
def test_the_csp_adds_exactly_the_sources_the_provider_documents(
    provider_app: Flask, expected: dict[str, str]
) -> None:
    header = provider_app.test_client().get("/contact").headers["Content-Security-Policy"]
    header = re.sub(r"'nonce-[^']+'", "'nonce'", header)
    policy = dict(part.split(" ", 1) for part in header.split("; "))
    assert {name: policy[name] for name in expected} == expected
    assert policy["worker-src"] == "'self'"  # no blob: workers: those were ALTCHA's
    assert policy["default-src"] == "'self'" and policy["img-src"] == "'self' data:"


def test_altcha_keeps_its_policy_and_needs_no_keys(client: FlaskClient) -> None:
    header = client.get("/contact").headers["Content-Security-Policy"]
    assert "frame-src" not in header and "https:" not in header
    assert "worker-src 'self' blob:" in header


def test_the_altcha_challenge_is_not_served_for_another_provider(provider_app: Flask) -> None:
    assert provider_app.test_client().get("/altcha/challenge").status_code == 404


# --- Accepted --------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_a_solved_widget_stores_the_enquiry(
    provider_app: Flask, stand_in: SiteverifyServer, provider: str, route: str
) -> None:
    token = stand_in.issue()
    before = counted(route, "accepted")
    assert_accepted(post(provider_app.test_client(), route, provider, token), route)
    assert stored(provider_app) == 1
    assert counted(route, "accepted") == before + 1
    # The check is the one each provider documents: form-encoded secret, token and address.
    (sent,) = stand_in.received
    assert sent["secret"] == stand_in.secret
    assert sent["response"] == token
    assert sent["remoteip"] == "127.0.0.1"
    if provider == "hcaptcha":
        assert sent["sitekey"] == stand_in.site_key


@pytest.mark.parametrize("route", ROUTES)
def test_a_token_is_used_once(
    provider_app: Flask, stand_in: SiteverifyServer, provider: str, route: str
) -> None:
    client = provider_app.test_client()
    token = stand_in.issue()
    assert_accepted(post(client, route, provider, token), route)
    again = post(client, route, provider, token, message="Another message, same token.")
    assert_captcha_failed(again, route, provider)
    assert stored(provider_app) == 1
    assert len(stand_in.received) == 1, "a token the service has seen is not sent again"


def test_the_widget_solved_on_an_allowed_site_is_accepted(
    make_app: AppFactory, stand_in: SiteverifyServer, provider: str
) -> None:
    # An API client renders the widget on the clinic's own page.
    app = make_app(**provider_settings(stand_in), ALLOWED_ORIGINS="https://www.clinic.example")
    stand_in.hostname = "www.clinic.example"
    assert_accepted(post(app.test_client(), "api", provider, stand_in.issue()), "api")


def test_a_token_solved_on_the_site_the_host_header_names_is_refused(
    make_app: AppFactory, stand_in: SiteverifyServer, provider: str
) -> None:
    app = make_app(**provider_settings(stand_in), SERVICE_URL="https://forms.clinic.example")
    stand_in.hostname = "attacker.example"  # the attacker solved the widget on their own site
    client = app.test_client()
    data = {**VALID, FIELDS[provider]: stand_in.issue()}
    response = client.post("/api/enquiries", json=data, headers={"Host": "attacker.example"})
    assert response.status_code == 422
    assert stored(app) == 0
    stand_in.hostname = "forms.clinic.example"
    assert_accepted(post(client, "api", provider, stand_in.issue()), "api")


def test_invalid_fields_do_not_spend_the_token(
    provider_app: Flask, stand_in: SiteverifyServer, provider: str
) -> None:
    client = provider_app.test_client()
    token = stand_in.issue()
    wrong = post(client, "api", provider, token, email="jane@")
    assert wrong.status_code == 422
    assert list(wrong.get_json()["errors"]) == ["email"]
    assert stand_in.received == [], "the provider is not asked about a form that cannot be stored"
    assert_accepted(post(client, "api", provider, token), "api")


def test_a_form_refused_again_does_not_spend_the_token_either(
    provider_app: Flask, stand_in: SiteverifyServer, provider: str
) -> None:
    # The second time, the fields' errors come from the record of refused posts: the provider
    # must still not be asked about a form that cannot be stored.
    client = provider_app.test_client()
    token = stand_in.issue()
    for _ in range(2):
        wrong = post(client, "api", provider, token, email="jane@")
        assert wrong.status_code == 422
        assert list(wrong.get_json()["errors"]) == ["email"]
    assert stand_in.received == []
    assert_accepted(post(client, "api", provider, token), "api")


# --- Refused, failing closed -----------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_no_token_is_refused_without_asking(
    provider_app: Flask,
    stand_in: SiteverifyServer,
    provider: str,
    route: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for token in (None, ""):
        assert_captcha_failed(
            post(provider_app.test_client(), route, provider, token), route, provider
        )
    assert stand_in.received == []
    assert stored(provider_app) == 0
    lines = [
        r.getMessage() for r in records(caplog, logging.INFO, "service.intake.captcha.third_party")
    ]
    assert lines == [f"{provider} captcha refused: no {FIELDS[provider]} in the submission"] * 2


def test_a_token_that_is_not_valid_text_is_refused_without_asking(
    provider_app: Flask, stand_in: SiteverifyServer, provider: str
) -> None:
    response = post(provider_app.test_client(), "api", provider, "\ud800")
    assert_captcha_failed(response, "api", provider)
    assert stand_in.received == []
    assert stored(provider_app) == 0


def test_the_altcha_field_is_not_read_for_another_provider(
    provider_app: Flask, provider: str
) -> None:
    response = provider_app.test_client().post("/api/enquiries", json={**VALID, "altcha": "x"})
    assert response.get_json() == {"errors": {FIELDS[provider]: [CAPTCHA_FAILED]}}


@pytest.mark.parametrize(
    ("provider", "code"),
    [(provider, code) for provider in PROVIDERS for code in ERROR_CODES[provider]],
)
@pytest.mark.parametrize("route", ROUTES)
def test_each_error_code_fails_closed_and_is_logged(
    provider_app: Flask,
    stand_in: SiteverifyServer,
    provider: str,
    code: str,
    route: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stand_in.refuse(code)
    token = stand_in.issue()
    before = counted(route, "captcha_failed")
    assert_captcha_failed(post(provider_app.test_client(), route, provider, token), route, provider)
    assert stored(provider_app) == 0
    assert counted(route, "captcha_failed") == before + 1
    logged = refusal_logged(caplog, f"error codes {code}")
    assert personal_data_in(caplog.text) == []
    assert stand_in.secret not in caplog.text and token not in caplog.text
    assert "127.0.0.1" not in logged


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (lambda server: server.fail(500), "HTTP 500"),
        (lambda server: server.fail(503), "HTTP 503"),
        (lambda server: server.fail(404), "HTTP 404"),
        (lambda server: server.send(b"<html>Bad gateway</html>"), "malformed reply"),
        (lambda server: server.send(b'{"success": tru'), "malformed reply"),
        (lambda server: server.send(b"[true]"), "malformed reply"),
        (lambda server: server.send(b'{"success": "true"}'), "malformed reply"),
        (lambda server: server.send(b"\xff\xfe{}"), "malformed reply"),
        (lambda server: server.send(b'{"success": false}'), "refused without error codes"),
        (lambda server: setattr(server, "hostname", "evil.example"), "another site (evil.example)"),
    ],
    ids=[
        "http-500",
        "http-503",
        "http-404",
        "html",
        "truncated-json",
        "json-array",
        "success-as-text",
        "not-utf8",
        "no-error-codes",
        "wrong-hostname",
    ],
)
@pytest.mark.parametrize("route", ROUTES)
def test_a_fault_of_the_provider_fails_closed_and_is_logged(
    provider_app: Flask,
    stand_in: SiteverifyServer,
    provider: str,
    fault: Any,
    reason: str,
    route: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fault(stand_in)
    assert_captcha_failed(
        post(provider_app.test_client(), route, provider, stand_in.issue()), route, provider
    )
    assert stored(provider_app) == 0
    refusal_logged(caplog, reason)
    assert personal_data_in(caplog.text) == []


@pytest.mark.parametrize("route", ROUTES)
def test_a_provider_that_never_answers_fails_closed_in_time(
    make_app: AppFactory,
    stand_in: SiteverifyServer,
    provider: str,
    route: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(**provider_settings(stand_in, CAPTCHA_TIMEOUT=0.5))
    stand_in.hang()
    started = time.monotonic()
    response = post(app.test_client(), route, provider, stand_in.issue())
    assert time.monotonic() - started < 2
    assert_captcha_failed(response, route, provider)
    assert stored(app) == 0
    refusal_logged(caplog, "timeout")


def test_an_unreachable_provider_fails_closed(
    make_app: AppFactory,
    stand_in: SiteverifyServer,
    provider: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:  # a port on which nothing listens
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/siteverify"
    app = make_app(**provider_settings(stand_in, CAPTCHA_VERIFY_URL=closed))
    assert_captcha_failed(
        post(app.test_client(), "api", provider, stand_in.issue()), "api", provider
    )
    refusal_logged(caplog, "unreachable (ConnectionRefusedError)")


# --- The providers' test keys ------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_documented_test_keys_pass_and_say_so_at_start_up(
    make_app: AppFactory,
    stand_in: SiteverifyServer,
    provider: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    site_key, secret, token = TEST_KEYS[provider]
    app = make_app(
        **provider_settings(stand_in, CAPTCHA_SITE_KEY=site_key, CAPTCHA_SECRET_KEY=secret)
    )
    warnings = [
        r.getMessage()
        for r in records(caplog, logging.WARNING, "service.intake.captcha.third_party")
    ]
    assert warnings == [
        f"CAPTCHA_SECRET_KEY is {provider}'s test secret: every captcha will pass. "
        "Use it only for testing, never on the clinic's site."
    ]
    # The test secret answers with a placeholder hostname, which is then not compared.
    assert PLACEHOLDER_HOSTNAMES[provider] not in {"localhost", "127.0.0.1"}
    assert_accepted(post(app.test_client(), "api", provider, token), "api")
    assert f'data-sitekey="{site_key}"' in app.test_client().get("/contact").text


def test_hcaptchas_test_secret_takes_only_its_test_token(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    site_key, secret, _ = TEST_KEYS["hcaptcha"]
    with SiteverifyServer("hcaptcha") as server:
        app = make_app(
            **provider_settings(server, CAPTCHA_SITE_KEY=site_key, CAPTCHA_SECRET_KEY=secret)
        )
        response = post(app.test_client(), "api", "hcaptcha", "a-real-token")
    assert_captcha_failed(response, "api", "hcaptcha")
    refusal_logged(caplog, "error codes not-using-dummy-passcode")


@pytest.mark.parametrize(
    ("secret", "outcome", "code"),
    [
        (TURNSTILE_FAILING_SECRET, "fail", "invalid-input-response"),
        (TURNSTILE_SPENT_SECRET, "fail as already spent", "timeout-or-duplicate"),
    ],
)
def test_turnstiles_failing_test_secrets_fail_every_captcha(
    make_app: AppFactory,
    caplog: pytest.LogCaptureFixture,
    secret: str,
    outcome: str,
    code: str,
) -> None:
    with SiteverifyServer("turnstile") as server:
        app = make_app(
            **provider_settings(
                server, CAPTCHA_SITE_KEY=TURNSTILE_FAILING_SITE_KEY, CAPTCHA_SECRET_KEY=secret
            )
        )
        warnings = [
            r.getMessage()
            for r in records(caplog, logging.WARNING, "service.intake.captcha.third_party")
        ]
        assert f"every captcha will {outcome}." in warnings[0]
        response = post(app.test_client(), "api", "turnstile", TEST_KEYS["turnstile"][2])
    assert_captcha_failed(response, "api", "turnstile")
    refusal_logged(caplog, f"error codes {code}")


# --- Configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["CAPTCHA_SITE_KEY", "CAPTCHA_SECRET_KEY"])
def test_a_provider_without_its_keys_stops_start_up(
    make_app: AppFactory, provider: str, missing: str
) -> None:
    settings = {
        "CAPTCHA_PROVIDER": provider,
        "CAPTCHA_SITE_KEY": "site",
        "CAPTCHA_SECRET_KEY": "secret",
        missing: "",
    }
    with pytest.raises(ConfigurationError, match=f"^{missing} is not set"):
        make_app(**settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"CAPTCHA_PROVIDER": "recaptcha-v3"}, "CAPTCHA_PROVIDER must be altcha, recaptcha, "),
        ({"CAPTCHA_PROVIDER": "Turnstile"}, "not 'Turnstile'"),
        ({"CAPTCHA_VERIFY_URL": "ftp://example.com/siteverify"}, "CAPTCHA_VERIFY_URL must be"),
        ({"CAPTCHA_TIMEOUT": 0}, "CAPTCHA_TIMEOUT must be"),
    ],
)
def test_a_wrong_captcha_setting_stops_start_up(
    make_app: AppFactory, settings: dict[str, Any], message: str
) -> None:
    keys = {"CAPTCHA_PROVIDER": "turnstile", "CAPTCHA_SITE_KEY": "s", "CAPTCHA_SECRET_KEY": "k"}
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        make_app(**{**keys, **settings})


def test_each_provider_is_checked_at_its_own_siteverify_by_default(provider: str) -> None:
    assert third_party.PROVIDERS[provider].verify_url == SITEVERIFY[provider]
    assert third_party.PROVIDERS[provider].field == FIELDS[provider]


# --- Tokens shared across processes through Redis ------------------------------------------------


@pytest.fixture
def replay_redis(stand_in: SiteverifyServer) -> Iterator[redis.Redis]:
    """The machine's Redis (database 15); the keys of this test's tokens are removed after it."""
    client = redis.Redis.from_url(REDIS, socket_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError:
        if IN_CI:
            pytest.fail("CI must test Redis: start redis-server on 127.0.0.1:6379")
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    yield client
    for token in stand_in._issued:
        digest = hashlib.sha256(token.encode()).hexdigest()
        client.delete(f"contact-form:captcha:{stand_in.provider}:{digest}")
    client.close()


def test_a_token_accepted_by_one_process_is_refused_by_another_through_redis(
    make_app: AppFactory,
    stand_in: SiteverifyServer,
    provider: str,
    replay_redis: redis.Redis,
    tmp_path: Any,
) -> None:
    first, second = (
        make_app(
            **provider_settings(stand_in),
            REDIS_URL=REDIS,
            DATABASE_URL=f"sqlite:///{tmp_path / name}.sqlite3",
        )
        for name in ("first", "second")
    )
    token = stand_in.issue()
    assert_accepted(post(first.test_client(), "api", provider, token), "api")
    assert_captcha_failed(post(second.test_client(), "api", provider, token), "api", provider)
    assert (stored(first), stored(second)) == (1, 0)
    assert len(stand_in.received) == 1, "the second process knew the token without asking"
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert 0 < replay_redis.ttl(f"contact-form:captcha:{provider}:{digest}") <= 300
