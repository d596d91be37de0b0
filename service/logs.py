"""Logging: configured once at start-up, and helpers that keep personal data out of it."""

from __future__ import annotations

import logging
import sys
import traceback

from flask import Flask


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(app: Flask) -> None:
    """Send the service's logs to stderr at LOG_LEVEL, once per process."""
    root = logging.getLogger("service")
    root.setLevel(app.config["LOG_LEVEL"].upper())
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)


def frames(error: BaseException) -> str:
    """Where an error happened, without its message (which may quote personal data)."""
    return f"{type(error).__name__}\n" + "".join(traceback.format_tb(error.__traceback__))
