"""One use per captcha answer: SET NX EX in Redis if there is one, else the used_captchas table."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app
from sqlalchemy import Connection

from ...store import used_captchas

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

KEY_PREFIX = "contact-form:captcha:"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# A submission must not wait long on Redis: the database can always stand in for it.
REDIS_TIMEOUT_SECONDS = 2
# After Redis fails, use the database alone this long before trying Redis again, so that an
# outage costs each submission nothing instead of a connection timeout.
RETRY_REDIS_AFTER_SECONDS = 30


@dataclass(frozen=True)
class Solution:
    """A captcha answer that passed its checks and may be used once, until `expires_at`."""

    key: str
    expires_at: datetime
    # The exact payload it came in, as `altcha_proof.exact_key` names it: a byte-identical resend is
    # known by it before anything is checked. Empty for a provider's token.
    exact_key: str = ""


class _SharedStore:
    """One app's Redis client, and until when it is considered down."""

    def __init__(self, url: str) -> None:
        # Imported here: a worker without Redis (the embedded default) need not hold redis-py and
        # the asyncio it imports, 6 MiB per worker.
        import redis
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError
        from redis.retry import Retry

        # What a failing Redis raises: the database takes over for these.
        self.errors: tuple[type[Exception], ...] = (RedisError, OSError)
        self.client: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            # No retries of its own: on failure the database takes over at once.
            retry=Retry(NoBackoff(), 0),
        )
        self.down_until = 0.0

    def usable(self) -> bool:
        return time.monotonic() >= self.down_until

    def failed(self, error: Exception) -> None:
        self.down_until = time.monotonic() + RETRY_REDIS_AFTER_SECONDS
        logger.warning(
            "Redis failed for the captcha replay store (%s); using the database for %d s",
            type(error).__name__,
            RETRY_REDIS_AFTER_SECONDS,
        )


def redis_url(config: Mapping[str, Any]) -> str | None:
    """The Redis that records used answers: RATELIMIT_STORAGE_URI if it is one, else REDIS_URL."""
    for url in (config.get("RATELIMIT_STORAGE_URI"), config.get("REDIS_URL")):
        if isinstance(url, str) and url.startswith(REDIS_SCHEMES):
            return url
    return None


class SpentHere:
    """The answers this process saw spent, until their challenges expire: refused at no cost."""

    # Only answers to genuine challenges that an accepted enquiry spent get here, and the rate
    # limits bound those, so the bound below is a safety net rather than a working size.
    MOST = 10_000

    def __init__(self) -> None:
        self.expiry: dict[str, datetime] = {}
        self.lock = threading.Lock()

    def add(self, solution: Solution) -> None:
        """Remember that this answer is spent."""
        with self.lock:
            if len(self.expiry) >= self.MOST:
                self._forget_expired()
            self.expiry[solution.key] = solution.expires_at
            if solution.exact_key:
                self.expiry[solution.exact_key] = solution.expires_at

    def holds(self, key: str) -> bool:
        """True if the answer spent under `key` is remembered and its challenge still valid."""
        expires_at = self.expiry.get(key)
        return expires_at is not None and expires_at > datetime.now(UTC)

    def _forget_expired(self) -> None:
        now = datetime.now(UTC)
        self.expiry = {key: at for key, at in self.expiry.items() if at > now}
        if len(self.expiry) >= self.MOST:  # the oldest half goes: the store still knows them
            self.expiry = dict(list(self.expiry.items())[self.MOST // 2 :])


class ReplayStore:
    """One app's record of used answers: its Redis, if it has one, and the database."""

    def __init__(self, url: str | None) -> None:
        self.shared = _SharedStore(url) if url else None
        self.spent_here = SpentHere()

    def redis(self) -> _SharedStore | None:
        """The Redis to use now: None without one, or while it is down."""
        return self.shared if self.shared is not None and self.shared.usable() else None


def init_app(app: Flask) -> None:
    """Give the app its replay store (its Redis client connects on first use)."""
    app.extensions["captcha_replay"] = ReplayStore(redis_url(app.config))


def _replay_store() -> ReplayStore:
    replay_store: ReplayStore = current_app.extensions["captcha_replay"]
    return replay_store


def _shared() -> _SharedStore | None:
    """This app's Redis, or None without one or while it is down."""
    return _replay_store().redis()


def spent_here(key: str) -> bool:
    """True if this process saw an answer spent under `key` (its signature or exact payload)."""
    return _replay_store().spent_here.holds(key)


def remember_spent(solution: Solution) -> None:
    """Note, once it is committed or found recorded, that the answer is spent."""
    _replay_store().spent_here.add(solution)


def redis_key(solution: Solution) -> str:
    """The Redis key that marks this answer used."""
    return KEY_PREFIX + solution.key


def seen(solution: Solution) -> bool:
    """True if the replay store (Redis, then the database) holds this answer as used."""
    shared = _shared()
    if shared is not None:
        try:
            if shared.client.exists(redis_key(solution)):
                return True
        except shared.errors as error:
            shared.failed(error)
    # The database too: it holds what was used while Redis was down.
    return used_captchas.is_recorded(solution.key)


def consume(connection: Connection, solution: Solution) -> bool:
    """Mark the answer used, in Redis or else in the caller's transaction; False if it was."""
    shared = _shared()
    if shared is not None:
        seconds = (solution.expires_at - datetime.now(UTC)).total_seconds()
        try:
            return bool(
                shared.client.set(redis_key(solution), 1, nx=True, ex=max(1, math.ceil(seconds)))
            )
        except shared.errors as error:
            shared.failed(error)
    return used_captchas.record(connection, solution.key, solution.expires_at)
