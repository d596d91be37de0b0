"""Security headers on every response: a Content-Security-Policy with a nonce, and the rest."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from flask import Flask, Response, current_app, g
from flask.globals import request_ctx

from ..intake.captcha import third_party
from ..ops import random_tokens
from . import origins


def csp_nonce() -> str:
    """This response's nonce for inline scripts and styles (the ALTCHA widget reads it too)."""
    state = vars(g)
    nonce: str | None = state.get("csp_nonce")
    if nonce is None:
        nonce = state["csp_nonce"] = random_tokens.token_urlsafe(16)
    return nonce


@contextlib.contextmanager
def nonce_stand_in(stand_in: str) -> Iterator[None]:
    """Render with `stand_in` as the nonce (the pre-rendered form); the response gets its own."""
    own = g.pop("csp_nonce", None)
    g.csp_nonce = stand_in
    try:
        yield
    finally:
        g.pop("csp_nonce")
        if own is not None:
            g.csp_nonce = own


# Where the response's nonce goes in the policy, which is otherwise the same for every response.
_NONCE_SLOT = "\x00nonce\x00"


class ContentSecurityPolicy:
    """The app's policy, built once from its settings; each response adds its nonce."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.policy = _policy(config)

    def with_nonce(self, nonce: str) -> str:
        """The policy for a response whose inline scripts and styles carry `nonce`."""
        return self.policy.replace(_NONCE_SLOT, nonce)


def content_security_policy() -> str:
    """This response's policy: the app's, with its nonce."""
    policy: ContentSecurityPolicy = current_app.extensions["csp"]
    return policy.with_nonce(csp_nonce())


def _policy(config: Mapping[str, Any]) -> str:
    """The policy: our own scripts and styles, nonced inline ones, frames only by allowed sites."""
    nonce = f"'nonce-{_NONCE_SLOT}'"
    theme = config["THEME_STYLESHEET_ORIGIN"]
    provider = third_party.PROVIDERS.get(config["CAPTCHA_PROVIDER"])
    # A third-party captcha's widget needs its provider's sources; ALTCHA's lives here.
    extra = provider.csp if provider else {}

    def sources(directive: str, *ours: str | None) -> str:
        return " ".join([directive, *filter(None, ours), *extra.get(directive, ())])

    frames = [sources("frame-src", "'self'")] if "frame-src" in extra else []
    return "; ".join(
        [
            "default-src 'self'",
            sources("script-src", "'self'", nonce),
            *frames,
            sources("style-src", "'self'", nonce, theme),
            sources("font-src", "'self'", theme),
            "img-src 'self' data:",
            # The ALTCHA widget solves its proof of work in workers it starts from blob: URLs.
            "worker-src 'self' blob:" if provider is None else "worker-src 'self'",
            sources("connect-src", "'self'"),
            "form-action 'self'",
            "base-uri 'none'",
            "object-src 'none'",
            origins.frame_ancestors(config["ALLOWED_ORIGINS"]),
        ]
    )


def add_security_headers(response: Response) -> Response:
    """Set the CSP, nosniff, the referrer policy, and HSTS when served over HTTPS."""
    headers = response.headers
    headers["Content-Security-Policy"] = content_security_policy()
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
    if request_ctx.request.is_secure:
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return response


def init_app(app: Flask) -> None:
    """Install the headers, offer `csp_nonce()` to templates, and warn of an open captcha."""
    app.extensions["csp"] = ContentSecurityPolicy(app.config)
    app.after_request(add_security_headers)
    app.jinja_env.globals["csp_nonce"] = csp_nonce
    # Here rather than with the configuration checks: the log is set up by now.
    third_party.warn_about_weak_settings(app.config)
