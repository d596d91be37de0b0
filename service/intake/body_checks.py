"""Refuse request bodies that are not UTF-8 before any field is read, rather than guess."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from flask import Flask, abort
from flask.globals import request_ctx

FORM_NOT_UTF8 = (
    "The form could not be read: it contains characters that are not valid UTF-8. "
    "Please check what you typed, or paste it again as plain text, and send it again."
)
FORM_HAS_FILE = (
    "The form could not be read: it contains a file, and this form takes text only. "
    "Please send your message again without an attachment."
)
JSON_NOT_UTF8 = (
    "The request body must be a JSON object encoded as UTF-8; "
    "it contains bytes that are not valid UTF-8."
)
JSON_TOO_DEEP = (
    "The request body is nested too deeply to read; "
    "send one JSON object with the enquiry's fields as text."
)

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _form_is_utf8(body: bytes) -> bool:
    # Werkzeug leaves an undecodable %FF in the value as the text "%FF", and a browser would
    # never send one: check each name and value after percent-decoding, as the form parser will.
    for pair in body.split(b"&"):
        if not _is_utf8(unquote_to_bytes(pair.replace(b"+", b" "))):
            return False
    return True


def check_body() -> None:
    """Answer 400 for a form or JSON body that is not UTF-8, or JSON too deep to parse."""
    served = request_ctx.request
    mimetype = served.mimetype
    if mimetype == FORM:
        if not _form_is_utf8(served.get_data()):
            abort(400, description=FORM_NOT_UTF8)
    elif mimetype == MULTIPART:
        # The form has no file fields, so every part is text: the whole body must be UTF-8
        # (Werkzeug would silently replace what is not).
        if not _is_utf8(served.get_data()):
            abort(400, description=FORM_NOT_UTF8)
        # Every field is text: a file part in place of one (name, say) is refused, not read.
        if served.files:
            abort(400, description=FORM_HAS_FILE)
    elif served.is_json:
        data = served.get_data()
        # A NUL byte is valid UTF-8 but never part of UTF-8 JSON: it is UTF-16 or UTF-32 without
        # a byte-order mark, which Python's json module would otherwise quietly accept.
        if not _is_utf8(data) or b"\0" in data:
            abort(400, description=JSON_NOT_UTF8)
        try:
            # Parsed once here; the view reads the cached result.
            served.get_json(silent=True)
        except RecursionError:
            abort(400, description=JSON_TOO_DEEP)


def init_app(app: Flask) -> None:
    """Check every request's body before the views read it."""
    app.before_request(check_body)
