"""The form as a page: CSRF on, errors next to their fields, 303 to the thank-you page."""

import re

import pytest
from flask.testing import FlaskClient

from service.intake.validation import CAPTCHA_FAILED
from service.store.models import Enquiry
from tests.conftest import VALID, csrf_token, deliver_all, solve_captcha


def post_form(client: FlaskClient, **overrides: str) -> "object":
    data = {**VALID, "csrf_token": csrf_token(client), "altcha": solve_captcha(client)}
    data.update(overrides)
    return client.post("/contact", data=data)


def field_error(page: str, field: str) -> str | None:
    match = re.search(rf'<p class="error" id="{field}-error">([^<]*)</p>', page)
    return match.group(1) if match else None


def test_form_page_has_the_fields_labels_and_hints(client: FlaskClient) -> None:
    response = client.get("/contact")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Drop us a Line" in page
    for field in ("name", "email", "phone", "message"):
        assert f'<label for="{field}">' in page
        assert f'name="{field}"' in page
    assert 'autocomplete="name"' in page and 'autocomplete="email"' in page
    assert 'autocomplete="tel"' in page and 'inputmode="tel"' in page
    assert '<altcha-widget challenge="/altcha/challenge" name="altcha"' in page
    assert "/static/vendor/altcha/altcha.min.js" in page
    assert "The captcha needs JavaScript" in page
    with client.get("/static/vendor/altcha/altcha.min.js") as script:
        assert script.status_code == 200


def test_valid_form_is_stored_and_redirects_to_thanks(
    app, client: FlaskClient, smtp_server
) -> None:
    response = post_form(client)
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/contact/thanks")
    assert "Thank you" in client.get(response.headers["Location"]).get_data(as_text=True)
    with app.app_context():
        with app.extensions["store"].sessions() as session:
            stored = session.query(Enquiry).one()
    assert stored.phone == "+61412345678" and stored.status == "pending"
    deliver_all(app)
    assert smtp_server.wait_for(1)[0].header("Subject") == "New enquiry from Jane Citizen"


def test_post_without_csrf_token_is_refused_but_keeps_the_words(app, client: FlaskClient) -> None:
    response = client.post("/contact", data={**VALID, "altcha": solve_captcha(client)})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "This form had expired" in page
    assert "My lower back has been sore since Tuesday." in page and 'value="Jane Citizen"' in page
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    with app.extensions["store"].sessions() as session:
        assert session.query(Enquiry).count() == 0
    again = client.post(
        "/contact", data={**VALID, "csrf_token": token, "altcha": solve_captcha(client)}
    )
    assert again.status_code == 303


def test_forged_csrf_token_is_refused(app, client: FlaskClient) -> None:
    csrf_token(client)
    response = client.post(
        "/contact", data={**VALID, "csrf_token": "forged", "altcha": solve_captcha(client)}
    )
    assert response.status_code == 400
    with app.extensions["store"].sessions() as session:
        assert session.query(Enquiry).count() == 0


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("email", "jane@", "Invalid Email"),
        ("phone", "12345", "Invalid Number"),
        ("altcha", "", CAPTCHA_FAILED),
        ("name", "", "Please enter your name."),
        ("message", "", "Please enter a message."),
    ],
)
def test_each_error_is_shown_next_to_its_field(
    client: FlaskClient, field: str, value: str, text: str
) -> None:
    response = post_form(client, **{field: value})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert field_error(page, field) == text
    assert f'<li><a href="#{field}">{text}</a></li>' in page


def test_errors_keep_every_value_but_the_captcha(client: FlaskClient) -> None:
    payload = solve_captcha(client)
    data = {**VALID, "email": "not-an-address", "csrf_token": csrf_token(client), "altcha": payload}
    page = client.post("/contact", data=data).get_data(as_text=True)
    assert 'value="Jane Citizen"' in page
    assert 'value="not-an-address"' in page
    assert 'value="0412 345 678"' in page
    assert "My lower back has been sore since Tuesday." in page
    assert payload not in page
    assert 'aria-invalid="true"' in page and 'aria-describedby="email-error"' in page


