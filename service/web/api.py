"""The JSON API for sites that render their own form."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, request

from ..intake import accept, captcha, traps
from ..intake.limits import limit_submissions
from . import origins

bp = Blueprint("api", __name__, url_prefix="/api")

ACCEPTED_KEYS = ("name", "email", "phone", "message", "altcha", "page")
BAD_IDEMPOTENCY_KEY = "The Idempotency-Key header must be 1 to 200 printable ASCII characters."
NOT_AN_OBJECT = (
    "The request body must be a JSON object with the fields name, email, phone, message and altcha."
)


def _as_text(value: Any) -> str:
    # Numbers are fine (a phone number sent as 0412345678); lists, objects and null count as
    # missing.
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return ""


@bp.post("/enquiries")
@limit_submissions
def create_enquiry() -> tuple[dict[str, Any], int]:
    """Validate and store an enquiry sent as JSON; 202 once it is safely queued."""
    if not request.is_json:
        abort(415, description="Send the enquiry as JSON, with Content-Type: application/json.")
    data = request.get_json(silent=True)
    field_name = captcha.field_name()
    if not isinstance(data, dict):
        # The text names ALTCHA's field; another provider's widget posts its own.
        abort(400, description=NOT_AN_OBJECT.replace("altcha", field_name))
    posted: dict[str, str | None] = {
        key: _as_text(data[key]) for key in ACCEPTED_KEYS if key in data
    }
    posted["page"] = origins.page_url(posted.get("page") or request.referrer)
    token = request.headers.get("Idempotency-Key")
    if token is not None and not (
        0 < len(token) <= 200 and token.isascii() and token.isprintable()
    ):
        abort(400, description=BAD_IDEMPOTENCY_KEY)
    # The API renders no form, so there is no time since it was shown: only the honeypot applies.
    trap = traps.honeypot(data.get(traps.HONEYPOT))
    if trap is not None:
        return {"id": accept.hold(posted, trap, "api"), "status": "queued"}, 202
    answer = _as_text(data[field_name]) if field_name in data else None
    outcome = accept.submit(posted, answer, accept.idempotency_key("api", token, posted), "api")
    if outcome.enquiry_id is not None:
        return {"id": outcome.enquiry_id, "status": "queued"}, 202
    # Keyed by the name each field is posted under: the captcha's is its provider's.
    errors = {
        field_name if name == "captcha" else name: [text] for name, text in outcome.errors.items()
    }
    return {"errors": errors}, 422
