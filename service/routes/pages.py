"""The form as a page: GET shows it, POST validates, stores and redirects to the thank-you page."""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from markupsafe import escape

from .. import captcha, enquiries, form_token, traps
from ..forms import EnquiryForm
from ..limits import limit_submissions
from ..security import csp_nonce
from ..validation import clean_page_url

bp = Blueprint("pages", __name__)


# Stand-ins for the three things that differ between two empty forms: no output contains NUL.
TOKEN, NONCE, PAGE = "\x00token\x00", "\x00nonce\x00", "\x00page\x00"


@bp.get("/contact")
def contact_form() -> str:
    """Show the empty form, remembering the page it is embedded in."""
    page = clean_page_url(request.args.get("page") or request.referrer) or ""
    return (
        empty_form_page()
        .replace(TOKEN, form_token.issue())
        .replace(NONCE, csp_nonce())
        .replace(PAGE, str(escape(page)))
    )


def empty_form_page() -> str:
    """The empty form rendered once per process with stand-ins; every visitor's first view."""
    cached = current_app.extensions.get("empty_form_page")
    if cached is not None and not current_app.jinja_env.auto_reload:
        return cached
    g.csp_nonce = NONCE
    form = EnquiryForm(formdata=None)
    form.csrf_token.current_token = TOKEN
    form.page.data = PAGE
    cached = render_template("contact.html", form=form)
    del g.csp_nonce  # the response gets a real one
    current_app.extensions["empty_form_page"] = cached
    return cached


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
