"""One use per captcha answer: SET NX EX in Redis if there is one, else the used_captchas table."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from flask import current_app
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from sqlalchemy import Connection, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .extensions import store
from .models import UsedCaptcha

logger = logging.getLogger(__name__)

KEY_PREFIX = "contact-form:captcha:"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# A submission must not wait long on Redis: the database can always stand in for it.
REDIS_TIMEOUT_SECONDS = 2
# After Redis fails, use the database alone this long before trying Redis again, so that an
# outage costs each submission nothing instead of a connection timeout.
RETRY_REDIS_AFTER_SECONDS = 30

_lock = threading.Lock()


@dataclass(frozen=True)
class Solution:
    """A captcha answer that passed its checks and may be used once, until `expires_at`."""

    key: str
    expires_at: datetime


class _SharedStore:
    """One app's Redis client, and until when it is considered down."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(
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


def redis_url(config: Any) -> str | None:
    """The Redis that records used answers: RATELIMIT_STORAGE_URI if it is one, else REDIS_URL."""
    for url in (config.get("RATELIMIT_STORAGE_URI"), config.get("REDIS_URL")):
        if url and url.startswith(REDIS_SCHEMES):
            return url
    return None


def _shared() -> _SharedStore | None:
    """This app's Redis, or None without one or while it is down."""
    extensions = current_app.extensions
    if "captcha_replay" not in extensions:
        with _lock:
            if "captcha_replay" not in extensions:
                url = redis_url(current_app.config)
                extensions["captcha_replay"] = _SharedStore(url) if url else None
    shared = extensions["captcha_replay"]
    return shared if shared is not None and shared.usable() else None


def redis_key(solution: Solution) -> str:
    """The Redis key that marks this answer used."""
    return KEY_PREFIX + solution.key


def seen(solution: Solution) -> bool:
    """True if this answer was used before: a quick check before the work of accepting it."""
    shared = _shared()
    if shared is not None:
        try:
            if shared.client.exists(redis_key(solution)):
                return True
        except (RedisError, OSError) as error:
            shared.failed(error)
    # The database too: it holds what was used while Redis was down.
    with store.session() as session:
        return session.get(UsedCaptcha, solution.key) is not None


def uses_redis() -> bool:
    """True when answers are recorded in Redis (and it is not in a pause after a failure)."""
    return _shared() is not None


def consume(connection: Connection, solution: Solution) -> bool:
    """Mark the answer used, in Redis or else in the caller's transaction; False if it was."""
    shared = _shared()
    if shared is not None:
        seconds = (solution.expires_at - datetime.now(UTC)).total_seconds()
        try:
            return bool(
                shared.client.set(redis_key(solution), 1, nx=True, ex=max(1, math.ceil(seconds)))
            )
        except (RedisError, OSError) as error:
            shared.failed(error)
    return _consume_in_store(connection, solution)


def _insert_once(insert: Any) -> Any:
    table = UsedCaptcha.__table__
    # RETURNING, not rowcount: drivers disagree on rowcount for ON CONFLICT DO NOTHING.
    return insert(table).on_conflict_do_nothing(index_elements=["key"]).returning(table.c.key)


# Built once per dialect: the values come with each execution.
_INSERT_ONCE = {"postgresql": _insert_once(pg_insert), "sqlite": _insert_once(sqlite_insert)}


def _consume_in_store(connection: Connection, solution: Solution) -> bool:
    statement = _INSERT_ONCE[connection.dialect.name]
    values = {"key": solution.key, "expires_at": solution.expires_at}
    return connection.execute(statement, values).scalar() is not None


def forget_expired(session: Session, now: datetime | None = None) -> int:
    """Drop the database's records of answers whose challenges have expired; return how many."""
    now = now or datetime.now(UTC)
    return session.execute(delete(UsedCaptcha).where(UsedCaptcha.expires_at < now)).rowcount
