"""The JSON API for sites that render their own form."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, request
from werkzeug.datastructures import MultiDict

from .. import enquiries
from ..forms import EnquiryForm
from ..limits import limit_submissions

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
def create_enquiry() -> tuple[dict, int]:
    """Validate and store an enquiry sent as JSON; 202 once it is safely queued."""
    if not request.is_json:
        abort(415, description="Send the enquiry as JSON, with Content-Type: application/json.")
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        abort(400, description=NOT_AN_OBJECT)
    formdata = MultiDict({key: _as_text(data[key]) for key in ACCEPTED_KEYS if key in data})
    if "page" not in formdata and request.referrer:
        formdata["page"] = request.referrer
    form = EnquiryForm(formdata=formdata, meta={"csrf": False})
    token = request.headers.get("Idempotency-Key")
    if token is not None and not (
        0 < len(token) <= 200 and token.isascii() and token.isprintable()
    ):
        abort(400, description=BAD_IDEMPOTENCY_KEY)
    enquiry = enquiries.submit(form, enquiries.idempotency_key("api", token, form), "the API")
    if enquiry is not None:
        return {"id": enquiry.id, "status": "queued"}, 202
    errors = {name: list(field.errors) for name, field in form._fields.items() if field.errors}
    return {"errors": errors}, 422
