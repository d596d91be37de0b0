"""Spam traps that cost people nothing: a field only robots fill, and a form sent too fast.

A trapped submission is answered exactly like a stored one, so a robot learns nothing. It is
held, not dropped (intake/accept.hold): a person whose autofill filled the honeypot, or who
was quick, is not lost; a person reviews the held ones, and the rest are erased on time.
"""

from __future__ import annotations

import time
from typing import Any

from flask import current_app

from . import form_token

# The honeypot's name contains nothing that browsers, password managers or autofill extensions
# recognise (name, email, tel, address, company, url, website, note ...), so none of them fills
# it in for a person; and no real client of the API has a reason to send it.
HONEYPOT = "extra_comments"
HONEYPOT_FILLED = "honeypot filled"
TOO_FAST = "sent too fast"


def honeypot(value: Any) -> str | None:
    """HONEYPOT_FILLED if the hidden field has anything in it, else None."""
    # From the API any JSON value counts, but an empty string or null: a client that sends
    # the key at all has no business putting something in it.
    filled = value.strip() != "" if isinstance(value, str) else value is not None
    return HONEYPOT_FILLED if filled else None


def too_fast(token: str | None) -> str | None:
    """TOO_FAST if the form came back sooner than FORM_MIN_FILL_SECONDS after it was shown."""
    minimum = current_app.config["FORM_MIN_FILL_SECONDS"]
    if minimum <= 0 or not token:
        return None
    # The form token is signed with the time it was made, the moment the form was shown, in
    # whole seconds: a form may pass up to a second sooner than the setting says.
    signed_at = form_token.issued_at(token)
    if signed_at is None:
        return None  # an invalid token is the form's own business (it answers 400)
    return TOO_FAST if time.time() - signed_at.timestamp() < minimum else None
