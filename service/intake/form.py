"""The enquiry form as the page shows and posts it: its fields, their names, and its token."""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import Field, HiddenField, StringField, TextAreaField

from .captcha import altcha_proof, field_name, third_party
from .form_token import FormToken
from .validation import FIELDS


class CaptchaField(HiddenField):
    """The captcha's answer, posted under the configured provider's field name."""

    @property
    def provider(self) -> third_party.Provider | None:
        """The third-party provider whose widget the page shows, or None for ALTCHA."""
        return third_party.current()


class EnquiryForm(FlaskForm):  # type: ignore[misc]  # Flask-WTF ships no types
    """Name, email, phone, message and the captcha; validation.check_fields checks them."""

    class Meta:
        # A signed token in the form instead of Flask-WTF's session cookie: see form_token.py.
        csrf_class = FormToken

        def bind_field(self, form: Any, unbound_field: Any, options: dict[str, Any]) -> Field:
            """Name the captcha field as the configured provider's widget posts it."""
            if options["name"] == "captcha":
                # The id names the widget's box, the target of the error summary's link: not the
                # field's name for third-party widgets, as reCAPTCHA gives its own textarea that.
                third = third_party.current() is not None
                options = {
                    **options,
                    "name": field_name(),
                    "id": "captcha" if third else altcha_proof.FIELD,
                }
            # WTForms makes this Meta a subclass of FlaskForm's when it builds the form class.
            field: Field = super().bind_field(form, unbound_field, options)  # type: ignore[misc]
            return field

    name = StringField("Name")
    email = StringField("Email")
    phone = StringField("Phone number")
    message = TextAreaField("Message")
    captcha = CaptchaField("Captcha")
    page = HiddenField()
    # traps.HONEYPOT: hidden from people and assistive technology, so whoever fills it is a robot.
    extra_comments = StringField("Leave this field empty")

    def posted(self) -> dict[str, str | None]:
        """The enquiry's fields and page as the visitor sent them."""
        return {name: self[name].data for name in (*FIELDS, "page")}
