"""Rate limits on the routes that accept enquiries: per client address and for all clients."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TypeVar, cast

from flask import Flask, Response, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

logger = logging.getLogger(__name__)
View = TypeVar("View", bound=Callable[..., object])

# The client's address as the WSGI server saw it, or as ProxyFix rewrote it for TRUSTED_PROXIES.
limiter = Limiter(key_func=get_remote_address)


def _per_client() -> str:
    return str(current_app.config["RATELIMIT_PER_CLIENT"])


def _all_clients() -> str:
    return str(current_app.config["RATELIMIT_GLOBAL"])


def _everyone() -> str:
    return "all-clients"


def _not_refused(response: Response) -> bool:
    return response.status_code != 429


def limit_submissions(view: View) -> View:
    """Apply both budgets to a view; the page and the API share them."""
    # The budget for all clients is only spent by requests that were not refused, so a flood
    # from one address, refused by its own limit, does not use up everybody else's.
    with_global = limiter.shared_limit(
        _all_clients, scope="submissions", key_func=_everyone, deduct_when=_not_refused
    )(view)
    return cast(
        View, limiter.shared_limit(_per_client, scope="submissions-per-client")(with_global)
    )


def retry_after_seconds() -> int:
    """Seconds until the breached limit lets this client through again (at least 1)."""
    current = limiter.current_limit
    if current is None:
        return 60
    return max(1, int(current.reset_at - time.time()))


def too_many_text(seconds: int) -> str:
    """The sentence a visitor over the limit reads."""
    minutes = max(1, math.ceil(seconds / 60))
    unit = "minute" if minutes == 1 else "minutes"
    return (
        "Too many messages from your connection; "
        f"please try again in {minutes} {unit} or call the clinic."
    )


def init_app(app: Flask) -> None:
    """Bind the limiter: headers on, and never an error or a refusal because Redis is down."""
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "contact-form")
    # If the shared store is unreachable, count in this process rather than refuse patients.
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    app.config.setdefault(
        "RATELIMIT_STORAGE_OPTIONS", {"socket_timeout": 2, "socket_connect_timeout": 2}
    )
    limiter.init_app(app)
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
