"""Real `flask outbox work` processes: kill -9 at each step of a delivery, SIGTERM, four at once.

Every scenario ends with the same promise checked: each enquiry that was accepted (a 202) is
`sent`, and the clinic got it exactly once (twice only in the one window the service admits).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from service.intake import accept as intake
from service.store.engine import store
from service.store.lifecycle import PENDING, SENDING, SENT
from service.store.models import Enquiry
from tests.processes import Workers
from tests.smtp_server import SMTPTestServer
from tests.support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parent.parent

# A short lease lets a second worker take over a dead one's claim within seconds; a live worker
# renews it every third of the lease while it works.
SHORT_LEASE = {"OUTBOX_LEASE_SECONDS": "4", "MAIL_TIMEOUT": "0.8"}


@pytest.fixture
def workers(app: Flask, app_config: dict[str, Any], tmp_path: Path) -> Iterator[Workers]:
    """Worker processes on the test's store and SMTP server, killed at the end whatever happens."""
    pool = Workers(app_config, tmp_path)
    try:
        yield pool
    finally:
        pool.close()


def enqueue(app: Flask, count: int) -> list[Enquiry]:
    """Accept enquiries exactly as the form and the API do before answering 202."""
    with app.app_context():
        return [
            intake.accept(
                {
                    "name": f"Visitor {number}",
                    "email": f"visitor{number}@example.com",
                    "phone": "+61412345678",
                    "message": f"Enquiry number {number}.",
                },
                None,
            )
            for number in range(count)
        ]


def stored(app: Flask) -> dict[str, Enquiry]:
    """Every enquiry in the store, by id."""
    with app.app_context(), store.session() as session:
        return {row.id: row for row in session.scalars(select(Enquiry))}


def count_in(app: Flask, state: str) -> int:
    """How many enquiries are in `state`."""
    with app.app_context(), store.session() as session:
        query = select(func.count()).select_from(Enquiry).where(Enquiry.status == state)
        return session.scalar(query) or 0


def wait_all_sent(app: Flask, workers: Workers, total: int, timeout: float = 30) -> None:
    """Wait until every one of `total` enquiries is `sent`."""
    wait_until(
        lambda: count_in(app, SENT) == total,
        timeout,
        lambda: f"only {count_in(app, SENT)} of {total} sent\n{workers.logs()}",
    )


def message_ids(server: SMTPTestServer) -> Counter[str | None]:
    """How many copies of each Message-ID the SMTP server accepted."""
    return Counter(message.header("Message-ID") for message in list(server.messages))


def assert_nothing_lost(app: Flask, accepted: list[Enquiry]) -> None:
    """Every accepted enquiry is still in the store, and every one of them is `sent`."""
    rows = stored(app)
    assert set(rows) == {enquiry.id for enquiry in accepted}
    assert Counter(row.status for row in rows.values()) == {SENT: len(accepted)}


def assert_each_arrived_once(server: SMTPTestServer, accepted: list[Enquiry]) -> None:
    """The clinic got every accepted enquiry exactly once, and nothing else."""
    ids = message_ids(server)
    duplicates = {message_id: n for message_id, n in ids.items() if n != 1}
    assert duplicates == {}
    assert set(ids) == {enquiry.message_id for enquiry in accepted}
    assert len(server.messages) == len(accepted)


def assert_clean_exit(workers: Workers, process: subprocess.Popen[bytes]) -> None:
    """SIGTERM ends the worker with status 0, and it logged no failed attempt or error."""
    assert workers.stop(process) == 0, workers.log(process)
    log = workers.log(process)
    assert " WARNING " not in log and " ERROR " not in log, log


def claimed_by(app: Flask, enquiry_id: str) -> tuple[str, str | None]:
    """The enquiry's state and the worker holding it."""
    row = stored(app)[enquiry_id]
    return row.status, row.claimed_by


