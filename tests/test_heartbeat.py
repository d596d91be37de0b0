"""The heartbeat keeps a working worker's claims, and lets go of a stuck one's."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.delivery.heartbeat import Heartbeat
from service.store import lifecycle
from tests.support import enqueue, load, records

LEASE = timedelta(seconds=1.5)


def test_a_working_worker_keeps_its_batch_beyond_the_first_lease(
    app: Flask, client: FlaskClient
) -> None:
    ids = [enqueue(client), enqueue(client)]
    with app.app_context():
        batch = lifecycle.claim("busy-worker", 10, LEASE)
    first_lease = load(app, ids[0]).lease_expires_at
    with Heartbeat(app, batch, LEASE, every=0.2, stall_after=30) as heartbeat:
        time.sleep(2.5)  # longer than the lease: only renewals keep the claim
        with app.app_context():
            assert lifecycle.claim("other-worker", 10, LEASE) == []
        assert heartbeat.fresh() and all(heartbeat.holds(enquiry) for enquiry in batch)
        with heartbeat.finishing(batch[0]), app.app_context():
            assert lifecycle.mark_sent(batch[0])
        time.sleep(0.5)
    assert load(app, ids[1]).lease_expires_at > first_lease + timedelta(seconds=2)
    assert load(app, ids[0]).status == lifecycle.SENT


def test_a_worker_stuck_on_one_message_leaves_its_batch_to_others(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [enqueue(client), enqueue(client)]
    with app.app_context():
        batch = lifecycle.claim("stuck-worker", 10, LEASE)
    with Heartbeat(app, batch, LEASE, every=0.2, stall_after=0.5) as heartbeat:
        time.sleep(0.5 + 2 * LEASE.total_seconds())
        assert not heartbeat.fresh(), "no renewal since it stopped"
        with app.app_context():
            taken = lifecycle.claim("other-worker", 10, LEASE)
    assert sorted(enquiry.id for enquiry in taken) == sorted(ids)
    [warning] = records(caplog, logging.WARNING, "service.delivery.heartbeat")
    assert "no longer renewing the leases of 2 enquiries" in warning.getMessage()
    with app.app_context():
        assert lifecycle.mark_sent(batch[0]) is False, "the stuck worker changes nothing"
