"""The form as a page: GET shows it, POST validates, stores and redirects to the thank-you page."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request, url_for

from .. import captcha, enquiries
from ..forms import EnquiryForm
from ..validation import CAPTCHA_FAILED, clean_page_url

bp = Blueprint("pages", __name__)


@bp.get("/contact")
def contact_form() -> str:
    """Show the empty form, remembering the page it is embedded in."""
    form = EnquiryForm()
    form.page.data = clean_page_url(request.args.get("page") or request.referrer)
    return render_template("contact.html", form=form)


@bp.post("/contact")
def contact() -> Response | tuple[str, int]:
    """Validate and store an enquiry, then redirect (303) so a refresh cannot send it twice."""
    form = EnquiryForm()
    if form.validate():
        try:
            enquiry = enquiries.accept(form.cleaned, form.solution)
        except enquiries.CaptchaReplayed:
            form.altcha.errors = [CAPTCHA_FAILED]
        else:
            current_app.extensions["outbox_notify"]()
            current_app.logger.info("enquiry %s accepted from the form page", enquiry.id)
            return redirect(url_for("pages.thanks"), code=303)
    return render_template("contact.html", form=form), 422


def expired_form() -> tuple[str, int]:
    """The form again after a failed CSRF check, with the visitor's words kept and a fresh token."""
    form = EnquiryForm()
    notice = "This form had expired. Please check your details and press Send again."
    return render_template("contact.html", form=form, notice=notice), 400


@bp.get("/contact/thanks")
def thanks() -> str:
    """The page a visitor sees once their enquiry is stored."""
    return render_template("thanks.html")


@bp.get("/altcha/challenge")
def altcha_challenge() -> Response:
    """A fresh captcha challenge for the widget; never cached."""
    response = jsonify(captcha.create_challenge())
    response.headers["Cache-Control"] = "no-store"
    return response