@contextlib.contextmanager
def blocking_updates_of(app: Flask, enquiry_id: str) -> Iterator[Callable[[], bool]]:
    """Hold a lock that makes any UPDATE of the enquiry wait; yield "is a worker waiting on it?".

    SQLite: the store's BEGIN IMMEDIATE takes the database's write lock. PostgreSQL: FOR UPDATE
    locks the row, and pg_blocking_pids() shows who waits for us.
    """
    with app.app_context(), store.writing() as connection:
        connection.execute(select(Enquiry.id).where(Enquiry.id == enquiry_id).with_for_update())
        if store.engine.dialect.name != "postgresql":

            def reached() -> bool:
                # SQLite shows no one its lock waiters: give the worker ample time to reach it.
                time.sleep(0.5)
                return True

            yield reached
            return
        locker = connection.scalar(text("SELECT pg_backend_pid()"))
        query = text(
            "SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"
        )

        def waiting() -> bool:
            with store.engine.connect() as connection:  # a fresh snapshot of pg_stat_activity
                return bool(connection.scalar(query, {"pid": locker}))

        yield waiting


def test_sigkill_after_claim_another_worker_sends_exactly_once(
    app: Flask, smtp_server: SMTPTestServer, workers: Workers
) -> None:
    accepted = enqueue(app, 1)
    [enquiry] = accepted
    smtp_server.fault = "hang"  # the worker claims, then waits for a greeting that never comes
    first = workers.start(**SHORT_LEASE)
    wait_until(
        lambda: claimed_by(app, enquiry.id)[0] == SENDING,
        20,
        lambda: f"the first worker never claimed the enquiry\n{workers.logs()}",
    )
    workers.kill(first)
    state, owner = claimed_by(app, enquiry.id)
    assert state == SENDING and f":{first.pid}:" in (owner or ""), workers.logs()

    smtp_server.fault = None
    second = workers.start(**SHORT_LEASE)
    wait_all_sent(app, workers, 1)  # once the dead worker's lease has run out
    assert_clean_exit(workers, second)
    assert_each_arrived_once(smtp_server, accepted)
    assert_nothing_lost(app, accepted)
    row = stored(app)[enquiry.id]
    # Only the attempt that ended counts: the first worker died before its attempt had an outcome.
    assert row.attempts == 1 and f":{second.pid}:" in (row.claimed_by or "")


def test_sigkill_during_data_another_worker_sends_exactly_once(
    app: Flask, smtp_server: SMTPTestServer, workers: Workers
) -> None:
    accepted = enqueue(app, 1)
    [enquiry] = accepted
    smtp_server.fault = "hang_in_data"  # the message goes out after the 354, never acknowledged
    first = workers.start(**SHORT_LEASE)
    [stalled] = smtp_server.wait_for_stalled(1, timeout=20)
    workers.kill(first)
    assert stalled.header("Message-ID") == enquiry.message_id
    assert claimed_by(app, enquiry.id)[0] == SENDING, workers.logs()
    assert smtp_server.messages == []

    smtp_server.fault = None
    second = workers.start(**SHORT_LEASE)
    wait_all_sent(app, workers, 1)
    assert_clean_exit(workers, second)
    assert_each_arrived_once(smtp_server, accepted)
    assert_nothing_lost(app, accepted)


def test_sigkill_after_250_before_sent_is_committed_sends_it_again_with_one_message_id(
    app: Flask, smtp_server: SMTPTestServer, workers: Workers
) -> None:
    accepted = enqueue(app, 1)
    [enquiry] = accepted
    smtp_server.fault = "hold_after_data"  # accepted, but the 250 waits until we let it go
    first = workers.start(**SHORT_LEASE)
    smtp_server.wait_for(1, timeout=20)
    with blocking_updates_of(app, enquiry.id) as worker_waits:
        smtp_server.fault = None  # the 250 goes out: the worker's mark_sent now waits for our lock
        wait_until(worker_waits, 10, lambda: f"no worker waits in mark_sent\n{workers.logs()}")
        workers.kill(first)
    assert claimed_by(app, enquiry.id)[0] == SENDING, workers.logs()

    second = workers.start(**SHORT_LEASE)
    wait_all_sent(app, workers, 1)
    assert_clean_exit(workers, second)
    # The one duplicate the service admits: the server accepted the first copy, the store never
    # learnt it, so the second worker sends it again; both copies share the Message-ID.
    assert message_ids(smtp_server) == {enquiry.message_id: 2}
    assert_nothing_lost(app, accepted)


