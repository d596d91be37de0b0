"""The JSON API: 202 when queued, 422 with the exact texts, 400 for a body that is no object."""

import pytest
from flask.testing import FlaskClient

from service.intake.validation import CAPTCHA_FAILED
from service.store.models import Enquiry
from tests.conftest import VALID, solve_captcha


def test_valid_enquiry_is_queued(app, client: FlaskClient) -> None:
    response = client.post("/api/enquiries", json={**VALID, "altcha": solve_captcha(client)})
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued" and len(body["id"]) == 32
    with app.extensions["store"].sessions() as session:
        stored = session.get(Enquiry, body["id"])
    assert stored is not None
    assert (stored.name, stored.email, stored.phone) == (
        "Jane Citizen",
        VALID["email"],
        "+61412345678",
    )
    assert stored.status == "pending"


def test_api_needs_no_csrf_token(app, client: FlaskClient) -> None:
    assert app.config.get("WTF_CSRF_ENABLED", True) is not False
    response = client.post("/api/enquiries", json={**VALID, "altcha": solve_captcha(client)})
    assert response.status_code == 202


def test_invalid_fields_give_422_with_exact_texts(client: FlaskClient) -> None:
    response = client.post(
        "/api/enquiries",
        json={"name": "", "email": "jane@", "phone": "123", "message": "", "altcha": "forged"},
    )
    assert response.status_code == 422
    assert response.get_json() == {
        "errors": {
            "name": ["Please enter your name."],
            "email": ["Invalid Email"],
            "phone": ["Invalid Number"],
            "message": ["Please enter a message."],
            "altcha": [CAPTCHA_FAILED],
        }
    }


@pytest.mark.parametrize(
    "body", [b"[1, 2]", b'"text"', b"42", b"null", b"{not json", b"", b"\xff\xfe{}"]
)
def test_body_that_is_not_a_json_object_gives_400(client: FlaskClient, body: bytes) -> None:
    response = client.post("/api/enquiries", data=body, content_type="application/json")
    assert response.status_code == 400
    assert "must be a JSON object" in response.get_json()["error"]


def test_non_json_content_type_gives_415(client: FlaskClient) -> None:
    response = client.post("/api/enquiries", data=VALID)
    assert response.status_code == 415
    assert "application/json" in response.get_json()["error"]


def test_unknown_fields_are_ignored_and_cannot_change_the_mail(app, client: FlaskClient) -> None:
    body = {
        **VALID,
        "altcha": solve_captcha(client),
        "to": "x@evil.example",
        "subject": "hi",
        "sender": "x@evil.example",
        "CLINIC_INBOX": "x@evil.example",
    }
    assert client.post("/api/enquiries", json=body).status_code == 202


def test_numbers_are_read_as_text_and_other_types_as_missing(client: FlaskClient) -> None:
    body = {"name": ["Jane"], "email": {"a": 1}, "phone": 412345678, "message": None}
    errors = client.post("/api/enquiries", json=body).get_json()["errors"]
    assert errors["name"] == ["Please enter your name."]
    assert errors["email"] == ["Invalid Email"]
    assert "phone" not in errors
    assert errors["message"] == ["Please enter a message."]


def test_unknown_route_and_wrong_method_answer_json(client: FlaskClient) -> None:
    assert client.get("/api/enquiries").status_code == 405
    assert "POST" in client.get("/api/enquiries").headers["Allow"]
    assert "error" in client.get("/api/enquiries").get_json()
    assert client.get("/api/nothing").get_json()["error"]


def test_healthz_reports_the_store(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"
