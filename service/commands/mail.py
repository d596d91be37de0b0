"""`flask --app wsgi send-test-email ADDRESS`: check the SMTP settings and say what failed."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext
from flask_mail import Message

from ..delivery import smtp


@click.command("send-test-email")
@click.argument("address")
@with_appcontext  # AppGroup commands get this by default; a plain click command needs it.
def send_test_email(address: str) -> None:
    """Send a test email to ADDRESS with the configured SMTP settings, and report what failed."""
    config = current_app.config
    tls = "STARTTLS" if config["MAIL_USE_TLS"] else "implicit" if config["MAIL_USE_SSL"] else "none"
    click.echo(
        f"Connecting to {config['MAIL_SERVER']}:{config['MAIL_PORT']}"
        f" (TLS: {tls},"
        f" login: {'yes' if config['MAIL_USERNAME'] else 'no'}, timeout {config['MAIL_TIMEOUT']}s)"
    )
    message = Message(
        subject="Contact form: test email",
        recipients=[address],
        body="This is a test from the contact-form service. If you can read it, SMTP works.",
    )
    try:
        sent = smtp.send_one(message, [address])
    except smtp.StepFailed as error:
        _fail(error.failure)
    for failure in sent.refused.values():
        _fail(failure)
    click.echo(f"Sent. The server accepted the test email for {address}.")


def _fail(failure: smtp.Failure) -> None:
    kind = "permanent" if failure.permanent else "temporary"
    raise click.ClickException(f"Sending failed ({kind}): {failure.reason}")
