"""Rate limits on the submitting routes: per client, for everyone, behind proxies, in Redis."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from service.intake import limits
from tests.conftest import VALID, csrf_token, deliver_all, empty_redis, solve_captcha
from tests.smtp_server import SMTPTestServer

REDIS = "redis://127.0.0.1:6379/14"
LIMITED = {
    "RATELIMIT_ENABLED": True,
    "RATELIMIT_PER_CLIENT": "3 per minute;10 per hour",
    "RATELIMIT_GLOBAL": "300 per hour",
}


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    """The suite's settings with the limits switched on (the suite's app_config turns them off)."""
    return {**app_config, **LIMITED, "RATELIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex}"}


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database of its own for the test; emptied before and after."""
    with empty_redis(REDIS) as url:
        yield url


def post_api(client: FlaskClient, address: str = "203.0.113.7", **headers: str) -> Any:
    """An invalid enquiry (no captcha) from `address`: it counts against the limits all the same."""
    return client.post(
        "/api/enquiries",
        json={**VALID, "altcha": ""},
        headers=headers,
        environ_base={"REMOTE_ADDR": address},
    )


def post_page(client: FlaskClient, address: str = "203.0.113.7") -> Any:
    """The same, through the form page with its token."""
    data = {**VALID, "altcha": "", "csrf_token": csrf_token(client)}
    return client.post("/contact", data=data, environ_base={"REMOTE_ADDR": address})


def refused() -> float | None:
    """How many API submissions the limits have refused in this process so far."""
    return REGISTRY.get_sample_value(
        "contact_form_submissions_total", {"route": "api", "outcome": "rate_limited"}
    )


def test_the_fourth_post_in_a_minute_is_refused_with_retry_after(client: FlaskClient) -> None:
    before = refused() or 0
    assert [post_api(client).status_code for _ in range(3)] == [422, 422, 422]
    response = post_api(client)
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.get_json() == {
        "error": "Too many messages from your connection; "
        "please try again in 1 minute or call the clinic."
    }
    assert refused() == before + 1


