"""Floods against real gunicorn processes on 127.0.0.1: the limits hold, forged headers change
nothing, and processes sharing Redis share one count."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import VALID, empty_redis
from tests.processes import Gunicorn, request
from tests.support import SEAL_PUBLIC_KEY

pytestmark = pytest.mark.slow
REDIS = "redis://127.0.0.1:6379/13"
FLOOD = 300
PER_MINUTE = 5  # the default RATELIMIT_PER_CLIENT: 5 per minute;30 per hour


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A production configuration with the default limits; mail is never reached here."""
    return {
        "SERVICE_ENV": "production",
        "SEAL_PUBLIC_KEY": SEAL_PUBLIC_KEY,
        "SECRET_KEY": "flood-test-secret",
        "CLINIC_INBOX": "front-desk@clinic.example",
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": "9",
        "MAIL_DEFAULT_SENDER": "Clinic website <forms@clinic.example>",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'enquiries.sqlite3'}",
        "AUTO_MIGRATE": "true",
        "DELIVERY_WORKER": "external",
    }


@pytest.fixture
def shared_redis() -> Iterator[str]:
    """The machine's Redis, one database emptied before and after; required in CI."""
    with empty_redis(REDIS) as url:
        yield url


def submit(port: int, headers: dict[str, str] | None = None) -> int:
    """One submission without a captcha: refused as invalid (422) or over the limit (429)."""
    body = json.dumps({**VALID, "altcha": ""}).encode()
    return request(
        port,
        "POST",
        "/api/enquiries",
        body,
        {"Content-Type": "application/json", **(headers or {})},
    )[0]


def flood(ports: list[int], count: int, forged: bool = False) -> list[int]:
    """`count` submissions spread over `ports`, eight at a time; their statuses in order."""

    def one(n: int) -> int:
        headers = {"X-Forwarded-For": f"198.51.{n // 250}.{n % 250}"} if forged else None
        return submit(ports[n % len(ports)], headers)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(count)))


def test_a_flood_from_one_address_is_refused_past_the_limit(
    env: dict[str, str], tmp_path: Path
) -> None:
    with Gunicorn(env, tmp_path / "gunicorn.log") as server:
        statuses = Counter(flood([server.port], FLOOD))
        _, headers, _ = request(
            server.port, "POST", "/api/enquiries", b"{}", {"Content-Type": "application/json"}
        )
    assert set(statuses) <= {422, 429}
    past_the_limit = FLOOD - PER_MINUTE
    assert statuses[422] == PER_MINUTE
    assert statuses[429] / past_the_limit >= 0.99
    assert int(headers["retry-after"]) >= 1


def test_forged_forwarded_for_headers_do_not_get_past_the_limit(
    env: dict[str, str], tmp_path: Path
) -> None:
    with Gunicorn({**env, "TRUSTED_PROXIES": "0"}, tmp_path / "gunicorn.log") as server:
        statuses = Counter(flood([server.port], FLOOD, forged=True))
    assert statuses[422] == PER_MINUTE
    assert statuses[429] == FLOOD - PER_MINUTE


def test_two_processes_sharing_redis_meet_one_limit(
    env: dict[str, str], shared_redis: str, tmp_path: Path
) -> None:
    shared = {**env, "RATELIMIT_STORAGE_URI": shared_redis}
    with (
        Gunicorn(shared, tmp_path / "first.log") as first,
        Gunicorn(shared, tmp_path / "second.log") as second,
    ):
        statuses = Counter(flood([first.port, second.port], FLOOD))
    assert statuses[422] == PER_MINUTE
    assert statuses[429] == FLOOD - PER_MINUTE


def test_several_workers_counting_in_memory_are_warned_about_at_start_up(
    env: dict[str, str], shared_redis: str, tmp_path: Path
) -> None:
    with Gunicorn(env, tmp_path / "memory.log", workers=2) as server:
        warned = server.log()
    assert "RATELIMIT_STORAGE_URI is memory:// with 2 workers" in warned
    shared = {**env, "RATELIMIT_STORAGE_URI": shared_redis}
    with Gunicorn(shared, tmp_path / "redis.log", workers=2) as server:
        quiet = server.log()
    assert "RATELIMIT_STORAGE_URI" not in quiet
