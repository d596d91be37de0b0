"""ALTCHA: real challenges solved for real; replayed, expired and forged solutions refused."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import altcha
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from service.intake.validation import CAPTCHA_FAILED
from service.store.models import Enquiry, UsedCaptcha
from tests.conftest import VALID, redis_client, solve_captcha
from tests.support import AppFactory, forged_payload, records

REDIS = "redis://127.0.0.1:6379/15"


def submit(client: FlaskClient, payload: str) -> TestResponse:
    return client.post("/api/enquiries", json={**VALID, "altcha": payload})


def captcha_errors(response: TestResponse) -> list[str]:
    return response.get_json().get("errors", {}).get("altcha", [])


def test_challenge_is_fresh_signed_and_expires(client: FlaskClient) -> None:
    first = client.get("/altcha/challenge")
    second = client.get("/altcha/challenge").get_json()
    assert first.headers["Cache-Control"] == "no-store"
    first = first.get_json()
    assert first["signature"] != second["signature"]
    assert first["parameters"]["algorithm"] == "PBKDF2/SHA-256"
    assert 0 < first["parameters"]["expiresAt"] - time.time() <= 600


def test_making_a_challenge_derives_no_key_on_the_server(app: Flask, client: FlaskClient) -> None:
    # Random-key mode: the answer is any counter whose key starts with "00"; the service has not
    # worked one out, so it signed no key (a pre-solved challenge carries keySignature).
    parameters = client.get("/altcha/challenge").get_json()["parameters"]
    assert parameters["keyPrefix"] == "00"
    assert "keySignature" not in parameters
    assert parameters["cost"] == app.config["ALTCHA_COST"]


def test_challenges_have_a_per_client_limit(make_app: AppFactory) -> None:
    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_CHALLENGE="3 per minute")
    client = app.test_client()
    answers = [
        client.get("/altcha/challenge", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code
        for _ in range(4)
    ]
    assert answers == [200, 200, 200, 429]
    refused = client.get("/altcha/challenge", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert (
        "Retry-After" in refused.headers and "try again in 1 minute" in refused.get_json()["error"]
    )
    other = client.get("/altcha/challenge", environ_base={"REMOTE_ADDR": "203.0.113.10"})
    assert other.status_code == 200


def test_solved_challenge_is_accepted_once(client: FlaskClient) -> None:
    payload = solve_captcha(client)
    assert submit(client, payload).status_code == 202
    replay = submit(client, payload)
    assert replay.status_code == 422
    assert captcha_errors(replay) == [CAPTCHA_FAILED]


def test_an_answer_spent_here_is_refused_again_without_deriving_its_proof_of_work(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    derivations: list[int] = []
    real_pbkdf2 = hashlib.pbkdf2_hmac

    def counted_pbkdf2(*args: Any, **kwargs: Any) -> bytes:
        derivations.append(1)
        return real_pbkdf2(*args, **kwargs)

    payload, fresh = solve_captcha(client), solve_captcha(client)  # solving derives too
    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counted_pbkdf2)
    assert submit(client, payload).status_code == 202
    assert len(derivations) == 1  # the check of the fresh answer
    for _ in range(3):
        assert captcha_errors(submit(client, payload)) == [CAPTCHA_FAILED]
    assert len(derivations) == 1
    # Only the very payload is known without a check: a changed copy of it is checked in full
    # (and refused), and a fresh answer still costs its derivation.
    changed = json.loads(base64.b64decode(payload))
    changed["challenge"]["parameters"]["salt"] = "00" * 16
    forged = base64.b64encode(json.dumps(changed).encode()).decode()
    assert captcha_errors(submit(client, forged)) == [CAPTCHA_FAILED]
    before = len(derivations)
    assert submit(client, fresh).status_code == 202
    assert len(derivations) == before + 1


def test_a_changed_copy_of_a_spent_answer_is_not_taken_for_a_resend(client: FlaskClient) -> None:
    # With the first post's Idempotency-Key and fields, a resend is answered with its id; a
    # copy whose challenge was altered is a forgery, not a resend, and gets the captcha error.
    payload = solve_captcha(client)
    key = {"Idempotency-Key": "double-click-1"}
    first = client.post("/api/enquiries", json={**VALID, "altcha": payload}, headers=key)
    assert first.status_code == 202
    again = client.post("/api/enquiries", json={**VALID, "altcha": payload}, headers=key)
    assert again.status_code == 202 and again.get_json()["id"] == first.get_json()["id"]
    changed = json.loads(base64.b64decode(payload))
    changed["challenge"]["parameters"]["salt"] = "00" * 16
    forged = base64.b64encode(json.dumps(changed).encode()).decode()
    refused = client.post("/api/enquiries", json={**VALID, "altcha": forged}, headers=key)
    assert refused.status_code == 422
    assert captcha_errors(refused) == [CAPTCHA_FAILED]


def test_replay_is_refused_by_another_process_on_the_same_store(
    app_config, client, monkeypatch
) -> None:
    from service import create_app

    payload = solve_captcha(client)
    assert submit(client, payload).status_code == 202
    other = create_app(app_config)  # same store, fresh memory: as another process would be
    try:
        assert captcha_errors(submit(other.test_client(), payload)) == [CAPTCHA_FAILED]
    finally:
        other.extensions["store"].engine.dispose()


def test_missing_solution_is_refused(client: FlaskClient) -> None:
    assert captcha_errors(client.post("/api/enquiries", json=VALID)) == [CAPTCHA_FAILED]


def test_expired_challenge_is_refused(app, client: FlaskClient) -> None:
    app.config["ALTCHA_EXPIRES_SECONDS"] = -1
    payload = solve_captcha(client)
    app.config["ALTCHA_EXPIRES_SECONDS"] = 600
    assert captcha_errors(submit(client, payload)) == [CAPTCHA_FAILED]


def test_wrong_solution_is_refused(client: FlaskClient) -> None:
    challenge = altcha.Challenge.from_dict(client.get("/altcha/challenge").get_json())
    solution = altcha.solve_challenge(challenge)
    # The counter and the key must agree: the service derives the key from the counter.
    last = "0" if solution.derived_key[-1] != "0" else "1"
    wrong = altcha.Solution(solution.counter, solution.derived_key[:-1] + last)
    assert captcha_errors(submit(client, altcha.Payload(challenge, wrong).to_base64())) == [
        CAPTCHA_FAILED
    ]


def test_challenge_signed_with_another_key_is_refused(client: FlaskClient) -> None:
    forged = altcha.create_challenge(
        "PBKDF2/SHA-256", 50, hmac_secret="guessed", expires_at=int(time.time()) + 600
    )
    payload = altcha.Payload(forged, altcha.solve_challenge(forged)).to_base64()
    assert captcha_errors(submit(client, payload)) == [CAPTCHA_FAILED]


def test_tampered_challenge_is_refused(client: FlaskClient) -> None:
    data = json.loads(base64.b64decode(solve_captcha(client)))
    data["challenge"]["parameters"]["expiresAt"] += 3600  # extend its life
    payload = base64.b64encode(json.dumps(data).encode()).decode()
    assert captcha_errors(submit(client, payload)) == [CAPTCHA_FAILED]


def test_garbage_payloads_are_refused_without_error(client: FlaskClient) -> None:
    for payload in [
        "x",
        "!!!",
        base64.b64encode(b"[]").decode(),
        base64.b64encode(b'{"challenge":1}').decode(),
        "A" * 5000,
    ]:
        assert captcha_errors(submit(client, payload)) == [CAPTCHA_FAILED]


def test_invalid_submission_does_not_use_up_the_solution(client: FlaskClient) -> None:
    payload = solve_captcha(client)
    bad = client.post("/api/enquiries", json={**VALID, "email": "nope", "altcha": payload})
    assert bad.status_code == 422 and "altcha" not in bad.get_json()["errors"]
    assert submit(client, payload).status_code == 202


# --- The replay store in Redis, shared by processes that share nothing else -------------------


@pytest.fixture
def replay_redis() -> Iterator[ReplayRedis]:
    """The machine's Redis (database 15); the keys this test's solutions made are removed after."""
    client = redis_client(REDIS)
    shared = ReplayRedis(client)
    yield shared
    for key in shared.keys:
        client.delete(key)
    client.close()


class ReplayRedis:
    """A Redis client that knows the key each solution is recorded under."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.keys: list[str] = []

    def key_of(self, payload: str) -> str:
        """The key that marks this ALTCHA solution used (its challenge's signature)."""
        signature = json.loads(base64.b64decode(payload))["challenge"]["signature"]
        key = f"contact-form:captcha:{signature}"
        self.keys.append(key)
        return key


