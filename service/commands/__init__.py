"""The operator commands: `flask --app wsgi outbox ...`, `db ...`, `keys ...`, `send-test-email`."""

from __future__ import annotations

from flask import Flask

from .db import db_cli
from .keys import keys_cli
from .mail import send_test_email
from .outbox import outbox_cli


def init_app(app: Flask) -> None:
    """Add the commands to the app's `flask` CLI."""
    app.cli.add_command(outbox_cli)
    app.cli.add_command(db_cli)
    app.cli.add_command(keys_cli)
    app.cli.add_command(send_test_email)
