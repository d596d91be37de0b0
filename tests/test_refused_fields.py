"""A refused post's fields: sent again, refused with the same texts for one keyed digest."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.intake import refused_fields, validation
from service.intake.captcha import refused
from service.intake.validation import CAPTCHA_FAILED
from tests.conftest import VALID, csrf_token, solve_captcha
from tests.support import load

BAD = {"name": "", "email": "jane@", "phone": "123", "message": "Hello"}


def checks_counted(monkeypatch: pytest.MonkeyPatch) -> list[Mapping[str, Any]]:
    """Record each run of the field checks (the real ones still run)."""
    runs: list[Mapping[str, Any]] = []
    real: Callable[..., validation.FieldCheck] = validation.check_fields

    def counted(posted: Mapping[str, Any], region: str) -> validation.FieldCheck:
        runs.append(posted)
        return real(posted, region)

    monkeypatch.setattr(validation, "check_fields", counted)
    return runs


def known(app: Flask, posted: Mapping[str, str | None]) -> refused_fields.Errors | None:
    """What the app's record holds for these fields, or None."""
    with app.app_context():
        record = refused_fields.record()
        return record.get(record.digest(posted, app.config["PHONE_DEFAULT_REGION"]))


def post(client: FlaskClient, body: dict[str, str]) -> tuple[int, Any]:
    response = client.post("/api/enquiries", json=body)
    return response.status_code, response.get_json()


def test_a_refused_body_sent_again_gets_the_same_texts_without_its_checks(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = checks_counted(monkeypatch)
    answers = [post(client, BAD) for _ in range(3)]
    assert (
        answers
        == [
            (
                422,
                {
                    "errors": {
                        "name": ["Please enter your name."],
                        "email": ["Invalid Email"],
                        "phone": ["Invalid Number"],
                        "altcha": [CAPTCHA_FAILED],
                    }
                },
            )
        ]
        * 3
    )
    assert len(runs) == 1
    # Valid fields refused for their captcha alone: the same, with the captcha's text only.
    assert [post(client, VALID) for _ in range(2)] == [
        (422, {"errors": {"altcha": [CAPTCHA_FAILED]}})
    ] * 2
    assert len(runs) == 2


def test_fields_refused_for_their_captcha_are_stored_cleaned_once_it_is_solved(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = {**VALID, "email": "Jane.Citizen@EXAMPLE.com", "name": "  Jane Citizen "}
    assert post(client, sent)[0] == 422
    assert known(app, sent) == ()
    runs = checks_counted(monkeypatch)
    status, body = post(client, {**sent, "altcha": solve_captcha(client)})
    assert status == 202
    # Checked again before it is stored: the store gets the cleaned fields, not a verdict.
    assert len(runs) == 1
    stored = load(app, body["id"])
    assert (stored.name, stored.email, stored.phone) == (
        "Jane Citizen",
        "Jane.Citizen@example.com",
        "+61412345678",
    )


def test_a_field_corrected_is_checked_afresh(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    post(client, BAD)
    runs = checks_counted(monkeypatch)
    corrected = {**BAD, "name": "Jane", "email": "jane@example.com"}
    assert post(client, corrected) == (
        422,
        {"errors": {"phone": ["Invalid Number"], "altcha": [CAPTCHA_FAILED]}},
    )
    assert len(runs) == 1


def test_the_phone_region_is_part_of_the_verdict(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 0412 345 678 is a mobile number in Australia and not a number at all in the US.
    assert post(client, VALID) == (422, {"errors": {"altcha": [CAPTCHA_FAILED]}})
    app.config["PHONE_DEFAULT_REGION"] = "US"
    runs = checks_counted(monkeypatch)
    assert post(client, VALID) == (
        422,
        {"errors": {"phone": ["Invalid Number"], "altcha": [CAPTCHA_FAILED]}},
    )
    assert len(runs) == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"name": "a\0b", "email": "c"}, {"name": "a", "email": "b\0c"}),
        ({"name": "ab", "email": ""}, {"name": "a", "email": "b"}),
        ({"name": "a"}, {"name": "a", "message": " "}),
    ],
)
def test_digests_tell_any_two_posts_apart(
    first: dict[str, str | None], second: dict[str, str | None]
) -> None:
    record = refused_fields.RefusedFields()
    assert record.digest(first, "AU") != record.digest(second, "AU")
    assert record.digest(first, "AU") != record.digest(first, "US")
    # Another process's key: its digests match none of this one's.
    assert refused_fields.RefusedFields().digest(first, "AU") != record.digest(first, "AU")


def test_a_missing_field_is_an_empty_one_to_the_record_as_to_the_checks() -> None:
    record = refused_fields.RefusedFields()
    assert record.digest({"name": "a", "phone": None}, "AU") == record.digest({"name": "a"}, "AU")
    assert record.digest({"name": "a", "phone": ""}, "AU") == record.digest({"name": "a"}, "AU")


def test_the_record_is_bounded_and_holds_no_words_of_the_post() -> None:
    record = refused_fields.RefusedFields()
    posts = [{**VALID, "message": f"Message number {n}"} for n in range(refused_fields.MOST + 10)]
    for posted in posts:
        record.remember(record.digest(posted, "AU"), {"phone": validation.INVALID_NUMBER})
    assert len(record.entries) == refused_fields.MOST
    assert record.get(record.digest(posts[9], "AU")) is None
    assert record.get(record.digest(posts[10], "AU")) == (("phone", "Invalid Number"),)
    held = repr(vars(record))
    assert all(value not in held for value in VALID.values())
    assert "Message number" not in held
    # One error set, held once however many posts share it.
    assert len(record.shapes) == 1


def test_the_readme_gives_the_records_sizes() -> None:
    readme = Path(__file__).resolve().parent.parent.joinpath("README.md").read_text()
    assert f"last {refused.MOST:,} ALTCHA payloads it" in readme
    assert f"the last {refused_fields.MOST:,} posts it refused" in readme.replace("\n", " ")
    assert f"The fields of the last {refused_fields.MOST:,} posts a process refused" in readme


def test_a_stored_enquiry_sent_again_leaves_nothing_in_the_record(
    app: Flask, client: FlaskClient
) -> None:
    # A double click: the second post is a repeat of a stored enquiry, answered 202 with its id.
    body = {**VALID, "altcha": solve_captcha(client)}
    headers = {"Idempotency-Key": "double-click-1"}
    first = client.post("/api/enquiries", json=body, headers=headers)
    second = client.post("/api/enquiries", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.get_json()["id"] == second.get_json()["id"]
    assert known(app, VALID) is None


def test_the_page_shows_a_refused_form_again_with_the_same_errors_without_its_checks(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = checks_counted(monkeypatch)
    pages = []
    for _ in range(2):
        data = {**BAD, "csrf_token": csrf_token(client), "altcha": ""}
        response = client.post("/contact", data=data)
        assert response.status_code == 422
        pages.append(re.findall(r'<p class="error" id="([a-z]+)-error">([^<]*)</p>', response.text))
    assert pages[0] == pages[1]
    assert ("email", "Invalid Email") in pages[0] and ("phone", "Invalid Number") in pages[0]
    assert len(runs) == 1
