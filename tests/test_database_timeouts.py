"""No statement waits for ever: a store that does not answer in DATABASE_TIMEOUT means 503."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text

from service.delivery.worker import Worker
from service.web.errors import MESSAGES
from tests.conftest import VALID, csrf_token, solve_captcha
from tests.smtp_server import SMTPTestServer
from tests.support import counts, enqueue, records

TIMEOUT = 1.0


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    """The suite's settings with a one-second DATABASE_TIMEOUT."""
    return {**app_config, "DATABASE_TIMEOUT": TIMEOUT, "OUTBOX_POLL_SECONDS": 0.2}


@contextlib.contextmanager
def store_locked(url: str) -> Iterator[None]:
    """Hold a lock that makes every statement on the enquiries wait, until the block ends."""
    if url.startswith("sqlite"):
        holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    engine = create_engine(url)
    try:
        with engine.connect() as holder:
            holder.execute(text("LOCK TABLE enquiries IN ACCESS EXCLUSIVE MODE"))
            try:
                yield
            finally:
                holder.rollback()
    finally:
        engine.dispose()


def test_an_enquiry_the_store_cannot_take_in_time_is_refused_with_503_and_not_kept(
    app: Flask, database_url: str
) -> None:
    client = app.test_client()
    body = {**VALID, "altcha": solve_captcha(client)}
    with store_locked(database_url):
        started = time.monotonic()
        response = client.post("/api/enquiries", json=body)
        took = time.monotonic() - started
    assert (response.status_code, response.get_json()) == (503, {"error": MESSAGES[503]})
    assert response.headers["Retry-After"] == "30"
    assert took < TIMEOUT + 1, took
    assert counts(app)["pending"] == 0, "nothing was acknowledged, so nothing is kept"
    # Once the store answers again, the same enquiry goes through.
    assert client.post("/api/enquiries", json=body).status_code == 202


def test_the_form_page_says_so_too(app: Flask, database_url: str) -> None:
    client = app.test_client()
    form = {**VALID, "csrf_token": csrf_token(client), "altcha": solve_captcha(client)}
    with store_locked(database_url):
        response = client.post("/contact", data=form)
    assert response.status_code == 503
    assert MESSAGES[503] in response.get_data(as_text=True)


def test_the_worker_logs_a_store_that_does_not_answer_and_goes_on(
    app: Flask, database_url: str, smtp_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    enquiry_id = enqueue(app.test_client())
    worker = Worker(app, "timeouts")
    thread = threading.Thread(target=worker.run, name="timeouts-worker")
    with store_locked(database_url):
        thread.start()
        deadline = time.monotonic() + 10
        while not records(caplog, logging.ERROR, "service.delivery.worker"):
            assert time.monotonic() < deadline, "the worker never reported the store"
            time.sleep(0.05)
    try:
        [message] = smtp_server.wait_for(1)
        assert message.header("X-Enquiry-ID") == enquiry_id
    finally:
        worker.stop()
        thread.join(10)
    [error, *_] = records(caplog, logging.ERROR, "service.delivery.worker")
    assert error.getMessage() == "delivery worker error: OperationalError"
