"""The pre-rendered empty form: what a plain render would give, rendered once per process."""

from __future__ import annotations

from flask import Flask, g, render_template

from service.intake.form import EnquiryForm
from service.web.empty_form import EmptyFormPage

TOKEN = "a-signed-token"
NONCE = "a-nonce"
PAGE = 'https://www.clinic.example/back-pain?a=1&b="2"'


def plain_render(page: str) -> str:
    """The empty form rendered from the template, as each request did before the cache."""
    g.csp_nonce = NONCE
    form = EnquiryForm(formdata=None, data={"page": page})
    return render_template("contact.html", form=form, token=TOKEN)


def test_the_cached_form_is_byte_for_byte_a_plain_render(app: Flask) -> None:
    with app.test_request_context("/contact"):
        cached = EmptyFormPage().render(TOKEN, NONCE, PAGE)
        assert cached == plain_render(PAGE)
    assert "&amp;b=&#34;2&#34;" in cached, "the page address is escaped like any value"


def test_the_form_is_rendered_once_and_filled_in_per_visitor(app: Flask) -> None:
    empty = EmptyFormPage()
    with app.test_request_context("/contact"):
        first = empty.render("token-one", "nonce-one", "")
        rendered = empty.rendered
        second = empty.render("token-two", "nonce-two", PAGE)
    assert empty.rendered is rendered
    assert "token-one" in first and "token-two" not in first
    assert "token-two" in second and 'content="nonce-two"' in second
    assert "\x00" not in first + second
