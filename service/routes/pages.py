"""The form as a page: GET shows it, POST validates, stores and redirects to the thank-you page."""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from .. import captcha, enquiries, form_token, traps
from ..forms import EnquiryForm
from ..limits import limit_submissions
from ..validation import clean_page_url

bp = Blueprint("pages", __name__)


@bp.get("/contact")
def contact_form() -> str:
    """Show the empty form, remembering the page it is embedded in."""
    form = EnquiryForm()
    form.page.data = clean_page_url(request.args.get("page") or request.referrer)
    return render_template("contact.html", form=form)


@bp.post("/contact")
@limit_submissions
def contact() -> Response | tuple[str, int]:
    """Validate and store an enquiry, then redirect (303) so a refresh cannot send it twice."""
    form = EnquiryForm()
    token = form_token.read(form.csrf_token.data)
    if token is None:
        # A stale or missing token: show the form again with the visitor's words and a new token.
        current_app.logger.info("CSRF check failed: the form's token is missing, forged or expired")
        return render_template("contact.html", form=form, notice=form_token.EXPIRED), 400
    trap = traps.honeypot(form.extra_comments.data) or traps.too_fast(form.csrf_token.data)
    if trap is not None:
        traps.spring("page", trap)
        return redirect(url_for("pages.thanks"), code=303)
    key = enquiries.idempotency_key("form", token, form)
    if enquiries.submit(form, key, "page") is not None:
        return redirect(url_for("pages.thanks"), code=303)
    return render_template("contact.html", form=form), 422


@bp.get("/contact/thanks")
def thanks() -> str:
    """The page a visitor sees once their enquiry is stored."""
    return render_template("thanks.html")


@bp.get("/altcha/challenge")
def altcha_challenge() -> Response:
    """A fresh captcha challenge for the widget; never cached."""
    if current_app.config["CAPTCHA_PROVIDER"] != "altcha":
        abort(404)
    response = jsonify(captcha.create_challenge())
    response.headers["Cache-Control"] = "no-store"
    return response
