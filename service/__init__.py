"""A self-hosted contact-form service: the "Drop us a Line" form, stored and mailed to a clinic."""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from config import ConfigurationError, config_class, read_environment

from . import commands, delivery
from .intake import body_checks, captcha, form_token, limits, refused_fields
from .intake.captcha import refused, replay
from .ops import logs, metrics
from .store import sealing
from .store.engine import store
from .web import api, embed, errors, health, held, openapi, origins, pages, security, theme
from .web.sessions import NoSessions

# SMTP connections one `flask outbox work` process may send over at once (OUTBOX_CONNECTIONS).
CONNECTIONS_RANGE = range(1, 9)


class ServiceFlask(Flask):
    """Flask, asking once per hook and view, not on every request, whether it is a coroutine."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plain_functions: set[Callable[..., Any]] = set()

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """The function itself if it is plain, else Flask's wrapper that runs it to completion."""
        # Flask asks inspect about each of a request's ten hooks and its view every time: a
        # thirtieth of the form page's time, for an answer that never changes.
        if func in self._plain_functions:
            return func
        wrapped = super().ensure_sync(func)
        if wrapped is func:
            self._plain_functions.add(func)
        return wrapped


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: configuration, logs, the stages of an enquiry's path, the commands."""
    app = ServiceFlask(
        __name__,
        instance_relative_config=True,
        template_folder="web/templates",
        static_folder="web/static",
    )
    app.session_interface = NoSessions()
    load_config(app, test_config)
    logs.configure_logging(app)
    register_store(app)
    # Hooks run in the order they are registered: a request meets the web's checks (its
    # Origin) before intake's (its body), as an enquiry travels.
    register_web(app)
    register_intake(app)
    register_ops(app)
    register_delivery(app)
    commands.init_app(app)
    return app


def load_config(app: Flask, test_config: dict[str, Any] | None) -> None:
    """Load the class named by SERVICE_ENV, then the environment, then the test's overrides."""
    chosen = config_class()
    app.config.from_object(chosen)
    app.config.update(read_environment(os.environ))
    if test_config:
        app.config.update(test_config)
    if not app.config.get("SECRET_KEY") and chosen.__name__ == "DevelopmentConfig":
        app.config["SECRET_KEY"] = _development_secret(app)
    chosen.check(app.config)
    if not app.config.get("SECRET_KEY"):
        raise ConfigurationError("SECRET_KEY is not set: set the SECRET_KEY environment variable.")
    if app.config["DELIVERY_WORKER"] not in {"embedded", "external"}:
        raise ConfigurationError("DELIVERY_WORKER must be 'embedded' or 'external'.")
    for name in ("OUTBOX_LEASE_SECONDS", "OUTBOX_HEARTBEAT_SECONDS", "DATABASE_TIMEOUT"):
        if not app.config[name] > 0:
            raise ConfigurationError(f"{name} must be a number of seconds above 0.")
    for name in ("HELD_RETENTION_DAYS", "HELD_MAX", "FAILED_RETENTION_DAYS", "RETENTION_DAYS"):
        if not app.config[name] > 0:
            raise ConfigurationError(f"{name} must be a whole number above 0.")
    if app.config["OUTBOX_CONNECTIONS"] not in CONNECTIONS_RANGE:
        # Each connection holds one of the store's pooled connections for its batch (5, and
        # 10 more at a pinch), and the heartbeat and the commands need theirs too.
        raise ConfigurationError(
            "OUTBOX_CONNECTIONS must be a whole number from 1 to 8: the SMTP connections one "
            "`flask outbox work` process sends over at once."
        )
    if app.config["NOTIFY_CONTENT"] not in {"full", "minimal"}:
        raise ConfigurationError("NOTIFY_CONTENT must be 'full' or 'minimal'.")
    check_autoresponder(app.config)
    captcha.check_config(app.config)
    check_timezone(app.config["CLINIC_TIMEZONE"])
    app.config["ALLOWED_ORIGINS"] = origins.parse(app.config["ALLOWED_ORIGINS"])
    theme.check(app.config)
    app.extensions["seal_keys"] = _seal_keys(app, chosen.__name__)


