"""Logging: configured once at start-up, and helpers that keep personal data out of it."""

from __future__ import annotations

import logging
import sys
import traceback

from flask import Flask


def configure_logging(app: Flask) -> None:
    """Send the service's logs to stderr at LOG_LEVEL, once per process."""
    root = logging.getLogger("service")
    root.setLevel(app.config["LOG_LEVEL"].upper())
    if not any(getattr(h, "_service_handler", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._service_handler = True  # type: ignore[attr-defined]
        root.addHandler(handler)


def frames(error: BaseException) -> str:
    """Where an error happened, without its message (which may quote personal data)."""
    return f"{type(error).__name__}\n" + "".join(traceback.format_tb(error.__traceback__))
