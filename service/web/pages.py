"""The form as a page: GET shows it, POST validates, stores and redirects to the thank-you page."""

from __future__ import annotations

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    url_for,
)
from flask.globals import request_ctx
from werkzeug.wrappers import Response as BaseResponse

from ..intake import accept, form_token, traps
from ..intake.captcha import altcha_proof
from ..intake.form import EnquiryForm
from ..intake.limits import limit_challenges, limit_submissions
from ..intake.validation import clean_page_url
from . import origins
from .empty_form import EmptyFormPage
from .security import csp_nonce

bp = Blueprint("pages", __name__)


def init_app(app: Flask) -> None:
    """Mount the page's routes, with the empty form rendered once for this process."""
    app.extensions["empty_form_page"] = EmptyFormPage()
    app.register_blueprint(bp)


@bp.after_request
def never_stored(response: BaseResponse) -> BaseResponse:
    """Let no cache keep a page: each carries a one-time form token and a script nonce."""
    response.headers["Cache-Control"] = "no-store"
    return response


def render_form(
    form: EnquiryForm, errors: dict[str, str] | None = None, notice: str | None = None
) -> str:
    """The form page with the visitor's words, the errors by field, and a notice on top."""
    token = form.csrf_token.current_token
    return render_template("contact.html", form=form, token=token, errors=errors, notice=notice)


@bp.get("/contact")
def contact_form() -> str:
    """Show the empty form, remembering the page it is embedded in."""
    served = request_ctx.request
    # Most pages load the form with no query string: then there is none to parse, and no
    # KeyError for Werkzeug to raise and catch inside .get().
    asked = served.args.get("page") if served.query_string else None
    page = clean_page_url(origins.page_url(asked or served.referrer)) or ""
    empty: EmptyFormPage = current_app.extensions["empty_form_page"]
    return empty.render(form_token.issue(), csp_nonce(), page)


@bp.post("/contact")
@limit_submissions
def contact() -> BaseResponse | tuple[str, int]:
    """Validate and store an enquiry, then redirect (303) so a refresh cannot send it twice."""
    form = EnquiryForm()
    token = form_token.read(form.csrf_token.data)
    if token is None:
        # A stale or missing token: show the form again with the visitor's words and a new token.
        current_app.logger.info("CSRF check failed: the form's token is missing, forged or expired")
        return render_form(form, notice=form_token.EXPIRED), 400
    posted = form.posted()
    posted["page"] = origins.page_url(posted.get("page"))
    trap = traps.honeypot(form.extra_comments.data) or traps.too_fast(form.csrf_token.data)
    if trap is not None:
        accept.hold(posted, trap, "page")
        return redirect(url_for("pages.thanks"), code=303)
    key = accept.idempotency_key("form", token, posted)
    outcome = accept.submit(posted, form.captcha.data, key, "page")
    if outcome.enquiry_id is not None:
        return redirect(url_for("pages.thanks"), code=303)
    return render_form(form, outcome.errors), 422


@bp.get("/contact/thanks")
def thanks() -> str:
    """The page a visitor sees once their enquiry is stored."""
    return render_template("thanks.html")


@bp.get("/altcha/challenge")
@limit_challenges
def altcha_challenge() -> Response:
    """A fresh captcha challenge for the widget; never cached."""
    if current_app.config["CAPTCHA_PROVIDER"] != "altcha":
        abort(404)
    return jsonify(altcha_proof.create_challenge())
