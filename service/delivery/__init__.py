"""Delivery: claiming from the outbox, the worker, building and sending the clinic's email."""

from __future__ import annotations

import atexit
from typing import Any

from flask import Blueprint, Flask

from ..ops import metrics
from ..store import lifecycle
from . import message
from .catcher import start_catcher
from .gauges import OutboxGauges
from .mime import encode_once, look_up_the_host_once
from .smtp import mail
from .worker import EmbeddedWorker

# No routes: it brings the email's templates (templates/email/).
templates = Blueprint("delivery", __name__, template_folder="templates")


class Delivery:
    """One app's delivery: the worker inside its web process, if it runs one."""

    def __init__(self, embedded: EmbeddedWorker | None) -> None:
        self.embedded = embedded

    def enquiry_queued(self, _sender: Flask, **_extra: Any) -> None:
        """Wake the embedded worker: an enquiry is waiting."""
        if self.embedded is not None:
            self.embedded.wake()


def init_app(app: Flask) -> None:
    """Bind the mailer, count the outbox in /metrics, and start an embedded worker if asked."""
    if app.config["MAIL_CATCHER"] and not app.config["MAIL_SERVER"]:
        start_catcher(app)
    mail.init_app(app)
    look_up_the_host_once()
    with app.app_context():
        settings = [app.config["MAIL_DEFAULT_SENDER"], *message.every_inbox()]
    # Only addresses given as strings are encoded once; a (name, address) sender, per email.
    encode_once(address for address in settings if isinstance(address, str))
    app.register_blueprint(templates)
    metrics.add_scrape_collector(app, OutboxGauges(app))
    embedded = EmbeddedWorker(app) if app.config["DELIVERY_WORKER"] == "embedded" else None
    delivery = app.extensions["delivery"] = Delivery(embedded)
    if embedded is None:
        return
    lifecycle.enquiry_queued.connect(delivery.enquiry_queued, sender=app)
    # Started by the first request rather than here, so that CLI commands, which load the app
    # too, start no thread, and a worker process forked after loading gets its own.
    app.before_request(embedded.ensure_running)
    # A request that takes long keeps the process busy to its end, not just from its start.
    app.teardown_request(embedded.request_finished)
    atexit.register(embedded.stop, 10)
