"""The audit log: each operator command (and a digest link) leaves one entry per enquiry it
touched, with who, what and when, and nothing personal; entries are kept a year."""

from __future__ import annotations

import getpass
from datetime import timedelta

from flask import Flask
from sqlalchemy import update

from service.delivery import held_links
from service.intake import traps
from service.store import audit, lifecycle, sealing
from service.store.models import AuditEntry
from tests.conftest import VALID, deliver_all, solve_captcha
from tests.smtp_server import SMTPTestServer
from tests.support import AppFactory, enqueue

CANARY = {"name": "Canary-Audit-3c8f", "message": "Canary-Audit-3c8f about my wrist"}


def held(app: Flask) -> str:
    """A held enquiry's id."""
    client = app.test_client()
    body = {**VALID, **CANARY, "altcha": solve_captcha(client), traps.HONEYPOT: "x"}
    return client.post("/api/enquiries", json=body).get_json()["id"]


def entries(app: Flask) -> list[tuple[str, str, str | None]]:
    """(actor, action, enquiry id) of every entry, oldest first."""
    with app.app_context():
        return [(e.actor, e.action, e.enquiry_id) for e in reversed(audit.entries(1000))]


def test_each_command_leaves_one_entry_with_no_personal_data(
    make_app: AppFactory, smtp_server: SMTPTestServer
) -> None:
    public, private = sealing.generate()
    app = make_app(SEAL_AT_REST=True, SEAL_PUBLIC_KEY=public, SEAL_PRIVATE_KEY=private)
    runner, client = app.test_cli_runner(), app.test_client()
    me = getpass.getuser()
    released, discarded = held(app), held(app)
    smtp_server.fault = "rcpt_550"
    dead = enqueue(client, **CANARY)
    assert deliver_all(app) == 0
    smtp_server.fault = None

    commands = [
        (["outbox", "show", dead], "show", dead),
        (["outbox", "release", released], "release", released),
        (["outbox", "discard", discarded], "discard", discarded),
        (["outbox", "retry", dead], "retry", dead),
    ]
    for args, action, enquiry_id in commands:
        before = len(entries(app))
        runner.invoke(args=args)
        assert entries(app)[before:] == [(me, action, enquiry_id)], args
    assert deliver_all(app) == 2
    for args, action in [
        (["outbox", "purge", "--older-than", "0m"], "purge"),
        (["keys", "reseal"], "reseal"),
    ]:
        before = len(entries(app))
        assert runner.invoke(args=args).exit_code == 0
        assert entries(app)[before:] == [(me, action, None)], args
    smtp_server.fault = "data_554"
    forgotten = enqueue(client, **CANARY)
    assert deliver_all(app) == 0
    runner.invoke(args=["outbox", "forget", forgotten])
    assert entries(app)[-1] == (me, "forget", forgotten)

    listing = runner.invoke(args=["outbox", "audit"]).stdout
    assert f"{me}  show  {dead}" in listing and "Canary" not in listing
    with app.app_context():
        stored = [(e.actor, e.action, e.enquiry_id, e.detail) for e in audit.entries(1000)]
    assert "Canary" not in repr(stored) and VALID["email"] not in repr(stored)


def test_a_digest_link_is_an_actor_too(make_app: AppFactory) -> None:
    app = make_app(SERVICE_URL="https://forms.clinic.example")
    enquiry_id = held(app)
    with app.app_context():
        token = held_links.token_for(enquiry_id)
    assert app.test_client().post(f"/held/{token}").status_code == 200
    assert entries(app) == [("digest link", "release", enquiry_id)]


def test_entries_are_kept_a_year(app: Flask) -> None:
    with app.app_context():
        audit.record("someone", "show", ["a" * 32])
        audit.record("someone", "show", ["b" * 32])
        with app.extensions["store"].sessions() as session, session.begin():
            session.execute(
                update(AuditEntry)
                .where(AuditEntry.enquiry_id == "a" * 32)
                .values(at=lifecycle.utcnow() - timedelta(days=366))
            )
    deliver_all(app)  # the worker's daily housekeeping
    assert entries(app) == [("someone", "show", "b" * 32)]
