"""The OpenAPI document at /openapi.json tells the truth about the JSON API."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from werkzeug.test import TestResponse

from service.intake import captcha, traps
from service.intake import validation as v
from service.web.api import ACCEPTED_KEYS
from tests.conftest import VALID, solve_captcha
from tests.support import AppFactory

Send = Callable[[FlaskClient], TestResponse]
# Generated bodies cannot solve the ALTCHA proof of work, so 422 (documented, with the captcha's
# text) is the answer to schema-valid enquiries too: accepted or refused as such, never a crash.
SCHEMATHESIS = schemathesis.Config.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "422"]}}}
)
ALLOWED = "https://www.clinic.example"


def document(client: FlaskClient) -> dict[str, Any]:
    """The OpenAPI document as the service serves it."""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def assert_documented(doc: dict[str, Any], path: str, method: str, response: TestResponse) -> None:
    """Check a real response against its documented status, body schema and headers."""
    responses = doc["paths"][path][method]["responses"]
    assert str(response.status_code) in responses, f"{response.status_code} is not documented"
    spec = responses[str(response.status_code)]
    (media_type,) = spec["content"]
    assert response.mimetype == media_type
    # The response schemas refer to #/components/...: validate against the whole document.
    schema = {**spec["content"][media_type]["schema"], "components": doc["components"]}
    jsonschema_rs.Draft202012Validator(schema).validate(response.get_json())
    for name, header in spec.get("headers", {}).items():
        value = response.headers.get(name)
        assert value is not None or not header.get("required"), f"no {name} header"
        if value is not None:
            expected = header["schema"]
            typed = int(value) if expected.get("type") == "integer" else value
            jsonschema_rs.Draft202012Validator(expected).validate(typed)


def _post(**kwargs: Any) -> Send:
    return lambda client: client.post("/api/enquiries", **kwargs)


def _valid(client: FlaskClient) -> TestResponse:
    return client.post("/api/enquiries", json={**VALID, "altcha": solve_captcha(client)})


# One real request for each documented answer of POST /api/enquiries but 429 (its own test).
ANSWERS: list[tuple[str, Send]] = [
    ("202", _valid),
    ("400", _post(data=b"[1, 2]", content_type="application/json")),
    ("400", _post(data=b'{"name": "J\xffane"}', content_type="application/json")),
    ("400", _post(data=b"[" * 50_000, content_type="application/json")),
    ("400", _post(json=VALID, headers={"Idempotency-Key": "k" * 201})),
    ("403", _post(json=VALID, headers={"Origin": "https://evil.example"})),
    ("413", _post(json={**VALID, "message": "x" * 70_000})),
    ("415", _post(data=VALID)),
    ("422", _post(json={"name": "", "email": "jane@", "phone": "1", "message": "", "altcha": ""})),
    ("422", _post(json={**VALID, "name": "Jane\r\nBcc: x@evil.example", "altcha": "forged"})),
    ("422", _post(json={"unknown": True})),
]


@pytest.mark.parametrize(("status", "send"), ANSWERS)
def test_each_answer_of_the_api_matches_its_documented_schema(
    client: FlaskClient, status: str, send: Send
) -> None:
    response = send(client)
    assert str(response.status_code) == status, response.get_data(as_text=True)
    assert_documented(document(client), "/api/enquiries", "post", response)


def test_every_documented_answer_is_checked_against_a_real_one(client: FlaskClient) -> None:
    documented = set(document(client)["paths"]["/api/enquiries"]["post"]["responses"])
    assert documented == {status for status, _ in ANSWERS} | {"429"}


def test_too_many_requests_matches_its_documented_schema(make_app: AppFactory) -> None:
    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_PER_CLIENT="1 per minute")
    client = app.test_client()
    assert client.post("/api/enquiries", json=VALID).status_code == 422
    response = client.post("/api/enquiries", json=VALID)
    assert response.status_code == 429
    assert_documented(document(client), "/api/enquiries", "post", response)


def test_the_challenge_matches_its_documented_schema(client: FlaskClient) -> None:
    response = client.get("/altcha/challenge")
    assert_documented(document(client), "/altcha/challenge", "get", response)


def test_every_field_the_api_reads_is_documented(app: Flask, client: FlaskClient) -> None:
    enquiry = document(client)["components"]["schemas"]["Enquiry"]
    with app.test_request_context():
        read = {*ACCEPTED_KEYS, captcha.field_name(), traps.HONEYPOT}
    assert read <= set(enquiry["properties"])
    assert set(enquiry["required"]) == {"name", "email", "phone", "message", "altcha"}
    # Unknown fields are ignored, so a client may send more.
    assert enquiry["additionalProperties"] is True


def test_the_document_follows_the_configured_captcha(make_app: AppFactory) -> None:
    app = make_app(CAPTCHA_PROVIDER="turnstile", CAPTCHA_SITE_KEY="site", CAPTCHA_SECRET_KEY="s")
    doc = document(app.test_client())
    enquiry = doc["components"]["schemas"]["Enquiry"]
    assert "cf-turnstile-response" in enquiry["required"] and "altcha" not in enquiry["required"]
    assert "cf-turnstile-response" in enquiry["properties"]
    # The ALTCHA challenge answers 404 with another captcha: it is not offered.
    assert set(doc["paths"]) == {"/api/enquiries"}
    assert "Challenge" not in doc["components"]["schemas"]
    assert app.test_client().get("/altcha/challenge").status_code == 404
    schemathesis.openapi.from_wsgi("/openapi.json", app).validate()


def test_documented_limits_are_the_ones_validation_enforces(client: FlaskClient) -> None:
    fields = document(client)["components"]["schemas"]["Enquiry"]["properties"]
    longest = fields["name"]["maxLength"]
    assert v.clean_name("x" * longest) and _refused(v.clean_name, "x" * (longest + 1))
    longest = fields["message"]["maxLength"]
    assert v.clean_message("x" * longest) and _refused(v.clean_message, "x" * (longest + 1))
    longest = fields["email"]["maxLength"]
    assert _refused(v.clean_email, "a" * 64 + "@" + "b" * (longest - 68) + ".com.au")


def _refused(check: Callable[[str], Any], value: str) -> bool:
    try:
        check(value)
    except v.FieldError:
        return True
    return False


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    """The suite's settings with one allowed site, to see CORS on the document."""
    return {**app_config, "ALLOWED_ORIGINS": ALLOWED}


def test_the_document_is_served_like_the_other_public_files(client: FlaskClient) -> None:
    response = client.get("/openapi.json", headers={"Origin": ALLOWED})
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Origin" in response.headers["Vary"]
    assert response.cache_control.public and response.cache_control.max_age == 3600
    assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    other = client.get("/openapi.json", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert json.loads(other.get_data()) == response.get_json()


def test_the_document_is_valid_openapi_3_1(app: Flask) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    schema.validate()
    assert schema.raw_schema["openapi"] == "3.1.0"


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode))
def test_the_api_keeps_to_its_document_whatever_it_is_sent(
    app: Flask, mode: schemathesis.GenerationMode
) -> None:
    # Driven by hand rather than by schemathesis.pytest.from_fixture, whose pytest plugin does
    # not run on pytest 9.2 (it sets Function._nodeid, which pytest 9 no longer has).
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, config=SCHEMATHESIS)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {"POST /api/enquiries", "GET /altcha/challenge"}
    for operation in operations:
        if not mode.is_positive and not (operation.body or list(operation.iter_parameters())):
            continue  # nothing to send that could break the document: no body, no parameters

        @settings(max_examples=40, deadline=None, derandomize=True, database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate()

        call()
