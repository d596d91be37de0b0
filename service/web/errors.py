"""Error handlers: JSON for API clients, a page for people; never a bare 500."""

from __future__ import annotations

import logging
import sqlite3

from flask import Flask, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

from ..intake import limits
from ..intake.form import EnquiryForm
from ..ops import metrics
from ..ops.logs import frames
from .pages import render_form

logger = logging.getLogger(__name__)

MESSAGES = {
    400: "The request could not be understood.",
    403: "This request is not allowed.",
    404: "There is nothing at this address.",
    405: "This address does not accept that method.",
    # An enquiry within the field limits fits in 64 KiB (5,000 characters of Chinese, percent-
    # encoded in a form post, are 45 KB), so only an over-long message can be the cause.
    413: (
        "What you sent is too large. Please shorten your message to 5,000 characters "
        "or fewer and try again."
    ),
    415: "This kind of request body is not accepted here.",
    500: (
        "Something went wrong on our side. Your message was not sent; "
        "please try again or call the clinic."
    ),
    503: (
        "We could not take your message just now. Your message was not sent; "
        "please try again in a minute or call the clinic."
    ),
}


def wants_json() -> bool:
    """True for API routes and clients that prefer JSON."""
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return (
        best == "application/json"
        and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]
    )


# An oversized body is read and thrown away up to this much before the 413 goes out.
DRAIN_AT_MOST = 10 * 1024 * 1024
DRAIN_CHUNK = 64 * 1024


def drain_body() -> None:
    """Read and discard what is left of the request body, up to DRAIN_AT_MOST."""
    # A server that answers and closes while the client is still sending resets the connection,
    # and the client never reads the answer: a browser shows a network error, not our text.
    environ = request.environ
    stream = environ.get("wsgi.input")
    length = request.content_length
    # Without a length, only a stream that ends by itself (gunicorn's) may be read to its end.
    if stream is None or (length is None and not environ.get("wsgi.input_terminated")):
        return
    left = DRAIN_AT_MOST if length is None else min(length, DRAIN_AT_MOST)
    try:
        while left > 0:
            chunk = stream.read(min(DRAIN_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
    except OSError:  # the client gave up: nothing to answer
        return


def handle_http_error(error: HTTPException) -> ResponseReturnValue:
    """Answer an HTTP error in the client's language, keeping its headers (405's Allow)."""
    code = error.code or 500
    if code == 413:
        drain_body()
    default = MESSAGES.get(code, error.name)
    message = error.description if error.description != type(error).description else default
    headers = {name: value for name, value in error.get_headers() if name != "Content-Type"}
    if wants_json():
        return {"error": message}, code, headers
    return render_template("error.html", title=error.name, message=message), code, headers


# The routes that take enquiries; the others (a captcha challenge) are not submissions.
SUBMITTING = frozenset({"pages.contact", "api.create_enquiry"})


def handle_rate_limited(error: limits.OverLimit) -> ResponseReturnValue:
    """Over the limit: say when to try again, keep the visitor's words, and count it."""
    seconds = error.wait_seconds
    text = limits.too_many_text(seconds, error.everyone)
    headers = {"Retry-After": str(seconds)}
    if request.endpoint in SUBMITTING:
        route = "api" if request.path.startswith("/api/") else "page"
        metrics.count_submission(route, "rate_limited")
    # A flood must not become a flood of log lines: the request's own line says
    # "rate_limited", and /metrics counts it.
    logger.debug("submission refused: rate limit %s reached on %s", error.description, request.path)
    if wants_json() or request.endpoint != "pages.contact":
        return {"error": text}, 429, headers
    return render_form(EnquiryForm(), notice=text), 429, headers


def handle_unexpected_error(error: Exception) -> ResponseReturnValue:
    """Log the failure by type only (its message may hold personal data) and answer 500."""
    logger.error("unhandled error on %s %s: %s", request.method, request.path, frames(error))
    return handle_http_error(InternalServerError())


def store_unavailable(error: Exception) -> bool:
    """True for a store that timed out, is locked or cannot be reached; not for a broken one."""
    original = getattr(error, "orig", error)
    if isinstance(original, sqlite3.OperationalError):
        # SQLite says "operational" for a missing column too: that is a bug, answered 500.
        return "locked" in str(original) or "busy" in str(original)
    # PostgreSQL's timeouts, cancelled statements and lost connections.
    return isinstance(error, (OperationalError, PoolTimeout))


def handle_store_unavailable(error: Exception) -> ResponseReturnValue:
    """The store timed out or cannot be reached: nothing was stored, so say so (503)."""
    if not store_unavailable(error):
        return handle_unexpected_error(error)
    # By type only: a database's own error quotes the statement's values.
    logger.error(
        "the enquiry store did not answer on %s %s (%s): a timeout (DATABASE_TIMEOUT) "
        "or the database is down",
        request.method,
        request.path,
        type(error).__name__,
    )
    return handle_http_error(ServiceUnavailable(retry_after=30))


def register_error_handlers(app: Flask) -> None:
    """Install the handlers."""
    app.register_error_handler(limits.OverLimit, handle_rate_limited)
    for unavailable in (OperationalError, PoolTimeout, sqlite3.OperationalError):
        app.register_error_handler(unavailable, handle_store_unavailable)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected_error)
