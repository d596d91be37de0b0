"""The development mail catcher: a local SMTP server that saves each email as an .eml file."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask

logger = logging.getLogger(__name__)


class _SaveToFolder:
    """aiosmtpd handler that writes every message it receives into a folder."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = os.path.join(self.folder, f"{stamp}-{uuid.uuid4().hex[:8]}.eml")
        # Readable by the service's own user only: each file is a patient's enquiry.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(envelope.original_content or envelope.content)
        logger.info(
            "mail catcher: saved an email for %d recipient(s) to %s", len(envelope.rcpt_tos), path
        )
        return "250 Message accepted for delivery"


def erase_caught(app: Flask, older_than: timedelta) -> int:
    """Erase the caught emails saved over `older_than` ago; return how many."""
    folder = os.path.join(app.instance_path, "mail")
    if not os.path.isdir(folder):
        return 0
    cutoff = time.time() - older_than.total_seconds()
    erased = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.endswith(".eml") and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                erased += 1
    return erased


def start_catcher(app: Flask) -> None:
    """Start the catcher on a free local port and point the app's mail settings at it."""
    # Imported here: only a laptop without MAIL_SERVER runs the catcher, and aiosmtpd brings
    # asyncio's machinery that no production process needs.
    from aiosmtpd.controller import Controller

    folder = os.path.join(app.instance_path, "mail")
    os.makedirs(folder, exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(_SaveToFolder(folder), hostname="127.0.0.1", port=port)
    controller.start()
    app.extensions["mail_catcher"] = controller
    app.config.update(
        MAIL_SERVER="127.0.0.1", MAIL_PORT=port, MAIL_USE_TLS=False, MAIL_USE_SSL=False
    )
    logger.info(
        "No MAIL_SERVER set: emails to the clinic are caught locally and saved under %s", folder
    )
