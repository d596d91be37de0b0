"""What the operator sees: /healthz and /readyz, /metrics behind its token, JSON logs with ids."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from service.ops.logs import JSONFormatter
from service.store import lifecycle
from tests.conftest import VALID, deliver_all, solve_captcha
from tests.support import change, enqueue, forged_payload, personal_data_in

TOKEN = "metrics-test-token"


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    """The suite's settings with /metrics opened by a token."""
    return {**app_config, "METRICS_TOKEN": TOKEN}


def metric(client: FlaskClient, line_start: str) -> float | None:
    """The value of the first /metrics sample whose line starts with `line_start`."""
    body = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert body.status_code == 200
    for line in body.get_data(as_text=True).splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_readyz_reports_the_outbox(app: Flask, client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"
    enqueue(client)
    body = client.get("/readyz").get_json()
    assert body["outbox"]["pending"] == 1 and body["oldest_pending_seconds"] >= 0


def test_readyz_is_503_when_an_enquiry_waits_beyond_stuck_after(
    app: Flask, client: FlaskClient
) -> None:
    enquiry_id = enqueue(client)
    change(app, enquiry_id, queued_at=lifecycle.utcnow() - timedelta(minutes=14))
    assert client.get("/readyz").status_code == 200
    change(app, enquiry_id, queued_at=lifecycle.utcnow() - timedelta(minutes=20))
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "stuck" and "STUCK_AFTER is 15" in body["reason"]
    assert body["outbox"]["pending"] == 1


def test_readyz_is_503_when_the_schema_is_behind(app: Flask, client: FlaskClient) -> None:
    with app.app_context(), app.extensions["store"].engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "db upgrade" in response.get_json()["reason"]


def test_readyz_is_503_when_the_store_cannot_be_reached(make_app: Any) -> None:
    app = make_app(DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none", AUTO_MIGRATE=False)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {
        "status": "unavailable",
        "reason": "the enquiry store cannot be reached",
    }
    assert app.test_client().get("/healthz").status_code == 200


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}x", "Bearer "])
def test_metrics_are_closed_without_the_token(
    client: FlaskClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    assert client.get("/metrics", headers=headers).status_code == 404


def test_metrics_are_closed_when_no_token_is_set(make_app: Any) -> None:
    client = make_app(METRICS_TOKEN="").test_client()
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404


def test_metrics_count_deliveries_and_show_the_outbox(app: Flask, client: FlaskClient) -> None:
    sent_before = metric(client, 'contact_form_deliveries_total{outcome="sent"}') or 0
    enqueue(client)
    enqueue(client, name="Another Patient")
    assert metric(client, 'contact_form_outbox_enquiries{state="pending"}') == 2
    assert metric(client, "contact_form_outbox_oldest_pending_seconds") >= 0
    deliver_all(app)
    assert metric(client, 'contact_form_outbox_enquiries{state="sent"}') == 2
    assert metric(client, 'contact_form_deliveries_total{outcome="sent"}') == sent_before + 2
    assert metric(client, 'contact_form_request_seconds_count{route="api.create_enquiry"}') >= 2


def test_a_foreign_origin_is_counted(client: FlaskClient) -> None:
    sample = 'contact_form_submissions_total{outcome="foreign_origin",route="api"}'
    before = metric(client, sample) or 0
    client.post("/api/enquiries", json=VALID, headers={"Origin": "https://evil.example"})
    assert metric(client, sample) == before + 1


def test_a_foreign_origin_is_one_warning_line_that_says_why(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = client.post("/api/enquiries", json=VALID, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    lines = [r for r in caplog.records if r.name.startswith("service")]
    assert [(r.name, r.levelname) for r in lines] == [("service.requests", "WARNING")]
    entry = json.loads(JSONFormatter().format(lines[0]))
    assert entry["reason"] == "refused a submission from a foreign origin"
    assert (entry["status"], entry["path"]) == (403, "/api/enquiries")


def test_an_operator_who_logs_only_warnings_still_sees_a_foreign_origin(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="service")
    client.post("/api/enquiries", json=VALID)  # refused for its captcha: an info line, not shown
    client.post("/api/enquiries", json=VALID, headers={"Origin": "https://evil.example"})
    lines = [r for r in caplog.records if r.name.startswith("service")]
    assert [(r.levelname, r.getMessage()) for r in lines] == [
        ("WARNING", "POST /api/enquiries 403")
    ]


@pytest.mark.parametrize(
    ("given", "kept"),
    [("abc-123.DEF_456:7", True), ("x" * 65, False), ("bad id", False), ("<script>", False)],
)
def test_the_request_id_is_taken_when_plain_and_made_otherwise(
    client: FlaskClient, given: str, kept: bool
) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": given})
    returned = response.headers["X-Request-ID"]
    assert (returned == given) is kept
    assert len(returned) <= 64


def test_each_request_logs_one_json_line_without_personal_data(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    body = {**VALID, "email": "jane@", "altcha": ""}
    response = client.post("/api/enquiries", json=body, headers={"X-Request-ID": "req-42"})
    assert response.status_code == 422
    formatter = JSONFormatter()
    lines = [formatter.format(r) for r in caplog.records if r.name.startswith("service")]
    entries = [json.loads(line) for line in lines]
    request_lines = [e for e in entries if e["logger"] == "service.requests"]
    assert len(request_lines) == 1
    entry = request_lines[0]
    assert entry["request_id"] == "req-42"
    assert (entry["route"], entry["method"], entry["status"]) == ("api.create_enquiry", "POST", 422)
    assert entry["latency_ms"] >= 0
    assert personal_data_in("\n".join(lines)) == []


def test_a_refused_captcha_says_why_in_the_requests_one_line(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    forged = forged_payload(client)
    spent = solve_captcha(client)
    assert client.post("/api/enquiries", json={**VALID, "altcha": spent}).status_code == 202
    caplog.clear()
    for answer in (forged, spent, "not base64 at all"):
        assert client.post("/api/enquiries", json={**VALID, "altcha": answer}).status_code == 422
    lines = [r for r in caplog.records if r.name.startswith("service")]
    assert [r.name for r in lines] == ["service.requests"] * 3, "one line per refused request"
    assert [json.loads(JSONFormatter().format(r)).get("reason") for r in lines] == [
        "captcha rejected: bad signature",
        "captcha rejected: solution used before",
        "captcha payload could not be parsed",
    ]


def test_a_logged_traceback_keeps_its_frames_but_not_the_message() -> None:
    try:
        raise ValueError(f"could not parse {VALID['email']}")
    except ValueError:
        record = logging.LogRecord("service.x", logging.ERROR, __file__, 1, "failed", (), None)
        record.exc_info = sys.exc_info()
    line = json.loads(JSONFormatter().format(record))
    assert line["error"].startswith("ValueError\n") and "test_operations.py" in line["error"]
    assert VALID["email"] not in json.dumps(line)


@pytest.mark.parametrize(
    "created",
    [1764667195.0, 1764667195.3149995, 1764667195.9999996, 1764667195.0004999, 1764667196.5],
)
def test_a_lines_time_is_the_isoformat_of_its_moment(created: float) -> None:
    formatter = JSONFormatter()
    for moment in (created - 1.0, created):  # a second seen before, and one not seen yet
        record = logging.LogRecord("service.x", logging.INFO, __file__, 1, "hello", (), None)
        record.created = moment
        expected = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
        assert json.loads(formatter.format(record))["time"] == expected