@pytest.mark.parametrize("setting", ["REDIS_URL", "RATELIMIT_STORAGE_URI"])
def test_a_solution_accepted_by_one_process_is_refused_by_another_sharing_only_redis(
    make_app: AppFactory, replay_redis: ReplayRedis, tmp_path: Path, setting: str
) -> None:
    first, second = (
        make_app(**{setting: REDIS, "DATABASE_URL": f"sqlite:///{tmp_path / name}.sqlite3"})
        for name in ("first", "second")
    )
    payload = solve_captcha(first.test_client())
    key = replay_redis.key_of(payload)
    assert submit(first.test_client(), payload).status_code == 202
    refused = submit(second.test_client(), payload)
    assert refused.status_code == 422 and captcha_errors(refused) == [CAPTCHA_FAILED]
    # Remembered as long as the challenge lives, and no longer.
    assert 590 <= replay_redis.client.ttl(key) <= 600
    with first.app_context(), first.extensions["store"].sessions() as session:
        assert session.query(UsedCaptcha).count() == 0, "with Redis, the database keeps no record"


def test_an_unreachable_redis_loses_no_enquiry_and_still_refuses_replays(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    client = app.test_client()
    payload = solve_captcha(client)
    assert submit(client, payload).status_code == 202
    warnings = records(caplog, logging.WARNING, "service.intake.captcha.replay")
    assert [r.getMessage() for r in warnings] == [
        "Redis failed for the captcha replay store (ConnectionError); using the database for 30 s"
    ]
    # The database stands in for Redis: the solution was recorded there, and is refused again.
    assert captcha_errors(submit(client, payload)) == [CAPTCHA_FAILED]
    assert stored_enquiries(app) == 1


def stored_enquiries(app: Flask) -> int:
    """How many enquiries the app's store holds."""
    with app.app_context(), app.extensions["store"].sessions() as session:
        return session.query(Enquiry).count()


def test_the_difficulty_sets_the_widgets_attempts_and_the_check_stays_one_derivation(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The work sits in the number of attempts (16 ** ALTCHA_DIFFICULTY on average), each of
    # ALTCHA_COST iterations; the service checks an answer by re-doing one attempt.
    import hashlib

    derivations: list[int] = []
    real = hashlib.pbkdf2_hmac

    def counted(name: str, password: bytes, salt: bytes, iterations: int, *rest: int) -> bytes:
        derivations.append(iterations)
        return real(name, password, salt, iterations, *rest)

    for difficulty in (1, 3):
        app = make_app(ALTCHA_DIFFICULTY=difficulty, ALTCHA_COST=40)
        client = app.test_client()
        assert client.get("/altcha/challenge").get_json()["parameters"]["keyPrefix"] == (
            "0" * difficulty
        )
        payload = solve_captcha(client)
        monkeypatch.setattr(hashlib, "pbkdf2_hmac", counted)
        assert submit(client, payload).status_code == 202
        monkeypatch.setattr(hashlib, "pbkdf2_hmac", real)
        assert derivations == [40], f"one derivation of ALTCHA_COST at difficulty {difficulty}"
        derivations.clear()


@pytest.mark.parametrize("difficulty", [0, 7])
def test_a_difficulty_out_of_range_stops_start_up(make_app: AppFactory, difficulty: int) -> None:
    with pytest.raises(Exception, match="ALTCHA_DIFFICULTY must be a whole number from 1 to 6"):
        make_app(ALTCHA_DIFFICULTY=difficulty)


def test_an_answer_signed_under_one_secret_key_is_refused_under_another(
    make_app: AppFactory,
) -> None:
    # The keys derived from SECRET_KEY are kept per key: two apps in one process keep theirs.
    first = make_app(SECRET_KEY="first-deployment-secret-key-0123456789")
    second = make_app(SECRET_KEY="second-deployment-secret-key-987654321")
    payload = solve_captcha(first.test_client())
    assert captcha_errors(submit(second.test_client(), payload)) == [CAPTCHA_FAILED]
    assert submit(first.test_client(), payload).status_code == 202


def checks_counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count altcha's checks of a payload from now on (each still runs for real)."""
    checks: list[int] = []
    real_verify = altcha.verify_solution

    def counted(*args: Any, **kwargs: Any) -> Any:
        checks.append(1)
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(altcha, "verify_solution", counted)
    return checks


def refused_each_time(
    client: FlaskClient, payload: str, times: int, caplog: pytest.LogCaptureFixture
) -> list[str | None]:
    """Post `payload` `times` times, each refused; the reasons in the requests' log lines."""
    from service.ops.logs import JSONFormatter

    caplog.set_level(logging.INFO)
    caplog.clear()
    for _ in range(times):
        assert captcha_errors(submit(client, payload)) == [CAPTCHA_FAILED]
    lines = [r for r in caplog.records if r.name == "service.requests"]
    return [json.loads(JSONFormatter().format(r)).get("reason") for r in lines]


def test_a_payload_refused_here_is_refused_again_for_its_reason_without_a_check(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    forged = forged_payload(client)
    checks = checks_counted(monkeypatch)
    reasons = refused_each_time(client, forged, 3, caplog)
    assert len(checks) == 1
    assert reasons == ["captcha rejected: bad signature"] * 3
    # Only the very bytes are known: another forgery is checked in full, and a real answer is
    # still checked and accepted.
    assert captcha_errors(submit(client, forged_payload(client, counter=1))) == [CAPTCHA_FAILED]
    assert len(checks) == 2
    assert submit(client, solve_captcha(client)).status_code == 202
    assert len(checks) == 3


def test_an_expired_answer_stays_refused_once_refused(
    app: Flask,
    client: FlaskClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app.config["ALTCHA_EXPIRES_SECONDS"] = -1
    payload = solve_captcha(client)
    app.config["ALTCHA_EXPIRES_SECONDS"] = 600
    checks = checks_counted(monkeypatch)
    reasons = refused_each_time(client, payload, 2, caplog)
    assert len(checks) == 1
    assert reasons == ["captcha rejected: expired"] * 2


def test_a_payload_refused_by_one_app_is_still_checked_by_another(make_app: AppFactory) -> None:
    # The verdict depends on the app's secret: two apps in one process keep their own records.
    first = make_app(SECRET_KEY="first-deployment-secret-key-0123456789")
    second = make_app(SECRET_KEY="second-deployment-secret-key-987654321")
    payload = solve_captcha(first.test_client())
    for _ in range(2):
        assert captcha_errors(submit(second.test_client(), payload)) == [CAPTCHA_FAILED]
    assert submit(first.test_client(), payload).status_code == 202


def test_the_record_of_refused_payloads_is_bounded_and_forgets_the_oldest() -> None:
    from service.intake.captcha import refused

    record = refused.RefusedHere()
    for number in range(refused.MOST + 10):
        record.add(f"payload:{number}", "captcha rejected: bad signature")
    assert len(record.reasons) == refused.MOST
    assert record.reason("payload:9") is None
    assert record.reason("payload:10") == "captcha rejected: bad signature"
    assert record.reason(f"payload:{refused.MOST + 9}") == "captcha rejected: bad signature"