def test_sigterm_mid_backlog_finishes_the_message_in_flight_and_releases_the_rest(
    app: Flask, smtp_server: SMTPTestServer, workers: Workers
) -> None:
    accepted = enqueue(app, 50)
    first = workers.start(OUTBOX_BATCH_SIZE="20")
    smtp_server.wait_for(5, timeout=20)
    smtp_server.fault = "hold_after_data"  # the next message stays in flight...
    smtp_server.wait_for(len(smtp_server.messages) + 1, timeout=10)
    # (A message can slip in between setting the fault and counting: at most one more is in flight.)
    in_flight = len(smtp_server.messages) + 1
    first.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # ...until the worker has been told to stop
    smtp_server.fault = None
    assert first.wait(5) == 0, workers.log(first)
    assert "Received SIGTERM" in workers.log(first)
    received = len(smtp_server.messages)
    assert received <= in_flight, f"{received} sent, though SIGTERM came during number {in_flight}"

    rows = stored(app).values()
    delivered = {row.message_id for row in rows if row.status == SENT}
    assert Counter(row.status for row in rows if row.status != SENT) == {
        PENDING: len(accepted) - len(delivered)
    }
    assert 0 < len(delivered) < len(accepted)
    # The message in flight was finished and recorded; nothing else was sent or counted.
    assert message_ids(smtp_server) == dict.fromkeys(delivered, 1)
    assert all(row.attempts == 0 for row in rows if row.status == PENDING)

    second = workers.start()
    wait_all_sent(app, workers, len(accepted))
    assert_clean_exit(workers, second)
    assert_each_arrived_once(smtp_server, accepted)
    assert_nothing_lost(app, accepted)


def test_four_workers_deliver_a_thousand_enquiries_exactly_once(
    app: Flask, smtp_server: SMTPTestServer, workers: Workers
) -> None:
    accepted = enqueue(app, 1000)
    started = [workers.start(OUTBOX_BATCH_SIZE="50") for _ in range(4)]
    wait_all_sent(app, workers, len(accepted), timeout=60)
    for process in started:
        assert_clean_exit(workers, process)
    assert_each_arrived_once(smtp_server, accepted)
    assert_nothing_lost(app, accepted)
    owners = Counter(row.claimed_by for row in stored(app).values())
    assert len(owners) > 1, f"one worker sent everything: {owners}"


def test_sigkill_mid_batch_with_the_default_lease_another_worker_sends_the_rest_within_90_s(
    app: Flask, smtp_server: SMTPTestServer, workers: Workers
) -> None:
    accepted = enqueue(app, 20)
    first = workers.start()  # the default lease (60 s), renewed every 10 s while it works
    smtp_server.wait_for(1, timeout=20)
    smtp_server.fault = "hold_after_data"  # the next message stays in flight
    smtp_server.wait_for(len(smtp_server.messages) + 1, timeout=10)
    time.sleep(0.5)
    workers.kill(first)
    killed_at = time.monotonic()
    smtp_server.fault = None
    rows = stored(app).values()
    delivered = {row.message_id for row in rows if row.status == SENT}
    held = [row for row in rows if row.status != SENT]
    assert 0 < len(delivered) < 20 and {row.status for row in held} == {SENDING}
    # Claimed but never tried, or tried without an outcome: no attempt has been counted.
    assert all(row.attempts == 0 for row in held), [row.attempts for row in held]

    second = workers.start()
    wait_all_sent(app, workers, 20, timeout=90)
    assert time.monotonic() - killed_at < 90
    assert "took over" in workers.log(second)
    assert workers.stop(second) == 0, workers.log(second)
    assert_nothing_lost(app, accepted)
    copies = message_ids(smtp_server)
    assert set(copies) == {enquiry.message_id for enquiry in accepted}
    # At most the one in flight at the kill arrives twice, with one Message-ID.
    assert sorted(copies.values())[:-1] == [1] * 19 and max(copies.values()) <= 2


