"""Counting rate limits in memory without sweeping every key a hundred times a second."""

from __future__ import annotations

import threading
import time
from typing import Any

from flask_limiter import Limiter
from limits.storage import MemoryStorage
from limits.strategies import STRATEGIES, RateLimiter

# Sweep at least this far apart, and so that sweeping takes at most 1/SWEEP_SHARE of the time.
SWEEP_AT_MOST_EVERY_SECONDS = 1.0
SWEEP_SHARE = 50


class SweptMemoryStorage(MemoryStorage):
    """limits' memory storage, with its sweep of expired counters spaced out by its cost."""

    # An adapter, checked against limits 5.8.0 (tests/test_adapters.py): after any count, its
    # MemoryStorage starts a thread that walks every counter 10 ms later, under the GIL. A flood
    # from 50,000 addresses leaves 100,000 counters (a minute's and an hour's per address): each
    # walk took 48 ms, and the requests of the flood and of patients waited for it. A counter
    # that has expired is dropped when it is next read, so sweeping only frees memory; doing it
    # once a second, or less often when it is slow, changes no count.
    # Registered for "memory://", so RATELIMIT_STORAGE_URI's default names this storage.
    STORAGE_SCHEME = ["memory"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any):
        self._sweep_lock = threading.Lock()
        self._next_sweep = 0.0
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    def _MemoryStorage__schedule_expiry(self) -> None:  # noqa: N802 (the name it overrides)
        """Start a sweep if none runs and the last one was long enough ago."""
        now = time.monotonic()
        if now < self._next_sweep or self.timer.is_alive():
            return
        with self._sweep_lock:
            if now < self._next_sweep or self.timer.is_alive():
                return
            self._next_sweep = now + SWEEP_AT_MOST_EVERY_SECONDS
            self.timer = threading.Timer(0, self._sweep)
            self.timer.daemon = True
            self.timer.start()

    def _sweep(self) -> None:
        started = time.monotonic()
        self._MemoryStorage__expire_events()  # type: ignore[attr-defined]
        took = time.monotonic() - started
        self._next_sweep = max(self._next_sweep, started + took * SWEEP_SHARE)


def use_for_fallback(extension: Limiter, strategy: str) -> RateLimiter | None:
    """Count in a swept storage too while the shared store is unreachable; return its strategy."""
    # Flask-Limiter builds its in-memory fallback from MemoryStorage itself, with no setting to
    # choose another: its two private attributes are replaced here (Flask-Limiter 4.1.1).
    if getattr(extension, "_fallback_storage", None) is None:
        return None
    storage = SweptMemoryStorage()
    extension._fallback_storage = storage
    extension._fallback_limiter = STRATEGIES[strategy](storage)
    return extension._fallback_limiter
