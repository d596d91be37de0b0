"""The lifecycle: every state change names the state and the claim it expects, on both stores."""

from __future__ import annotations

import logging
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.delivery.worker import Worker
from service.store import lifecycle
from service.store.models import Enquiry
from tests.smtp_server import SMTPTestServer
from tests.support import change, enqueue, load, records

TOKEN = "lifecycle-test-token"
LEASE = timedelta(seconds=60)


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    """The suite's settings with /metrics open to the test."""
    return {**app_config, "METRICS_TOKEN": TOKEN}


def lost_claims(client: FlaskClient) -> dict[str, float]:
    """The lost-claim counts by transition, as /metrics shows them."""
    body = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert body.status_code == 200
    counts = {}
    for line in body.get_data(as_text=True).splitlines():
        if line.startswith("contact_form_lost_claims_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('"')[1]] = float(value)
    return counts


def row(app: Flask, enquiry_id: str) -> dict[str, Any]:
    """Every column of one enquiry as it is in the store now."""
    enquiry = load(app, enquiry_id)
    return {column.name: getattr(enquiry, column.name) for column in Enquiry.__table__.columns}


def test_a_worker_whose_claim_was_taken_over_changes_nothing(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [enqueue(client) for _ in range(3)]
    with app.app_context():
        stale = lifecycle.claim("first-worker", 10, LEASE)
    assert sorted(enquiry.id for enquiry in stale) == sorted(ids)
    # The first worker stalls (a paused VM, a tarpitting server) until its lease has run out.
    for enquiry_id in ids:
        change(app, enquiry_id, lease_expires_at=lifecycle.utcnow() - timedelta(seconds=1))

    assert Worker(app, "second").run_once() == 3, "the second worker takes the batch over"
    delivered = smtp_server.wait_for(3)
    taken_over = {enquiry_id: row(app, enquiry_id) for enquiry_id in ids}
    assert {state["status"] for state in taken_over.values()} == {lifecycle.SENT}
    assert all(":second:" in state["claimed_by"] for state in taken_over.values())
    before = lost_claims(client)
    caplog.clear()

    with app.app_context():
        assert lifecycle.mark_sent(stale[0]) is False
        assert lifecycle.retry_later(stale[1], lifecycle.utcnow(), "SMTP 451 at DATA") is False
        assert lifecycle.give_up(stale[2], "SMTP 550 at DATA") is False
        assert lifecycle.release(stale) == 0

    assert {enquiry_id: row(app, enquiry_id) for enquiry_id in ids} == taken_over
    after = lost_claims(client)
    for transition, refused in {
        "mark_sent": 1,
        "retry_later": 1,
        "give_up": 1,
        "release": 3,
    }.items():
        assert after.get(transition, 0) - before.get(transition, 0) == refused, transition
    warnings = [r.getMessage() for r in records(caplog, logging.WARNING, "service.store.lifecycle")]
    assert len(warnings) == 6
    assert all("worker first-worker no longer holds its claim" in text for text in warnings)
    # Exactly one copy of each email, and no worker finds anything left to send.
    assert Worker(app, "third").run_once() == 0
    time.sleep(0.3)
    assert sorted(message.header("X-Enquiry-ID") for message in smtp_server.messages) == sorted(ids)
    assert len(delivered) == len(smtp_server.messages) == 3


def test_a_worker_whose_lease_ran_out_unnoticed_still_records_its_delivery(
    app: Flask, client: FlaskClient
) -> None:
    enquiry_id = enqueue(client)
    with app.app_context():
        [claimed] = lifecycle.claim("slow-worker", 10, LEASE)
    change(app, enquiry_id, lease_expires_at=lifecycle.utcnow() - timedelta(seconds=1))
    with app.app_context():
        # Nobody took it over: the email went out, so it is sent, not sent again.
        assert lifecycle.mark_sent(claimed) is True
    assert row(app, enquiry_id)["status"] == lifecycle.SENT


def test_a_claim_takes_only_what_is_due_and_not_another_workers_live_claim(
    app: Flask, client: FlaskClient
) -> None:
    due, later, held = enqueue(client), enqueue(client), enqueue(client)
    change(app, later, next_attempt_at=lifecycle.utcnow() + timedelta(minutes=5))
    with app.app_context():
        assert [e.id for e in lifecycle.claim("holder", 1, LEASE)] == [due]
        change(app, held, next_attempt_at=lifecycle.utcnow() - timedelta(minutes=1))
        assert [e.id for e in lifecycle.claim("holder", 10, LEASE)] == [held]
        assert lifecycle.claim("other", 10, LEASE) == []
    states = {key: row(app, key) for key in (due, later, held)}
    assert [states[key]["status"] for key in (due, later, held)] == [
        "sending",
        "pending",
        "sending",
    ]
    assert states[due]["attempts"] == states[held]["attempts"] == 0, "claimed, not yet tried"


@pytest.mark.parametrize(
    ("status", "requeued"), [(lifecycle.FAILED, 1), (lifecycle.SENT, 0), (lifecycle.PENDING, 0)]
)
def test_only_a_dead_letter_can_be_queued_again(
    app: Flask, client: FlaskClient, status: str, requeued: int
) -> None:
    enquiry_id = enqueue(client)
    change(app, enquiry_id, status=status)
    with app.app_context():
        assert lifecycle.requeue([enquiry_id]) == requeued
    assert row(app, enquiry_id)["status"] == (lifecycle.PENDING if requeued else status)


@pytest.mark.parametrize(
    ("status", "erased"), [(lifecycle.SENT, 1), (lifecycle.FAILED, 0), (lifecycle.PENDING, 0)]
)
def test_only_a_delivered_enquiry_is_erased_by_retention(
    app: Flask, client: FlaskClient, status: str, erased: int
) -> None:
    enquiry_id = enqueue(client)
    long_ago = lifecycle.utcnow() - timedelta(days=40)
    change(app, enquiry_id, status=status, sent_at=long_ago)
    with app.app_context():
        assert lifecycle.erase(lifecycle.utcnow() - timedelta(days=30)) == erased
    assert (row(app, enquiry_id)["name"] is None) == bool(erased)


def test_the_lifecycle_names_every_state_and_transition() -> None:
    assert lifecycle.STATES == ("pending", "sending", "sent", "failed", "held")
    targets = {transition.name: transition.target for transition in lifecycle.TRANSITIONS}
    assert targets == {
        "queue": "pending",
        "claim": "sending",
        "renew": "sending",
        "mark_sent": "sent",
        "retry_later": "pending",
        "give_up": "failed",
        "release": "pending",
        "requeue": "pending",
        "erase": "",  # the state stays what it was
        "hold": "held",
        "release_held": "pending",
        "discard": "",  # the row is deleted
    }
    for transition in lifecycle.TRANSITIONS:
        assert set(transition.sources) <= set(lifecycle.STATES)


def test_no_other_module_writes_a_state_a_lease_or_an_attempt() -> None:
    writes = re.compile(
        r"(?<![.\w])update\(|^from sqlalchemy.* import .*\bupdate\b"
        r"|\.(status|attempts|lease_expires_at|claimed_by)\s*=[^=]"
        r"|\b(status|attempts|lease_expires_at|claimed_by)=(?!response)"
    )
    service = Path(lifecycle.__file__).parents[1]
    # The SMTP server's back-off and the held digests have tables of their own; those modules
    # write no enquiry.
    own_tables = [
        service / "store" / name for name in ("destination.py", "held_digests.py", "alerts.py")
    ]
    for module in own_tables:
        text = module.read_text()
        assert set(re.findall(r"update\((\w+)\)", text)) == {"TABLE"}
        assert "Enquiry.__table__" not in text
    offenders = [
        f"{path.relative_to(service)}:{number}: {line.strip()}"
        for path in sorted(service.rglob("*.py"))
        if path not in (Path(lifecycle.__file__), *own_tables)
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if writes.search(line)
    ]
    assert offenders == []
