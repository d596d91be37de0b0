"""The enquiry form: one class validates the HTML page and the JSON API alike."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_wtf import FlaskForm
from wtforms import Field, HiddenField, StringField, TextAreaField
from wtforms.validators import ValidationError

from . import captcha, siteverify, validation
from .form_token import FormToken
from .validation import FieldError

FIELDS = ("name", "email", "phone", "message")


def _checked(check: Any, field: Field, *args: Any) -> Any:
    """Run a validation check, turning its FieldError into WTForms' ValidationError."""
    try:
        return check(field.data, *args)
    except FieldError as error:
        raise ValidationError(str(error)) from None


class CaptchaField(HiddenField):
    """The captcha's answer, posted under the configured provider's field name."""

    @property
    def provider(self) -> siteverify.Provider | None:
        """The third-party provider whose widget the page shows, or None for ALTCHA."""
        return siteverify.current()


class EnquiryForm(FlaskForm):
    """Name, email, phone, message and the captcha; cleaned values land in `cleaned`."""

    class Meta:
        # A signed token in the form instead of Flask-WTF's session cookie: see form_token.py.
        csrf_class = FormToken

        def bind_field(self, form: Any, unbound_field: Any, options: dict[str, Any]) -> Field:
            """Name the captcha field as the configured provider's widget posts it."""
            if options["name"] == "captcha":
                # The id names the widget's box, the target of the error summary's link: not the
                # field's name for third-party widgets, as reCAPTCHA gives its own textarea that.
                third_party = siteverify.current() is not None
                options = {
                    **options,
                    "name": captcha.field_name(),
                    "id": "captcha" if third_party else captcha.ALTCHA_FIELD,
                }
            return super().bind_field(form, unbound_field, options)

    name = StringField("Name")
    email = StringField("Email")
    phone = StringField("Phone number")
    message = TextAreaField("Message")
    captcha = CaptchaField("Captcha")
    page = HiddenField()
    # traps.HONEYPOT: hidden from people and assistive technology, so whoever fills it is a robot.
    extra_comments = StringField("Leave this field empty")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cleaned: dict[str, Any] = {}
        self.solution: captcha.Solution | None = None
        # The captcha's answer was genuine but already used: this may be a resend of an enquiry
        # that is stored (a double click, a refresh), which the visitor should be thanked for.
        self.answer_reused = False

    def validate_name(self, field: Field) -> None:
        """Require a plain, short name."""
        self.cleaned["name"] = _checked(validation.clean_name, field)

    def validate_email(self, field: Field) -> None:
        """Require a well-formed address and keep its normalised form."""
        self.cleaned["email"] = _checked(validation.clean_email, field)

    def validate_phone(self, field: Field) -> None:
        """Require a valid number and keep it in E.164."""
        region = current_app.config["PHONE_DEFAULT_REGION"]
        self.cleaned["phone"] = _checked(validation.clean_phone, field, region).e164

    def validate_message(self, field: Field) -> None:
        """Require a message of reasonable length."""
        self.cleaned["message"] = _checked(validation.clean_message, field)

    def validate_captcha(self, field: Field) -> None:
        """Require a captcha answer that verifies and has not been used before."""
        if (
            field.data
            and siteverify.current() is not None
            and any(self[name].errors for name in FIELDS)
        ):
            # A provider accepts a token once: keep it for the corrected form rather than spend
            # it on one that cannot be stored anyway.
            return
        try:
            solution = captcha.check(field.data)
        except captcha.AnswerReused:
            self.answer_reused = True
            solution = None
        if solution is None:
            raise ValidationError(validation.CAPTCHA_FAILED)
        self.solution = solution

    def validate_page(self, field: Field) -> None:
        """Keep the page the form was on, if it is a plain URL; never an error."""
        self.cleaned["page_url"] = validation.clean_page_url(field.data)
