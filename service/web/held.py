"""The page behind a digest's link: shows a held message's time and trap, and releases it on a
press of its button (a POST), so that a mail scanner following the link releases nothing."""

from __future__ import annotations

import logging

from flask import Blueprint, render_template
from werkzeug.wrappers import Response

from ..delivery import held_links
from ..store import audit, lifecycle, queries

bp = Blueprint("held", __name__)
logger = logging.getLogger(__name__)

GONE = (
    "This link no longer works: the message was delivered already, or erased, or the link is "
    "not complete. Nothing was changed."
)


@bp.after_request
def never_stored(response: Response) -> Response:
    """The page's link is a capability: no cache keeps it."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/held/<token>")
def show(token: str) -> tuple[str, int]:
    """What is known of the held message (time and trap only), and the button that delivers it."""
    enquiry_id = held_links.read(token)
    enquiry = queries.get(enquiry_id) if enquiry_id else None
    if enquiry is None or enquiry.status != lifecycle.HELD:
        return render_template("held.html", gone=GONE), 404
    return render_template("held.html", enquiry=enquiry, token=token), 200


@bp.post("/held/<token>")
def release(token: str) -> tuple[str, int]:
    """Deliver the held message, once."""
    enquiry_id = held_links.read(token)
    if enquiry_id is None or lifecycle.release_held([enquiry_id]) != 1:
        return render_template("held.html", gone=GONE), 404
    audit.record(audit.DIGEST_LINK, "release", [enquiry_id])
    logger.info("held enquiry %s released from the digest's link", enquiry_id)
    return render_template("held.html", released=True), 200
