"""Retention covers everything: delivered and dead letters lose their personal data on time,
the bytes are gone from the SQLite file, and the development mail catcher's files too."""

from __future__ import annotations

import os
import smtplib
import stat
import time
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask

from service.delivery import catcher
from service.store import lifecycle
from tests.conftest import VALID, deliver_all
from tests.smtp_server import SMTPTestServer
from tests.support import change, enqueue, load

CANARY = {"name": "Canary-Retained-9b2c", "message": "Canary-Retained-9b2c: my shoulder"}


def test_dead_letters_lose_their_personal_data_after_failed_retention_days(
    app: Flask, client, smtp_server: SMTPTestServer, runner
) -> None:
    old, recent = enqueue(client, **CANARY), enqueue(client, **CANARY)
    smtp_server.fault = "rcpt_550"
    assert deliver_all(app) == 0
    change(app, old, failed_at=lifecycle.utcnow() - timedelta(days=30, minutes=1))
    change(app, recent, failed_at=lifecycle.utcnow() - timedelta(days=29))
    assert deliver_all(app) == 0  # the worker's first pass applies every retention period
    erased, kept = load(app, old), load(app, recent)
    assert (erased.name, erased.message, erased.purged_at is not None) == (None, None, True)
    assert (erased.status, erased.last_error) == ("failed", "SMTP 550 at RCPT"), "the record stays"
    assert kept.name == CANARY["name"]
    result = runner.invoke(args=["outbox", "retry", old])
    assert result.stdout == "Queued 0 enquiries again.\n", "nothing left to send"


def test_forget_erases_a_dead_letter_at_once_and_nothing_else(
    app: Flask, client, smtp_server: SMTPTestServer, runner
) -> None:
    smtp_server.fault = "data_554"
    dead = enqueue(client, **CANARY)
    assert deliver_all(app) == 0
    smtp_server.fault = None
    waiting = enqueue(client, **CANARY)
    result = runner.invoke(args=["outbox", "forget", dead, waiting])
    assert result.exit_code == 1 and "not dead letters" in result.stderr
    assert result.stdout == "Erased the personal data of 1 dead letters.\n"
    assert load(app, dead).name is None and load(app, waiting).name == CANARY["name"]


def test_after_a_purge_the_canary_is_nowhere_in_the_sqlite_file(
    app: Flask, client, smtp_server: SMTPTestServer, runner, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        return  # PostgreSQL: the same columns are NULL; its files are the server's business
    for _ in range(3):
        enqueue(client, **CANARY)
    assert deliver_all(app) == 3
    path = Path(urlsplit(database_url).path)
    assert b"Canary-Retained" in path.read_bytes() + Path(f"{path}-wal").read_bytes()
    result = runner.invoke(args=["outbox", "purge", "--older-than", "0m"])
    assert result.stdout == "Erased the personal data of 3 delivered enquiries.\n"
    files = [path, Path(f"{path}-wal")]
    assert all(b"Canary-Retained" not in f.read_bytes() for f in files if f.exists())
    assert VALID["email"].encode() not in path.read_bytes()


def test_the_mail_catcher_writes_files_only_its_user_reads_and_erases_them_on_time(
    tmp_path: Path,
) -> None:
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    catcher.start_catcher(app)
    try:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "a@x.example", "b@x.example", "Hi"
        message.set_content("Canary-Caught")
        with smtplib.SMTP(app.config["MAIL_SERVER"], app.config["MAIL_PORT"], timeout=5) as smtp:
            smtp.send_message(message)
    finally:
        app.extensions["mail_catcher"].stop()
    [saved] = list((tmp_path / "instance" / "mail").glob("*.eml"))
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
    assert catcher.erase_caught(app, timedelta(days=30)) == 0
    month_ago = time.time() - 31 * 24 * 3600
    os.utime(saved, (month_ago, month_ago))
    assert catcher.erase_caught(app, timedelta(days=30)) == 1
    assert not saved.exists()
