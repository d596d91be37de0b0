"""The worker's heartbeat: it renews the leases of the batch it holds while it works."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from types import TracebackType

from flask import Flask

from ..store import lifecycle
from ..store.models import Enquiry

logger = logging.getLogger(__name__)


class Heartbeat:
    """Renews a batch's leases every few seconds, until each enquiry in it is finished.

    A worker that dies stops renewing, and its claims return to the queue when their short
    lease ends. A worker that lives keeps them while it makes progress; one that has been on a
    single message for `stall_after` seconds (a peer that drips its replies) stops renewing, and
    leaves its batch to the other workers.
    """

    def __init__(
        self,
        app: Flask,
        batch: list[Enquiry],
        lease: timedelta,
        every: float,
        stall_after: float,
    ) -> None:
        self.app = app
        self.lease = lease
        # At most a third of the lease: two renewals may fail before anyone can take over.
        self.every = min(every, lease.total_seconds() / 3)
        self.stall_after = stall_after
        self.held = {enquiry.id: enquiry for enquiry in batch}
        self.lost: set[str] = set()
        self.renewed_at = self.progress_at = time.monotonic()
        # Held while renewing and while the worker records an outcome, so that a renewal never
        # meets an enquiry that was finished a moment ago and reports it lost.
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping.set()
        self.thread.join()

    def holds(self, enquiry: Enquiry) -> bool:
        """False once a renewal found that another worker has the enquiry now."""
        with self.lock:
            return enquiry.id not in self.lost

    def fresh(self) -> bool:
        """True while the last two renewals have not both failed: the leases are safe."""
        return time.monotonic() - self.renewed_at < 2 * self.every

    @contextlib.contextmanager
    def finishing(self, enquiry: Enquiry) -> Iterator[None]:
        """Record an enquiry's outcome with no renewal in between; it is renewed no more."""
        with self.lock:
            try:
                yield
            finally:
                self.held.pop(enquiry.id, None)
                self.progress_at = time.monotonic()

    def give_back(
        self, enquiries: list[Enquiry], at: datetime | None = None, error: str | None = None
    ) -> None:
        """Release the enquiries still held, untried, due at `at` (now by default)."""
        with self.lock:
            held = [enquiry for enquiry in enquiries if enquiry.id in self.held]
            lifecycle.release(held, at, error)
            for enquiry in held:
                self.held.pop(enquiry.id)

    def _beat(self) -> None:
        while not self.stopping.wait(self.every):
            with self.lock:
                batch = list(self.held.values())
                if not batch:
                    continue
                stalled = time.monotonic() - self.progress_at
                if stalled > self.stall_after:
                    logger.warning(
                        "one message has taken %d s: no longer renewing the leases of %d "
                        "enquiries, which other workers will take over",
                        stalled,
                        len(batch),
                    )
                    return
                try:
                    with self.app.app_context():
                        kept = {enquiry.id for enquiry in lifecycle.renew(batch, self.lease)}
                except Exception as error:  # The store may be briefly unreachable: try again.
                    logger.warning(
                        "could not renew the leases of %d enquiries (%s); trying again in %g s",
                        len(batch),
                        type(error).__name__,
                        self.every,
                    )
                    continue
                self.renewed_at = time.monotonic()
                for enquiry in batch:
                    if enquiry.id not in kept:
                        self.lost.add(enquiry.id)
                        self.held.pop(enquiry.id, None)
