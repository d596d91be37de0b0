"""ALTCHA: real challenges solved for real; replayed, expired and forged solutions refused."""

import base64
import json
import time

import altcha
from flask.testing import FlaskClient

from service.validation import CAPTCHA_FAILED
from tests.conftest import VALID, solve_captcha


def submit(client: FlaskClient, payload: str) -> "object":
    return client.post("/api/enquiries", json={**VALID, "altcha": payload})


def captcha_errors(response: "object") -> list[str]:
    return response.get_json().get("errors", {}).get("altcha", [])


def test_challenge_is_fresh_signed_and_expires(client: FlaskClient) -> None:
    first = client.get("/altcha/challenge")
    second = client.get("/altcha/challenge").get_json()
    assert first.headers["Cache-Control"] == "no-store"
    first = first.get_json()
    assert first["signature"] != second["signature"]
    assert first["parameters"]["algorithm"] == "PBKDF2/SHA-256"
    assert 0 < first["parameters"]["expiresAt"] - time.time() <= 600


def test_solved_challenge_is_accepted_once(client: FlaskClient) -> None:
    payload = solve_captcha(client)
    assert submit(client, payload).status_code == 202
    replay = submit(client, payload)
    assert replay.status_code == 422
    assert captcha_errors(replay) == [CAPTCHA_FAILED]


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
    wrong = altcha.Solution(solution.counter + 1, solution.derived_key)
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
