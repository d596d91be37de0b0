"""Sealed at rest: with the keys set, no personal field is in the store, its WAL or a dump of it;
only a process holding the private key reads or delivers; keys rotate without loss."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from flask import Flask

import service
from service import create_app
from service.store import sealing
from tests.conftest import VALID, deliver_all, solve_captcha
from tests.smtp_server import SMTPTestServer
from tests.support import PRODUCTION, AppFactory, change, load, make_due, smtp_health

CANARY = {
    "name": "Canary-Name-5e1d",
    "email": "canary.5e1d@example.com",
    "phone": "+61 412 777 531",
    "message": "Canary-Message-5e1d, my knee since the match",
}


@pytest.fixture(scope="module")
def pair() -> tuple[str, str]:
    """A key pair, as `keys generate` prints it."""
    return sealing.generate()


@pytest.fixture(scope="module")
def old_pair() -> tuple[str, str]:
    """Another pair: the key before a rotation."""
    return sealing.generate()


def sealed_app(make_app: AppFactory, public: str, private: str = "", **settings: Any) -> Flask:
    """The service sealing to `public`, holding `private` (none: a web tier)."""
    return make_app(SEAL_AT_REST=True, SEAL_PUBLIC_KEY=public, SEAL_PRIVATE_KEY=private, **settings)


def post(app: Flask, **fields: str) -> str:
    """Send the canary enquiry through the API; its id."""
    client = app.test_client()
    body = {**VALID, **CANARY, **fields, "altcha": solve_captcha(client)}
    response = client.post("/api/enquiries", json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def stored_bytes(app: Flask, database_url: str) -> bytes:
    """Everything the store keeps on disk: the SQLite file and its WAL, or a pg_dump."""
    if database_url.startswith("sqlite"):
        path = Path(urlsplit(database_url).path)
        return b"".join(
            Path(f"{path}{suffix}").read_bytes()
            for suffix in ("", "-wal")
            if Path(f"{path}{suffix}").exists()
        )
    url = urlsplit(database_url)
    options = unquote(parse_qs(url.query)["options"][0])
    schema = re.search(r"search_path=(\w+)", options)[1]
    dump = subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "--schema", schema, "test"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return dump.stdout


def canaries(data: bytes) -> list[bytes]:
    """The canary fragments in `data`."""
    return re.findall(rb"(?i)canary|412\W?777\W?531", data)


def test_no_field_is_in_the_store_and_the_email_carries_them_intact(
    make_app: AppFactory, smtp_server: SMTPTestServer, database_url: str, pair: tuple[str, str]
) -> None:
    app = sealed_app(make_app, *pair)
    enquiry_id = post(app, page="https://clinic.example/canary-article?x=1")
    row = load(app, enquiry_id)
    assert (row.name, row.email, row.phone, row.message, row.page_url) == (None,) * 5
    assert row.sealed is not None and row.sealed_to == sealing.load(*pair).public_id
    assert canaries(stored_bytes(app, database_url)) == []

    assert deliver_all(app) == 1
    [mail] = smtp_server.messages
    assert CANARY["message"] in (mail.text or "")
    assert CANARY["name"] in (mail.text or "") and CANARY["email"] in mail.header("Reply-To")
    assert canaries(stored_bytes(app, database_url)) == [], "delivering writes nothing back"


def test_a_web_tier_with_only_the_public_key_stores_but_cannot_show(
    make_app: AppFactory, pair: tuple[str, str]
) -> None:
    public, private = pair
    web = sealed_app(make_app, public)
    enquiry_id = post(web)
    shown = web.test_cli_runner().invoke(args=["outbox", "show", enquiry_id])
    assert shown.exit_code == 0
    assert canaries(shown.stdout.encode()) == []
    assert "The personal fields are sealed" in shown.stdout and "SEAL_PRIVATE_KEY" in shown.stdout

    operator = sealed_app(make_app, public, private)
    shown = operator.test_cli_runner().invoke(args=["outbox", "show", enquiry_id])
    assert f"name: {CANARY['name']}" in shown.stdout
    assert f"message: {CANARY['message']}" in shown.stdout


def test_an_enquiry_sealed_to_a_key_the_worker_lacks_waits_alone_and_loses_nothing(
    make_app: AppFactory,
    smtp_server: SMTPTestServer,
    pair: tuple[str, str],
    old_pair: tuple[str, str],
) -> None:
    lost_key = post(sealed_app(make_app, old_pair[0]))  # its private key was not kept here
    worker = sealed_app(make_app, *pair)
    readable = post(worker)
    change(worker, lost_key, next_attempt_at=load(worker, readable).next_attempt_at)
    assert deliver_all(worker) == 1, "the rest of the batch goes on"
    waiting = load(worker, lost_key)
    assert (waiting.status, waiting.attempts) == ("pending", 1), "no dead letter for it"
    assert "SEAL_PRIVATE_KEY does not hold" in (waiting.last_error or "")
    assert smtp_health(worker).failures == 0, "the SMTP server is not to blame"

    # The operator adds the old key after the current one.
    both = sealed_app(make_app, pair[0], f"{pair[1]},{old_pair[1]}")
    make_due(both, lost_key)
    assert deliver_all(both) == 1 and len(smtp_server.messages) == 2


def test_a_damaged_box_is_a_dead_letter_that_says_so(
    make_app: AppFactory, pair: tuple[str, str]
) -> None:
    app = sealed_app(make_app, *pair)
    first, second = post(app), post(app)
    change(app, first, sealed=load(app, second).sealed)  # another enquiry's box
    assert deliver_all(app) == 1
    broken = load(app, first)
    assert (broken.status, broken.last_error) == ("failed", "the sealed fields are damaged")


def test_keys_rotate_without_loss(
    make_app: AppFactory,
    smtp_server: SMTPTestServer,
    pair: tuple[str, str],
    old_pair: tuple[str, str],
) -> None:
    old_public, old_private = old_pair
    new_public, new_private = pair
    before = sealed_app(make_app, old_public)
    waiting, held = post(before), post(before, extra_comments="filled by an extension")

    # The new key is current; the old private key is listed after it.
    rotated = sealed_app(make_app, new_public, f"{new_private},{old_private}")
    shown = rotated.test_cli_runner().invoke(args=["outbox", "show", held]).stdout
    assert f"name: {CANARY['name']}" in shown
    result = rotated.test_cli_runner().invoke(args=["keys", "reseal"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Sealed 2 enquiries to key {sealing.load(new_public, '').public_id}.\n"

    after = sealed_app(make_app, new_public, new_private)  # the old key is gone
    assert deliver_all(after) == 1
    [mail] = smtp_server.messages
    assert CANARY["message"] in (mail.text or "") and load(after, waiting).status == "sent"
    assert after.test_cli_runner().invoke(args=["outbox", "release", held]).exit_code == 0
    assert deliver_all(after) == 1
    assert CANARY["message"] in (smtp_server.messages[1].text or "")


def test_reseal_without_the_old_key_says_what_is_missing(
    make_app: AppFactory, pair: tuple[str, str], old_pair: tuple[str, str]
) -> None:
    post(sealed_app(make_app, old_pair[0]))
    result = sealed_app(make_app, *pair).test_cli_runner().invoke(args=["keys", "reseal"])
    assert result.exit_code == 1
    assert "1 enquiries are sealed to a key SEAL_PRIVATE_KEY does not hold" in result.stderr


def test_keys_generate_prints_a_pair_that_works(make_app: AppFactory) -> None:
    result = make_app().test_cli_runner().invoke(args=["keys", "generate"])
    public = re.search(r"^SEAL_PUBLIC_KEY=(\S+)$", result.stdout, re.M)[1]
    private = re.search(r"^SEAL_PRIVATE_KEY=(\S+)$", result.stdout, re.M)[1]
    keys = sealing.load(public, private)
    assert keys.public_id in keys.private
    assert "apart from the database" in result.stderr


def test_production_without_a_public_key_stops_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/x.sqlite3")
    monkeypatch.delenv("SEAL_PUBLIC_KEY", raising=False)
    with pytest.raises(Exception, match="SEAL_PUBLIC_KEY is not set: patients' enquiries"):
        create_app()
    monkeypatch.setenv("SEAL_AT_REST", "false")
    app = create_app()
    try:
        assert app.extensions["seal_keys"].public is None
    finally:
        app.extensions["delivery"].embedded.stop(5)
        app.extensions["store"].engine.dispose()


def test_development_seals_to_a_pair_it_keeps_beside_the_database(tmp_path: Path) -> None:
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(SEAL_AT_REST=True, SEAL_PUBLIC_KEY="", SEAL_PRIVATE_KEY="")
    keys = service._seal_keys(app, "DevelopmentConfig")
    path = tmp_path / "instance" / "seal_keys"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert keys.public is not None and keys.public_id in keys.private
    app.config.update(SEAL_PUBLIC_KEY="", SEAL_PRIVATE_KEY="")  # as a new process starts
    again = service._seal_keys(app, "DevelopmentConfig")
    assert again.public_id == keys.public_id, "the same pair on every start"


def test_idempotency_and_rate_limits_work_on_sealed_enquiries(
    make_app: AppFactory, pair: tuple[str, str]
) -> None:
    app = sealed_app(make_app, pair[0], RATELIMIT_ENABLED=True, RATELIMIT_PER_CLIENT="3 per minute")
    client = app.test_client()
    headers = {"Idempotency-Key": "sealed-retry"}

    def send() -> Any:
        body = {**VALID, **CANARY, "altcha": solve_captcha(client)}
        return client.post("/api/enquiries", json=body, headers=headers)

    first, again = send(), send()
    assert first.get_json()["id"] == again.get_json()["id"], "one enquiry, read from no field"
    assert send().status_code == 202 and send().status_code == 429
