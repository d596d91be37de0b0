"""Rate limits on the routes that accept enquiries: per client address and for all clients."""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable
from typing import TypeVar, cast

from flask import Flask, Response, current_app, g
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from . import limit_storage

logger = logging.getLogger(__name__)
View = TypeVar("View", bound=Callable[..., object])

EVERYONE = "all-clients"
# The outcomes that store an enquiry: only these spend the budget for all clients, so that
# junk, however much of it, cannot close the form for patients.
STORED = frozenset({"accepted", "held"})


def client_key() -> str:
    """The client as the limits count it: its IPv4 address, or its IPv6 /64 network."""
    # The address as the WSGI server saw it, or as ProxyFix rewrote it for TRUSTED_PROXIES.
    address = get_remote_address()
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        # One subscriber gets a /64 and can rotate through it at will.
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


limiter = Limiter(key_func=client_key)


def _per_client() -> str:
    return str(current_app.config["RATELIMIT_PER_CLIENT"])


def _all_clients() -> str:
    return str(current_app.config["RATELIMIT_GLOBAL"])


def _everyone() -> str:
    return EVERYONE


def _stored(response: Response) -> bool:
    return g.get("outcome") in STORED


def limit_submissions(view: View) -> View:
    """Apply both budgets to a view; the page and the API share them."""
    # The budget for all clients is only spent by enquiries that were stored (accepted or
    # held): a flood of junk or of refused posts does not use up everybody else's.
    with_global = limiter.shared_limit(
        _all_clients, scope="submissions", key_func=_everyone, deduct_when=_stored
    )(view)
    return cast(
        View, limiter.shared_limit(_per_client, scope="submissions-per-client")(with_global)
    )


def _per_client_challenges() -> str:
    return str(current_app.config["RATELIMIT_CHALLENGE"])


def limit_challenges(view: View) -> View:
    """Apply the per-client budget for captcha challenges to a view."""
    return cast(View, limiter.limit(_per_client_challenges, scope="challenges")(view))


def retry_after_seconds() -> int:
    """Seconds until the breached limit lets this client through again (at least 1)."""
    current = limiter.current_limit
    if current is None:
        return 60
    return max(1, int(current.reset_at - time.time()))


def everyone_limited() -> bool:
    """True when the budget for all clients is the one spent, not this client's own."""
    current = limiter.current_limit
    return current is not None and current.breached and EVERYONE in current.request_args


def too_many_text(seconds: int, everyone: bool = False) -> str:
    """The sentence a visitor over the limit (theirs, or everyone's) reads."""
    minutes = max(1, math.ceil(seconds / 60))
    unit = "minute" if minutes == 1 else "minutes"
    if everyone:
        return (
            "The form is receiving an unusual number of messages right now. "
            f"Please try again in {minutes} {unit} or call the clinic."
        )
    return (
        "Too many messages from your connection; "
        f"please try again in {minutes} {unit} or call the clinic."
    )


def init_app(app: Flask) -> None:
    """Bind the limiter: no budget headers, and no error or refusal because Redis is down."""
    # Only a refusal says when to try again (Retry-After, set by the 429's handler). Flask-Limiter's
    # X-RateLimit-* headers on every answer would tell a robot how much budget it has left, put
    # "Retry-After: 0" on a 422, and cost a refusal a twentieth of its time.
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "contact-form")
    # If the shared store is unreachable, count in this process rather than refuse patients.
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    app.config.setdefault(
        "RATELIMIT_STORAGE_OPTIONS", {"socket_timeout": 2, "socket_connect_timeout": 2}
    )
    # "memory://" names limit_storage's swept storage, registered when that module is imported.
    limiter.init_app(app)
    limit_storage.use_for_fallback(limiter, app.config.get("RATELIMIT_STRATEGY", "fixed-window"))
    drop_check_before_every_request(app, limiter)


def drop_check_before_every_request(app: Flask, extension: Limiter) -> None:
    """Remove the limiter's pass before every request; the limited views check for themselves."""
    # Only the submission routes have limits, and their decorators check them. Flask-Limiter's
    # own pass before every request looks for application-wide and default limits, of which
    # there are none: it would only cost every page and asset a fifth of its time.
    # An adapter, checked against Flask-Limiter 4.1.1, which has no switch for this: its
    # init_app registers that pass as a method of the Limiter with app.before_request.
    # tests/test_rate_limits.py fails if a new version registers it otherwise.
    hooks = app.before_request_funcs.get(None, [])
    app.before_request_funcs[None] = [
        hook for hook in hooks if getattr(hook, "__self__", None) is not extension
    ]
