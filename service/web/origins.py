"""Which sites may embed the form and call the API: ALLOWED_ORIGINS, the Origin check and CORS."""

from __future__ import annotations

import functools
import logging
from urllib.parse import urlsplit

from flask import Flask, Response, abort, current_app, request
from flask.globals import request_ctx

from config import ConfigurationError

from ..ops import metrics
from ..ops.logs import refused_because

logger = logging.getLogger(__name__)

FOREIGN_ORIGIN = (
    "This form can only be sent from the clinic's own website. "
    "Please use the form on the clinic's site, or call the clinic."
)
# Why, in the request's log line (the path is in the line already).
FOREIGN_ORIGIN_REFUSED = "refused a submission from a foreign origin"
DEFAULT_PORTS = {"http": 80, "https": 443}
# Routes a site with its own markup calls from the browser: the API and the widget's challenge.
CORS_ENDPOINTS = {"api.create_enquiry", "pages.altcha_challenge", "openapi.document"}
# Routes that accept a visitor's enquiry: a POST to them must come from us or an allowed site.
SUBMIT_ENDPOINTS = {"pages.contact", "api.create_enquiry"}


# A browser sends the same few origins again and again, and each request reads its own twice (the
# Origin check and CORS): parsed once, not twice per request (a bounded cache, so a client
# that sends a new Origin every time only pushes old ones out).
@functools.lru_cache(maxsize=256)
def normalise(origin: str) -> str | None:
    """`scheme://host[:port]` in lower case without a default port, or None if it is not one."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.path not in {"", "/"} or parts.query or parts.fragment or parts.username:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


def parse(raw: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Read ALLOWED_ORIGINS (comma-separated or a list); a malformed entry stops start-up."""
    items = raw.split(",") if isinstance(raw, str) else list(raw or ())
    origins: list[str] = []
    for item in (item.strip() for item in items):
        if not item:
            continue
        origin = normalise(item)
        if origin is None:
            raise ConfigurationError(
                f"ALLOWED_ORIGINS: {item!r} is not an origin; "
                "write it as https://www.clinic.example "
                "(scheme and host, a port if not the default, no path)."
            )
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)


def allowed() -> tuple[str, ...]:
    """The sites that may embed the form and call the API, besides the service itself."""
    allowed_origins: tuple[str, ...] = current_app.config["ALLOWED_ORIGINS"]
    return allowed_origins


def _host_key(host: str) -> str:
    # Compare hosts without default ports: behind a TLS proxy the app may see http while the
    # browser says https, and the Host header carries the port only when it is not the default.
    host = host.lower()
    for port in (":80", ":443"):
        if host.endswith(port):
            return host[: -len(port)]
    return host


def is_own(origin: str) -> bool:
    """True if `origin` is the service's own address (the host the browser asked for)."""
    return _host_key(urlsplit(origin).netloc) == _host_key(request.host)


def is_trusted(origin: str) -> bool:
    """True for the service itself and the allowed origins."""
    normalised = normalise(origin)
    return normalised is not None and (normalised in allowed() or is_own(normalised))


def service_origin() -> str | None:
    """The service's own origin, from SERVICE_URL: never from the request, whose Host the client
    writes."""
    return normalise(current_app.config["SERVICE_URL"] or "")


def page_url(value: str | None) -> str | None:
    """The page an enquiry was sent from, if it is SERVICE_URL's or an allowed site's, without
    its query string and fragment; None otherwise, which the email shows as "not known"."""
    # A link under "Page" in the clinic's email must not lead anywhere a stranger chose, and a
    # host page's query string (a search, a tracking id, a patient's own details) stays out.
    if not value:
        return None
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    origin = normalise(f"{parts.scheme}://{parts.netloc}")
    if origin is None or parts.username or parts.password:
        return None
    if origin != service_origin() and origin not in allowed():
        return None
    return f"{origin}{parts.path or '/'}"


def refuse_foreign_posts() -> None:
    """Refuse (403) a submission whose Origin header names a site that is not allowed."""
    served = request_ctx.request
    if served.method != "POST" or served.endpoint not in SUBMIT_ENDPOINTS:
        return
    origin = served.headers.get("Origin")
    # No Origin header: not a browser, or an old one; the captcha and the token still apply.
    if origin is None or is_trusted(origin):
        return
    # A warning, so that an operator who logs only those still learns of a clinic site missing
    # from ALLOWED_ORIGINS; in the request's own line, so that a flood writes one line a post.
    refused_because(logger, FOREIGN_ORIGIN_REFUSED, logging.WARNING)
    metrics.count_submission("api" if served.blueprint == "api" else "page", "foreign_origin")
    abort(403, description=FOREIGN_ORIGIN)


def add_cors_headers(response: Response) -> Response:
    """Let the allowed sites call the API and fetch challenges from their own pages."""
    served = request_ctx.request
    if served.endpoint not in CORS_ENDPOINTS:
        return response
    response.vary.add("Origin")
    origin = served.headers.get("Origin")
    normalised = normalise(origin) if origin else None
    if normalised is None or normalised not in allowed():
        return response
    response.headers["Access-Control-Allow-Origin"] = origin
    if served.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = "GET, POST"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, Idempotency-Key"
        response.headers["Access-Control-Max-Age"] = "600"
    return response


def frame_ancestors(allowed_origins: tuple[str, ...]) -> str:
    """The CSP directive that lets only the service and the allowed origins frame its pages."""
    return " ".join(["frame-ancestors", "'self'", *allowed_origins])


def init_app(app: Flask) -> None:
    """Install the Origin check and the CORS headers (ALLOWED_ORIGINS is parsed with the config)."""
    app.before_request(refuse_foreign_posts)
    app.after_request(add_cors_headers)