def test_values_are_escaped_when_the_form_comes_back(client: FlaskClient) -> None:
    page = post_form(client, name='<script>alert("x")</script>', email="bad").get_data(as_text=True)
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert" in page


def test_form_remembers_the_page_it_was_on(app, client: FlaskClient) -> None:
    app.config["ALLOWED_ORIGINS"] = ("https://clinic.example",)
    page = client.get("/contact?page=https://clinic.example/articles/back-pain").get_data(
        as_text=True
    )
    assert 'value="https://clinic.example/articles/back-pain"' in page
    response = post_form(client, page="https://clinic.example/articles/back-pain")
    assert response.status_code == 303
    with app.extensions["store"].sessions() as session:
        assert session.query(Enquiry).one().page_url == "https://clinic.example/articles/back-pain"


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (
            "https://clinic.example/articles/back-pain?patient=Jane#book",
            "https://clinic.example/articles/back-pain",
        ),
        ("https://CLINIC.example:443/articles", "https://clinic.example/articles"),
        ("https://clinic.example", "https://clinic.example/"),
        ("https://evil.example/login?next=clinic", None),
        ("https://clinic.example.evil.example/", None),
        ("https://user:pw@clinic.example/", None),
        ("http://clinic.example/articles", None),  # another scheme is another origin
        ("https://localhost/articles?x=1", "https://localhost/articles"),  # the service's own
    ],
)
def test_only_a_page_of_the_clinic_or_the_service_is_kept_and_without_its_query(
    sent: str, kept: str | None, make_app, smtp_server
) -> None:
    app = make_app(ALLOWED_ORIGINS="https://clinic.example", SERVICE_URL="https://localhost")
    client = app.test_client()
    response = post_form(client, page=sent)
    assert response.status_code == 303
    with app.extensions["store"].sessions() as session:
        assert session.query(Enquiry).one().page_url == kept
    api = client.post(
        "/api/enquiries", json={**VALID, "page": sent, "altcha": solve_captcha(client)}
    )
    assert api.status_code == 202
    assert deliver_all(app) == 2
    for mail in smtp_server.messages:
        assert "evil.example" not in mail.text and "patient=" not in mail.text
        assert f"Page:     {kept or 'not known'}" in mail.text


@pytest.mark.parametrize("service_url", ["https://forms.clinic.example", ""])
def test_the_host_header_does_not_make_a_page_the_services_own(make_app, service_url) -> None:
    app = make_app(SERVICE_URL=service_url)
    client = app.test_client()
    page = client.get(
        "/contact?page=https://attacker.example/phish", headers={"Host": "attacker.example"}
    ).get_data(as_text=True)
    assert "attacker.example/phish" not in page
    body = {**VALID, "page": "https://attacker.example/phish", "altcha": solve_captcha(client)}
    response = client.post("/api/enquiries", json=body, headers={"Host": "attacker.example"})
    assert response.status_code == 202
    with app.extensions["store"].sessions() as session:
        assert session.query(Enquiry).one().page_url is None


def test_no_cache_keeps_the_form_or_the_thank_you_page(client: FlaskClient) -> None:
    assert client.get("/contact").headers["Cache-Control"] == "no-store"
    assert post_form(client, email="bad").headers["Cache-Control"] == "no-store"
    thanked = post_form(client)
    assert thanked.status_code == 303
    assert client.get(thanked.headers["Location"]).headers["Cache-Control"] == "no-store"


def test_refresh_of_thanks_does_not_submit_again(app, client: FlaskClient) -> None:
    response = post_form(client)
    for _ in range(3):
        assert client.get(response.headers["Location"]).status_code == 200
    with app.extensions["store"].sessions() as session:
        assert session.query(Enquiry).count() == 1