def _seal_keys(app: Flask, environment: str) -> sealing.Keys:
    """The keys this process seals to and opens with; none if sealing is off."""
    config = app.config
    if not config["SEAL_AT_REST"]:
        return sealing.Keys()
    if not config["SEAL_PUBLIC_KEY"]:
        if environment == "ProductionConfig":
            raise ConfigurationError(
                "SEAL_PUBLIC_KEY is not set: patients' enquiries are stored sealed to it, so that "
                "the store, its backups and a dump of it cannot be read without the private key. "
                "Run `flask --app wsgi keys generate`, give SEAL_PUBLIC_KEY to every process and "
                "SEAL_PRIVATE_KEY to the worker only, or set SEAL_AT_REST=false on purpose."
            )
        if environment == "DevelopmentConfig":
            public, private = _development_keys(app)
            config["SEAL_PUBLIC_KEY"] = public
            config["SEAL_PRIVATE_KEY"] = config["SEAL_PRIVATE_KEY"] or private
    try:
        return sealing.load(config["SEAL_PUBLIC_KEY"], config["SEAL_PRIVATE_KEY"])
    except sealing.NotAKey as error:
        raise ConfigurationError(str(error)) from None


def _development_keys(app: Flask) -> tuple[str, str]:
    # A laptop run seals like production does, to a pair kept beside the database.
    os.makedirs(app.instance_path, exist_ok=True)
    path = os.path.join(app.instance_path, "seal_keys")
    try:
        with open(path, encoding="ascii") as handle:
            public, private = handle.read().split()
            return public, private
    except FileNotFoundError:
        public, private = sealing.generate()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(f"{public}\n{private}\n")
        return public, private


def check_autoresponder(config: Any) -> None:
    """Stop start-up on a confirmation text that asks for more than {name} and {clinic}."""
    # Anything else could put words into a stranger's inbox, or fail on the first patient.
    for setting in ("AUTORESPONDER_SUBJECT", "AUTORESPONDER_TEXT"):
        try:
            parsed = string.Formatter().parse(config[setting])
            fields = {field for _, field, _, _ in parsed if field is not None}
        except ValueError as error:
            raise ConfigurationError(f"{setting} is not a valid text: {error}.") from None
        unknown = fields - {"name", "clinic"}
        if unknown:
            raise ConfigurationError(
                f"{setting} may use {{name}} and {{clinic}} only, not "
                + ", ".join(f"{{{field}}}" for field in sorted(unknown))
                + "."
            )


def check_timezone(name: str) -> None:
    """Stop start-up on an unknown CLINIC_TIMEZONE, rather than fail every email later."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"CLINIC_TIMEZONE {name!r} is not a known time zone; use a name like Australia/Sydney."
        ) from None


def _development_secret(app: Flask) -> str:
    # A laptop run still needs one key shared by every process; keep it beside the database.
    os.makedirs(app.instance_path, exist_ok=True)
    path = os.path.join(app.instance_path, "secret_key")
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except FileNotFoundError:
        key = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key)
        return key


def register_ops(app: Flask) -> None:
    """Metrics: /metrics and the latency of every request."""
    metrics.init_app(app)


def register_store(app: Flask) -> None:
    """The enquiry store: its engine, migrated on start-up if AUTO_MIGRATE says so."""
    store.init_app(app)


def register_intake(app: Flask) -> None:
    """What a submission meets before it is stored: body checks, rate limits, the captcha."""
    body_checks.init_app(app)
    limits.init_app(app)
    form_token.init_app(app)
    replay.init_app(app)
    refused.init_app(app)
    refused_fields.init_app(app)


def register_delivery(app: Flask) -> None:
    """The mailer and the outbox's gauges; the worker inside this process, if embedded."""
    delivery.init_app(app)


def register_web(app: Flask) -> None:
    """The routes, the Origin check, the security headers and the error handlers."""
    if app.config["TRUSTED_PROXIES"]:
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    origins.init_app(app)
    security.init_app(app)
    pages.init_app(app)
    app.register_blueprint(embed.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(held.bp)
    errors.register_error_handlers(app)