def test_an_external_worker_serves_its_own_metrics_behind_the_token(
    app: Flask, smtp_server: SMTPTestServer, workers: Workers
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    accepted = enqueue(app, 3)
    worker = workers.start(WORKER_METRICS_PORT=str(port), METRICS_TOKEN="worker-token")
    wait_all_sent(app, workers, 3)

    def get(path: str, token: str | None) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, ""

    status, body = get("/metrics", "worker-token")
    assert status == 200
    assert 'contact_form_deliveries_total{outcome="sent"} 3.0' in body
    assert 'contact_form_outbox_enquiries{state="sent"} 3.0' in body
    assert get("/metrics", "wrong")[0] == get("/metrics", None)[0] == 404
    assert get("/contact", "worker-token")[0] == 404, "the worker serves metrics, not the form"
    assert_clean_exit(workers, worker)
    assert_each_arrived_once(smtp_server, accepted)


def test_a_refused_login_with_50_pending_logs_in_once_per_back_off_and_loses_nothing(
    app: Flask, make_server: Callable[..., SMTPTestServer], workers: Workers
) -> None:
    server = make_server(auth=("user", "pw"))
    server.fault = "auth_535"  # the password has expired, say
    accepted = enqueue(app, 50)
    settings = {
        "MAIL_PORT": str(server.port),
        "MAIL_USERNAME": "user",
        "MAIL_PASSWORD": "pw",
        "OUTBOX_RETRY_BASE_SECONDS": "1",
        "OUTBOX_RETRY_MAX_SECONDS": "2",
    }
    workers.start(**settings), workers.start(**settings)  # two workers share one back-off
    wait_until(lambda: server.logins >= 5, 30, workers.logs)

    # Before anyone knows, each worker may meet the refusal once; from then on the whole queue
    # waits min(2^(k-1), 2) seconds after the k-th: one login per period, 1, 2 and 2 s apart.
    times = list(server.login_times)
    first_outage = [moment for moment in times if moment - times[0] < 0.5]
    assert len(first_outage) <= 2
    later = times[len(first_outage) - 1 : len(first_outage) + 3]
    gaps = [round(b - a, 2) for a, b in zip(later, later[1:], strict=False)]
    assert len(gaps) == 3, gaps
    assert all(gap >= wanted - 0.05 for gap, wanted in zip(gaps, [1, 2, 2], strict=True)), gaps
    rows = stored(app).values()
    assert {row.status for row in rows} <= {PENDING, SENDING}, "no dead letters"
    assert all(row.attempts == 0 for row in rows), "no enquiry was to blame"
    ready = app.test_client().get("/readyz").get_json()
    assert ready["status"] == "degraded"
    assert ready["reason"] == (
        "delivery paused: SMTP login refused (535): check MAIL_USERNAME and MAIL_PASSWORD"
    )
    assert workers.logs().count("SMTP delivery paused") == 1, "one ERROR for the outage"

    server.fault = None  # the operator renews the password at the provider
    wait_all_sent(app, workers, 50, timeout=30)
    assert_nothing_lost(app, accepted)
    assert_each_arrived_once(server, accepted)
    assert app.test_client().get("/readyz").get_json()["status"] == "ok"