def test_only_a_refusal_says_when_to_try_again_and_no_answer_counts_the_budget(
    client: FlaskClient,
) -> None:
    # A robot learns nothing of how much budget it has left; a 422 has nothing to wait for.
    answers = [post_api(client) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [422, 422, 422, 429]
    for answer in answers:
        assert not [name for name in answer.headers.keys() if name.startswith("X-RateLimit")]
    assert ["Retry-After" in answer.headers for answer in answers] == [False, False, False, True]


def test_the_form_page_says_when_to_try_again_and_keeps_the_words(client: FlaskClient) -> None:
    for _ in range(3):
        assert post_page(client).status_code == 422
    response = post_page(client)
    assert response.status_code == 429
    assert "Retry-After" in response.headers
    page = response.get_data(as_text=True)
    assert "Too many messages from your connection; please try again in 1 minute" in page
    assert "or call the clinic" in page
    assert 'value="Jane Citizen"' in page and VALID["message"].splitlines()[0] in page


def test_the_page_and_the_api_share_one_budget_and_showing_the_form_costs_nothing(
    client: FlaskClient,
) -> None:
    for _ in range(5):
        assert client.get("/contact").status_code == 200
    assert post_page(client).status_code == 422
    assert post_api(client).status_code == 422
    assert post_page(client).status_code == 422
    assert post_api(client).status_code == 429
    assert post_page(client).status_code == 429


def test_each_address_has_its_own_budget(client: FlaskClient) -> None:
    for _ in range(3):
        post_api(client, "203.0.113.7")
    assert post_api(client, "203.0.113.7").status_code == 429
    assert post_api(client, "198.51.100.2").status_code == 422


def test_without_trusted_proxies_a_forged_forwarded_for_changes_nothing(
    client: FlaskClient,
) -> None:
    codes = [post_api(client, **{"X-Forwarded-For": f"192.0.2.{n}"}).status_code for n in range(10)]
    assert codes == [422] * 3 + [429] * 7


def test_with_one_trusted_proxy_each_forwarded_address_is_a_client(make_app: Any) -> None:
    client = make_app(TRUSTED_PROXIES=1).test_client()
    # Behind the proxy, every visitor arrives from the proxy's address: 10.0.0.1.
    for n in range(3):
        for _ in range(3):
            assert (
                post_api(client, "10.0.0.1", **{"X-Forwarded-For": f"192.0.2.{n}"}).status_code
                == 422
            )
    assert post_api(client, "10.0.0.1", **{"X-Forwarded-For": "192.0.2.0"}).status_code == 429
    # Only the last hop is believed: a visitor cannot pose as another by prepending addresses.
    spoofed = {"X-Forwarded-For": "192.0.2.99, 192.0.2.0"}
    assert post_api(client, "10.0.0.1", **spoofed).status_code == 429


GLOBAL_TEXT = (
    "The form is receiving an unusual number of messages right now. "
    "Please try again in {} minutes or call the clinic."
)


def post_valid(client: FlaskClient, address: str, **extra: str) -> Any:
    """A real enquiry from `address`, with a solved captcha."""
    body = {**VALID, **extra, "altcha": solve_captcha(client)}
    return client.post("/api/enquiries", json=body, environ_base={"REMOTE_ADDR": address})


def test_junk_from_many_addresses_never_closes_the_form_for_a_patient(
    app: Flask, client: FlaskClient, smtp_server: SMTPTestServer
) -> None:
    assert app.config["RATELIMIT_GLOBAL"] == "300 per hour"
    answers = [
        post_api(client, f"203.0.113.{host}").status_code for host in range(64) for _ in range(5)
    ]
    assert len(answers) == 320 and set(answers) == {422, 429}
    assert post_valid(client, "198.51.100.1").status_code == 202
    assert deliver_all(app) == 1 and len(smtp_server.messages) == 1


def test_stored_enquiries_spend_the_global_budget_and_the_next_client_is_told_so(
    make_app: Any,
) -> None:
    client = make_app(RATELIMIT_GLOBAL="3 per hour").test_client()
    assert post_valid(client, "198.51.100.1").status_code == 202
    assert post_valid(client, "198.51.100.2", extra_comments="autofilled").status_code == 202
    assert post_api(client, "198.51.100.3").status_code == 422, "junk spends nothing"
    assert post_valid(client, "198.51.100.4").status_code == 202  # the third stored
    refused = post_valid(client, "198.51.100.5")
    assert refused.status_code == 429
    minutes = -(-int(refused.headers["Retry-After"]) // 60)
    assert refused.get_json() == {"error": GLOBAL_TEXT.format(minutes)}
    page = client.post(
        "/contact",
        data={**VALID, "altcha": "", "csrf_token": csrf_token(client)},
        environ_base={"REMOTE_ADDR": "198.51.100.6"},
    )
    assert page.status_code == 429
    assert GLOBAL_TEXT.format(minutes) in page.get_data(as_text=True)


def test_an_ipv6_client_is_counted_per_64(client: FlaskClient) -> None:
    rotating = [f"2001:db8:1:2::{host:x}" for host in range(1, 5)]
    assert [post_api(client, address).status_code for address in rotating] == [422, 422, 422, 429]
    assert post_api(client, "2001:db8:1:3::1").status_code == 422, "another /64, another budget"
    assert post_api(client, "::ffff:192.0.2.5").status_code == 422
    answers = [post_api(client, "192.0.2.5").status_code for _ in range(3)]
    assert answers == [422, 422, 429], "an IPv4-mapped address is that IPv4 client"


def test_processes_sharing_redis_share_the_count(make_app: Any, redis_url: str) -> None:
    first = make_app(RATELIMIT_STORAGE_URI=redis_url).test_client()
    second = make_app(RATELIMIT_STORAGE_URI=redis_url).test_client()
    assert [post_api(first).status_code for _ in range(2)] == [422, 422]
    assert post_api(second).status_code == 422
    assert post_api(second).status_code == 429
    assert post_api(first).status_code == 429


def test_an_unreachable_redis_does_not_turn_patients_away(make_app: Any) -> None:
    app: Flask = make_app(RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0")
    client = app.test_client()
    # Counting falls back to this process's memory: the limit still applies, nothing fails.
    assert [post_api(client).status_code for _ in range(4)] == [422, 422, 422, 429]


@pytest.fixture
def own_redis(tmp_path: Any) -> Iterator[Any]:
    """A Redis server of the test's own, on a free port, that the test may stop and start."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(tmp_path)]
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        processes.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop() -> None:
        processes[-1].terminate()
        processes[-1].wait(10)

    start()
    yield SimpleNamespace(url=f"redis://127.0.0.1:{port}/0", start=start, stop=stop)
    for process in processes:
        if process.poll() is None:
            process.terminate()
            process.wait(10)


def test_counting_moves_to_memory_while_redis_is_down_and_back_once_it_returns(
    make_app: Any, own_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "RETRY_STORAGE_AFTER_SECONDS", 0.5)
    client = make_app(RATELIMIT_STORAGE_URI=own_redis.url).test_client()
    counted_in_redis = [post_api(client).status_code for _ in range(2)]
    own_redis.stop()  # its counts go with it
    # In this process's memory, from zero: the limit still applies and nothing fails.
    assert counted_in_redis + [post_api(client).status_code for _ in range(4)] == (
        [422] * 5 + [429]
    )
    own_redis.start()
    time.sleep(0.6)
    # Redis again, from zero (it lost its counts): memory's full count no longer refuses.
    assert [post_api(client).status_code for _ in range(4)] == [422, 422, 422, 429]
