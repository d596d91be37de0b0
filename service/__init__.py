"""A self-hosted contact-form service: the "Drop us a Line" form, stored and mailed to a clinic."""

from __future__ import annotations

import atexit
import os
import secrets
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Flask

from config import ConfigurationError, config_class, read_environment


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: configuration, extensions, routes, error handlers, delivery."""
    app = Flask(__name__, instance_relative_config=True)
    from .form_token import NoSessions

    app.session_interface = NoSessions()
    load_config(app, test_config)
    from .logs import configure_logging

    configure_logging(app)
    register_extensions(app)
    register_blueprints(app)
    from .errors import register_error_handlers

    register_error_handlers(app)
    register_cli(app)
    register_delivery(app)
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
    from . import captcha

    captcha.check_config(app.config)
    check_timezone(app.config["CLINIC_TIMEZONE"])
    from . import origins, theme

    app.config["ALLOWED_ORIGINS"] = origins.parse(app.config["ALLOWED_ORIGINS"])
    theme.check(app.config)


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


def register_extensions(app: Flask) -> None:
    """Bind the extensions; start the development mail catcher when no SMTP server is set."""
    from . import input_checks, limits, metrics, origins, security
    from .extensions import mail, store

    if app.config["MAIL_CATCHER"] and not app.config["MAIL_SERVER"]:
        from .devmail import start_catcher

        start_catcher(app)
    store.init_app(app)
    mail.init_app(app)
    origins.init_app(app)
    security.init_app(app)
    limits.init_app(app)
    input_checks.init_app(app)
    metrics.init_app(app)
    if app.config["TRUSTED_PROXIES"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]


def register_blueprints(app: Flask) -> None:
    """Mount the page, embedding, API and health routes."""
    from .routes import api, embed, health, openapi, pages

    app.register_blueprint(pages.bp)
    app.register_blueprint(embed.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)


def register_cli(app: Flask) -> None:
    """Add the operator commands (`flask outbox ...`, `flask send-test-email`)."""
    from .cli import outbox_cli, send_test_email

    app.cli.add_command(outbox_cli)
    app.cli.add_command(send_test_email)


def register_delivery(app: Flask) -> None:
    """Run the delivery worker inside this process, unless DELIVERY_WORKER=external."""
    if app.config["DELIVERY_WORKER"] != "embedded":
        app.extensions["outbox_notify"] = lambda: None
        return
    from .worker import EmbeddedWorker

    embedded = EmbeddedWorker(app)
    app.extensions["outbox_notify"] = embedded.wake
    app.extensions["embedded_worker"] = embedded
    # Started by the first request rather than here, so that CLI commands, which load the app
    # too, start no thread, and a worker process forked after loading gets its own.
    app.before_request(embedded.ensure_running)
    atexit.register(embedded.stop, 10)
