"""Shared fixtures: the app on a real store, a real SMTP server, and helpers to fill the form."""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import altcha
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import create_engine, text

from service import create_app
from tests.smtp_server import SMTPTestServer

if TYPE_CHECKING:
    from tests.support import AppFactory, ServerFactory

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
POSTGRES_HINT = (
    "PostgreSQL tests need TEST_DATABASE_URL, e.g. "
    "TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

VALID = {
    "name": "Jane Citizen",
    "email": "jane.citizen@example.com",
    "phone": "0412 345 678",
    "message": "My lower back has been sore since Tuesday.\nCan I book for Friday?",
}


def postgres_url() -> str:
    """The PostgreSQL server for tests; skip without one, but fail in CI."""
    url = os.environ.get("TEST_DATABASE_URL", "")
    if not url:
        if IN_CI:
            pytest.fail(f"CI must test PostgreSQL: {POSTGRES_HINT}")
        pytest.skip(POSTGRES_HINT)
    return url


@contextlib.contextmanager
def private_schema(base: str) -> Iterator[str]:
    """A URL for a new, empty schema on the PostgreSQL server at `base`; dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A fresh, empty store: an SQLite file, or a private schema on the PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'enquiries.sqlite3'}"
        return
    with private_schema(postgres_url()) as url:
        yield url


def redis_client(url: str) -> redis.Redis:
    """A client of the machine's Redis at `url`; skip without one, but fail in CI."""
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError:
        client.close()
        if IN_CI:
            pytest.fail("CI must test Redis: start redis-server on 127.0.0.1:6379")
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    return client


@contextlib.contextmanager
def empty_redis(url: str) -> Iterator[str]:
    """A Redis database of the test's own (`url` names it), emptied before and after."""
    client = redis_client(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def smtp_server() -> Iterator[SMTPTestServer]:
    """A real SMTP server on 127.0.0.1 that records what it receives."""
    with SMTPTestServer() as server:
        yield server


@pytest.fixture
def app_config(database_url: str, smtp_server: SMTPTestServer, tmp_path: Any) -> dict[str, Any]:
    """The settings each test app starts from; tests override entries as they need."""
    return {
        "SECRET_KEY": "test-secret-key",
        "DATABASE_URL": database_url,
        "AUTO_MIGRATE": True,
        "MAIL_SERVER": smtp_server.host,
        "MAIL_PORT": smtp_server.port,
        "MAIL_TIMEOUT": 3.0,
        "CLINIC_INBOX": "front-desk@clinic.example",
        "MAIL_DEFAULT_SENDER": "Contact form <forms@clinic.example>",
        "DELIVERY_WORKER": "external",
        # The tests post faster and more often than people; the limits and the fill-time trap
        # have tests of their own that switch them back on.
        "RATELIMIT_ENABLED": False,
        "FORM_MIN_FILL_SECONDS": 0.0,
    }


@pytest.fixture
def make_app(app_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[AppFactory]:
    """Build apps on the test's store with their own mail settings."""
    from tests.support import AppFactory

    with AppFactory(app_config, monkeypatch) as factory:
        yield factory


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    """Start SMTP test servers with TLS or AUTH."""
    from tests.support import ServerFactory

    with ServerFactory() as factory:
        yield factory


@pytest.fixture
def app(app_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    """The service on a fresh store, with a real SMTP server and CSRF on."""
    monkeypatch.setenv("SERVICE_ENV", "testing")
    application = create_app(app_config)
    yield application
    application.extensions["store"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client for the app."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A runner for the app's CLI commands."""
    return app.test_cli_runner()


def solve_captcha(client: FlaskClient) -> str:
    """Fetch a challenge from the service and solve it as the widget would."""
    challenge = altcha.Challenge.from_dict(client.get("/altcha/challenge").get_json())
    solution = altcha.solve_challenge(challenge)
    assert solution is not None
    return altcha.Payload(challenge, solution).to_base64()


def csrf_token(client: FlaskClient) -> str:
    """Read the CSRF token from the form page, as a browser would."""
    page = client.get("/contact").get_data(as_text=True)
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert match, "the form page has no CSRF token"
    return match.group(1)


def deliver_all(app: Flask) -> int:
    """Run one pass of the delivery worker in this process."""
    from service.delivery.worker import Worker

    return Worker(app, "test").run_once()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Any]:
    """Playwright, to drive Debian's Chromium (it downloads no browser of its own)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as instance:
        yield instance


@pytest.fixture(scope="session")
def browser_context(playwright: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's Chromium, headless, on a profile that blocks third-party cookies."""
    from tests.browser import CHROMIUM_ARGS, block_third_party_cookies, chromium_path

    profile = tmp_path_factory.mktemp("chromium-profile")
    block_third_party_cookies(profile)
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
    )
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def page(browser_context: Any) -> Iterator[Any]:
    """A fresh tab, with the console and CSP violations it reports collected in `page.problems`."""
    tab = browser_context.new_page()
    tab.problems = []
    tab.on(
        "console",
        lambda message: message.type in {"error", "warning"} and tab.problems.append(message.text),
    )
    tab.on("pageerror", lambda error: tab.problems.append(str(error)))
    yield tab
    tab.close()
    browser_context.clear_cookies()
