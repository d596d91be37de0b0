"""Helpers for the outbox, CLI and privacy tests: apps and servers made to measure, the outbox."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import altcha
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from service import create_app
from service.store import destination, lifecycle, queries, sealing
from service.store.models import Destination, Enquiry
from tests.conftest import VALID, solve_captcha
from tests.smtp_server import SMTPTestServer

# A key pair for the tests that run production's settings: enquiries are sealed at rest there.
SEAL_PUBLIC_KEY, SEAL_PRIVATE_KEY = sealing.generate()
SEAL_KEYS = {"SEAL_PUBLIC_KEY": SEAL_PUBLIC_KEY, "SEAL_PRIVATE_KEY": SEAL_PRIVATE_KEY}
# What production cannot start without (the sealing keys aside).
PRODUCTION = {
    "SERVICE_ENV": "production",
    "SECRET_KEY": "s3cret",
    "CLINIC_INBOX": "front-desk@clinic.example",
    "MAIL_SERVER": "127.0.0.1",
    "MAIL_DEFAULT_SENDER": "forms@clinic.example",
}


def enqueue(client: FlaskClient, **overrides: str) -> str:
    """Send an enquiry through the JSON API and return its id."""
    response = client.post(
        "/api/enquiries", json={**VALID, **overrides, "altcha": solve_captcha(client)}
    )
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def load(app: Flask, enquiry_id: str) -> Enquiry:
    """Read one enquiry from the store as it is now."""
    with app.app_context(), app.extensions["store"].sessions() as session:
        enquiry = session.get(Enquiry, enquiry_id)
    assert enquiry is not None, f"no enquiry {enquiry_id}"
    return enquiry


def change(app: Flask, enquiry_id: str, **values: Any) -> None:
    """Set columns of one enquiry directly in the store (to skip a wait, or age a record)."""
    with app.app_context(), app.extensions["store"].sessions() as session, session.begin():
        session.execute(update(Enquiry).where(Enquiry.id == enquiry_id).values(**values))


def make_due(app: Flask, *enquiry_ids: str) -> None:
    """Skip the back-off wait: make the enquiries, and the SMTP server if backed off, due now."""
    for enquiry_id in enquiry_ids:
        change(app, enquiry_id, next_attempt_at=lifecycle.utcnow())
    make_server_due(app)


def make_server_due(app: Flask) -> None:
    """End the SMTP server's back-off now (its failure count stays)."""
    with app.app_context(), app.extensions["store"].sessions() as session, session.begin():
        session.execute(
            update(Destination)
            .where(Destination.failures > 0)
            .values(next_try_at=lifecycle.utcnow() - timedelta(seconds=1))
        )


def smtp_health(app: Flask) -> destination.Health:
    """The SMTP server's health as the workers recorded it."""
    with app.app_context():
        return destination.health()


def counts(app: Flask) -> dict[str, int]:
    """The outbox's counts per state."""
    with app.app_context():
        return queries.status().counts


def records(caplog: pytest.LogCaptureFixture, level: int, logger: str) -> list[logging.LogRecord]:
    """The captured records of exactly `level` from `logger` (or its children)."""
    return [
        record
        for record in caplog.records
        if record.levelno == level
        and (record.name == logger or record.name.startswith(logger + "."))
    ]


def personal_data_in(text: str, fields: dict[str, str] = VALID) -> list[str]:
    """The submitted values (or telling parts of them) that appear in `text`, case-insensitively."""
    digits = re.sub(r"\D", "", fields["phone"])[
        -9:
    ]  # the number without its country or trunk prefix
    needles = [
        fields["name"],
        fields["email"],
        fields["email"].partition("@")[0],
        fields["message"],
    ]
    needles += fields["message"].splitlines()
    found = [needle for needle in needles if needle.strip() and needle.lower() in text.lower()]
    # The phone number in any grouping: 0412 345 678, +61412345678, +61 412-345-678 ...
    if re.search(r"[\s-]?".join(digits), text):
        found.append(fields["phone"])
    return found


def seconds_until(when: datetime) -> float:
    """Seconds from now until `when` (negative if it has passed)."""
    return (when - lifecycle.utcnow()).total_seconds()


def assert_between(value: datetime, low: datetime, high: datetime, slack: float = 0.01) -> None:
    """Assert low <= value <= high, allowing `slack` seconds for timestamp rounding."""
    allowance = timedelta(seconds=slack)
    assert low - allowance <= value <= high + allowance, (low, value, high)


class AppFactory:
    """Builds extra apps on the test's store (other mail settings, a restart); disposes of them."""

    def __init__(self, base_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
        self.base_config = base_config
        self.monkeypatch = monkeypatch
        self.apps: list[Flask] = []

    def __call__(self, server: SMTPTestServer | None = None, **overrides: Any) -> Flask:
        """An app on the same store, talking to `server` (if given) with these settings."""
        self.monkeypatch.setenv("SERVICE_ENV", "testing")
        config = dict(self.base_config)
        if server is not None:
            config.update(MAIL_SERVER=server.host, MAIL_PORT=server.port)
            if server.tls is not None:
                config.update(
                    MAIL_USE_TLS=server.tls == "starttls", MAIL_USE_SSL=server.tls == "implicit"
                )
        config.update(overrides)
        app = create_app(config)
        self.apps.append(app)
        return app

    def __enter__(self) -> AppFactory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for app in self.apps:
            app.extensions["store"].engine.dispose()


class ServerFactory(contextlib.ExitStack):
    """Starts extra SMTP test servers (TLS, AUTH) and stops them all at the end of the test."""

    def __call__(self, **options: Any) -> SMTPTestServer:
        """A started server with these options (tls=..., auth=...)."""
        return self.enter_context(SMTPTestServer(**options))


def wait_until(condition: Callable[[], bool], timeout: float, failure: Callable[[], str]) -> None:
    """Poll `condition` until it holds; fail with `failure()` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(failure())
        time.sleep(0.02)


def forged_payload(client: FlaskClient, counter: int = 0) -> str:
    """A real challenge of the service with its signature forged, as a robot would send it."""
    challenge = altcha.Challenge.from_dict(client.get("/altcha/challenge").get_json())
    challenge.signature = "0" * 64
    return altcha.Payload(challenge, altcha.Solution(counter, "00" * 32)).to_base64()
