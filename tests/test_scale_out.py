"""Scale-out, end to end: two gunicorn servers and two delivery workers sharing one PostgreSQL
and one Redis behave as one service."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import altcha
import pytest
from sqlalchemy import create_engine, func, select

from service.intake.validation import CAPTCHA_FAILED
from service.store.models import Enquiry
from tests.conftest import VALID, empty_redis, postgres_url, private_schema
from tests.processes import Gunicorn, Workers, request
from tests.smtp_server import SMTPTestServer
from tests.support import SEAL_KEYS, SEAL_PUBLIC_KEY

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300)]
REDIS = "redis://127.0.0.1:6379/12"
ENQUIRIES = 1000
SECRET = "scale-out-secret"


@pytest.fixture
def database() -> Iterator[str]:
    """A private schema on the machine's PostgreSQL."""
    with private_schema(postgres_url()) as url:
        yield url


@pytest.fixture
def shared_redis() -> Iterator[str]:
    """The machine's Redis, one database emptied before and after."""
    with empty_redis(REDIS) as url:
        yield url


@pytest.fixture
def service(
    database: str, shared_redis: str, smtp_server: SMTPTestServer, tmp_path: Path
) -> Iterator[tuple[Gunicorn, Gunicorn, Workers]]:
    """Two gunicorn servers (2 workers each) and two external delivery workers."""
    settings = {
        "SECRET_KEY": SECRET,
        "DATABASE_URL": database,
        "MAIL_SERVER": smtp_server.host,
        "MAIL_PORT": str(smtp_server.port),
        "MAIL_TIMEOUT": "5",
        "CLINIC_INBOX": "front-desk@clinic.example",
        "MAIL_DEFAULT_SENDER": "Clinic website <forms@clinic.example>",
    }
    web = {
        **settings,
        "SERVICE_ENV": "production",
        # As in compose.yaml: the web tier seals, and only the workers hold the private key.
        "SEAL_PUBLIC_KEY": SEAL_PUBLIC_KEY,
        "AUTO_MIGRATE": "true",
        "DELIVERY_WORKER": "external",
        "RATELIMIT_STORAGE_URI": shared_redis,
        "RATELIMIT_GLOBAL": "100000 per hour",  # this test's 1,000 visitors are not a flood
        "RATELIMIT_CHALLENGE": "100000 per hour",  # it solves their captchas from one address
        "TRUSTED_PROXIES": "1",  # the test stands in for the clinic's proxy
        # It solves 1,001 captchas itself: 16 attempts each (the check costs one whatever the
        # difficulty) rather than 4,096, which took two minutes of the suite.
        "ALTCHA_COST": "50",
        "ALTCHA_DIFFICULTY": "1",
    }
    workers = Workers(settings, tmp_path)
    try:
        with (
            Gunicorn(web, tmp_path / "first.log", workers=2) as first,
            Gunicorn(web, tmp_path / "second.log", workers=2) as second,
        ):
            for _ in range(2):
                workers.start(
                    RATELIMIT_STORAGE_URI=shared_redis,
                    OUTBOX_BATCH_SIZE="20",
                    SEAL_AT_REST="true",
                    **SEAL_KEYS,
                )
            yield first, second, workers
    finally:
        workers.close()


def solutions(port: int, count: int) -> list[str]:
    """`count` captcha solutions, solved as the widget would."""
    solved = []
    for _ in range(count):
        _, _, body = request(port, "GET", "/altcha/challenge")
        challenge = altcha.Challenge.from_dict(json.loads(body))
        solved.append(altcha.Payload(challenge, altcha.solve_challenge(challenge)).to_base64())
    return solved


def submit(port: int, visitor: str, fields: dict[str, str]) -> tuple[int, dict]:
    """A JSON enquiry from the visitor's address, as the proxy forwards it."""
    headers = {"Content-Type": "application/json", "X-Forwarded-For": visitor}
    status, _, body = request(port, "POST", "/api/enquiries", json.dumps(fields).encode(), headers)
    return status, json.loads(body)


def test_two_servers_and_two_workers_behave_as_one_service(
    service: tuple[Gunicorn, Gunicorn, Workers], database: str, smtp_server: SMTPTestServer
) -> None:
    first, second, workers = service
    ports = [first.port, second.port]

    # A flood from one address through both ports meets one limit (5 per minute).
    with ThreadPoolExecutor(max_workers=8) as pool:
        flood = Counter(
            pool.map(
                lambda n: submit(ports[n % 2], "203.0.113.200", {**VALID, "altcha": ""})[0],
                range(100),
            )
        )
    assert flood == {422: 5, 429: 95}

    # A captcha solution used on one server is refused on the other.
    [solution] = solutions(first.port, 1)
    assert submit(first.port, "198.51.100.1", {**VALID, "altcha": solution})[0] == 202
    status, body = submit(
        second.port, "198.51.100.2", {**VALID, "message": "Again.", "altcha": solution}
    )
    assert (status, body["errors"]["altcha"]) == (422, [CAPTCHA_FAILED])

    # 1,000 enquiries over both ports; one worker is stopped with SIGTERM mid-backlog.
    solved = solutions(second.port, ENQUIRIES)

    def send(n: int) -> int:
        fields = {**VALID, "name": f"Visitor {n}", "message": f"Enquiry {n}.", "altcha": solved[n]}
        return submit(ports[n % 2], f"10.{n // 250}.{n % 250}.1", fields)[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = Counter(pool.map(send, range(ENQUIRIES // 2)))
        smtp_server.wait_for(100, timeout=60)
        assert workers.stop(workers.processes[0], timeout=30) == 0
        assert "delivered" in workers.log(workers.processes[0]), "it was working when stopped"
        statuses += Counter(pool.map(send, range(ENQUIRIES // 2, ENQUIRIES)))
    assert statuses == {202: ENQUIRIES}

    expected = ENQUIRIES + 1
    messages = smtp_server.wait_for(expected, timeout=120)
    time.sleep(1)  # a late duplicate would show up now
    ids = Counter(message.header("Message-ID") for message in smtp_server.messages)
    assert len(ids) == expected and set(ids.values()) == {1}, workers.logs()
    assert all(message.rcpt_tos == ["front-desk@clinic.example"] for message in messages)
    engine = create_engine(database)
    with engine.connect() as connection:
        by_state = dict(
            connection.execute(select(Enquiry.status, func.count()).group_by(Enquiry.status)).all()
        )
    engine.dispose()
    assert by_state == {"sent": expected}
