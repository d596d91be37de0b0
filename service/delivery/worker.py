"""The delivery worker: a loop over the outbox, run in the web process or on its own."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from flask import Flask

from ..store import queries, used_captchas
from . import alerting, digest, outbox, retention

logger = logging.getLogger(__name__)

PURGE_EVERY_SECONDS = 24 * 3600
# How long a woken worker waits for more enquiries before claiming: enquiries come in bursts
# (a flood, a busy morning), and a burst gathered is one claim and one SMTP connection.
GATHER_SECONDS = 0.1
# Inside a web process the worker delivers in the requests' lulls: a request within the last
# QUIET_SECONDS means the process is busy. Under a flood that leaves no lull it still sends a
# batch every YIELD_AT_MOST_SECONDS: 20 a second, far more than the default global limit (300
# enquiries an hour) ever lets in.
QUIET_SECONDS = 0.05
YIELD_AT_MOST_SECONDS = 1.0
# And between the emails of a batch, at most this long: 20 emails then take a second or so.
PACE_AT_MOST_SECONDS = 0.05


class Worker:
    """Delivers due enquiries until stopped; wakes early when told an enquiry arrived."""

    def __init__(
        self,
        app: Flask,
        name: str = "worker",
        busy: Callable[[], bool] = lambda: False,
        connections: int = 1,
    ) -> None:
        self.app = app
        self.busy = busy
        self.connections = connections
        self.id = f"{socket.gethostname()}:{os.getpid()}:{name}:{uuid.uuid4().hex[:6]}"
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._last_housekeeping = 0.0
        self._last_watch = -60.0

    def wake(self) -> None:
        """Ask the worker to look at the outbox now rather than at its next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the message in flight, give back the rest of the batch, and return from run()."""
        self.stopping.set()
        self._wake.set()

    def run_once(self) -> int:
        """Deliver every due enquiry, batch after batch; return how many were sent."""
        total = 0
        with self.app.app_context():
            self._housekeeping()
            self._watch_for_a_stuck_queue()
            while not self.stopping.is_set():
                self._yield_to_requests()
                sent = outbox.deliver(self.id, self.stopping.is_set, self._pace, self.connections)
                total += sent
                if sent == 0 and not self._more_due():
                    break
        return total

    def run(self) -> None:
        """Poll the outbox until stop() is called; errors are logged and retried, never fatal."""
        poll = float(self.app.config["OUTBOX_POLL_SECONDS"])
        logger.info("delivery worker %s started", self.id)
        while not self.stopping.is_set():
            self._wake.clear()
            try:
                self.run_once()
            except Exception as error:  # The store may be briefly unreachable: keep going.
                logger.error("delivery worker error: %s", type(error).__name__)
            if self._wake.wait(poll):
                self.stopping.wait(GATHER_SECONDS)
        logger.info("delivery worker %s stopped", self.id)

    def _yield_to_requests(self) -> None:
        # Accepting enquiries comes first: building and sending an email costs about as much CPU
        # as accepting one, and the visitor is waiting for the one, not for the other.
        self._wait_while_busy(YIELD_AT_MOST_SECONDS, QUIET_SECONDS)

    def _pace(self) -> None:
        # Between the emails of a batch, a busy process serves its requests first: a batch
        # sent at once held the CPU for a fifth of a second, and every request waited behind it.
        self._wait_while_busy(PACE_AT_MOST_SECONDS, QUIET_SECONDS / 5)

    def _wait_while_busy(self, at_most: float, every: float) -> None:
        deadline = time.monotonic() + at_most
        while self.busy() and time.monotonic() < deadline and not self.stopping.is_set():
            self.stopping.wait(every)

    def _more_due(self) -> bool:
        return outbox.has_work()

    def _watch_for_a_stuck_queue(self) -> None:
        # At most once a minute: a look at the oldest waiting enquiry, for the operator's alert.
        if not self.app.config["ALERT_TO"] or time.monotonic() - self._last_watch < 60:
            return
        self._last_watch = time.monotonic()
        waited = queries.status().oldest_pending_seconds
        if waited is not None and waited > self.app.config["STUCK_AFTER"]:
            alerting.stuck(waited)
        else:
            alerting.recovered()

    def _housekeeping(self) -> None:
        # Once a day: the retention purge and the expired captcha records.
        if (
            time.monotonic() - self._last_housekeeping < PURGE_EVERY_SECONDS
            and self._last_housekeeping
        ):
            return
        self._last_housekeeping = time.monotonic()
        retention.erase_everything_due(self.app)
        try:
            digest.send_daily()
        except Exception as error:  # A digest must never stop deliveries.
            logger.error("held digest failed: %s", type(error).__name__)
        used_captchas.forget_expired()


class EmbeddedWorker:
    """A worker thread inside the web process, restarted after a fork."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.worker: Worker | None = None
        self.thread: threading.Thread | None = None
        self.pid = 0
        self.last_request = 0.0

    def ensure_running(self) -> None:
        """Note a request; start the thread if this process has none (first call, or a fork)."""
        self.last_request = time.monotonic()
        if self.pid == os.getpid() and self.thread is not None and self.thread.is_alive():
            return
        self.pid = os.getpid()
        self.worker = Worker(self.app, "embedded", busy=self.serving)
        self.thread = threading.Thread(target=self.worker.run, name="delivery-worker", daemon=True)
        self.thread.start()

    def request_finished(self, _error: BaseException | None = None) -> None:
        """Note that a request ended: the lull starts here, not at the request's start."""
        self.last_request = time.monotonic()

    def serving(self) -> bool:
        """True while this process has had a request in the last QUIET_SECONDS."""
        return time.monotonic() - self.last_request < QUIET_SECONDS

    def wake(self) -> None:
        """Tell the thread an enquiry is waiting."""
        self.ensure_running()
        if self.worker is not None:
            self.worker.wake()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread after its message in flight."""
        if self.worker is not None and self.pid == os.getpid():
            self.worker.stop()
            if self.thread is not None:
                self.thread.join(timeout)
