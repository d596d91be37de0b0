"""Rate limits on the routes that accept enquiries: per client address and for all clients."""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from flask import Flask, current_app, g
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many
from limits.strategies import RateLimiter
from werkzeug.exceptions import TooManyRequests

from . import limit_storage

logger = logging.getLogger(__name__)
View = TypeVar("View", bound=Callable[..., object])

EVERYONE = "all-clients"
# The outcomes that store an enquiry: only these spend the budget for all clients, so that
# junk, however much of it, cannot close the form for patients.
STORED = frozenset({"accepted", "held"})


def client_key() -> str:
    """The client as the limits count it: its IPv4 address, or its IPv6 /64 network."""
    # The address as the WSGI server saw it, or as ProxyFix rewrote it for TRUSTED_PROXIES.
    return _key_of(get_remote_address())


@functools.lru_cache(maxsize=4096)
def _key_of(address: str) -> str:
    # A client sends many requests (a flood, most of all): its address is parsed once.
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        # One subscriber gets a /64 and can rotate through it at will.
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


limiter = Limiter(key_func=client_key)
# While the shared store (Redis) fails, count in this process's memory for this long before
# asking it again, so that an outage costs each submission nothing instead of a timeout.
RETRY_STORAGE_AFTER_SECONDS = 30


@dataclass(frozen=True)
class Budget:
    """A rate limit: the setting that holds its limits, what it counts by, and what it counts."""

    scope: str
    setting: str
    key: Callable[[], str]
    # Counted only for requests that stored an enquiry (accepted or held); otherwise every
    # request counts.
    only_stored: bool = False


PER_CLIENT = Budget("submissions-per-client", "RATELIMIT_PER_CLIENT", client_key)
# The budget for all clients is only spent by enquiries that were stored: a flood of junk or of
# refused posts does not use up everybody else's.
ALL_CLIENTS = Budget("submissions", "RATELIMIT_GLOBAL", lambda: EVERYONE, only_stored=True)
CHALLENGES = Budget("challenges", "RATELIMIT_CHALLENGE", client_key)


class OverLimit(TooManyRequests):
    """A budget is spent: when it lets this client through again, and whether it is everyone's."""

    def __init__(self, limit: RateLimitItem, reset_at: float, everyone: bool) -> None:
        super().__init__(str(limit))
        self.wait_seconds = max(1, int(reset_at - time.time()))
        self.everyone = everyone


@functools.lru_cache(maxsize=64)
def _limits(text: str) -> tuple[RateLimitItem, ...]:
    # Parsed once per setting's text, not on every request.
    return tuple(parse_many(text)) if text else ()


class Counting:
    """One app's counters: Flask-Limiter's storage, and this process's memory while it fails."""

    def __init__(self, primary: RateLimiter, fallback: RateLimiter | None, prefix: str) -> None:
        self.primary = primary
        self.fallback = fallback
        self.prefix = prefix
        self.primary_down_until: float | None = None

    def check(self, budgets: tuple[Budget, ...]) -> list[tuple[RateLimitItem, list[str]]]:
        """Count this request against each budget; raise OverLimit if one is spent.

        Returns the limits to count once the request has stored an enquiry.
        """
        config = current_app.config
        later: list[tuple[RateLimitItem, list[str]]] = []
        for budget in budgets:
            keys = [self.prefix, budget.key(), budget.scope]
            for limit in _limits(str(config[budget.setting])):
                if budget.only_stored:
                    later.append((limit, keys))
                if self._count("test" if budget.only_stored else "hit", limit, keys) is False:
                    stats = self._count("get_window_stats", limit, keys)
                    reset_at = stats.reset_time + 1 if stats else time.time() + 60
                    raise OverLimit(limit, reset_at, keys[1] == EVERYONE)
        return later

    def spend(self, later: list[tuple[RateLimitItem, list[str]]]) -> None:
        """Count a stored enquiry against the budgets that count only those."""
        for limit, keys in later:
            self._count("hit", limit, keys)

    def _count(self, method: str, limit: RateLimitItem, keys: list[str]) -> Any:
        # None when nothing could count: an unreachable store must never turn a patient away.
        strategy = self._strategy()
        try:
            return getattr(strategy, method)(limit, *keys)
        except Exception as error:
            if strategy is self.primary and self.fallback is not None:
                self.primary_down_until = time.monotonic() + RETRY_STORAGE_AFTER_SECONDS
                logger.warning(
                    "rate limit storage unreachable (%s); counting in this process's memory "
                    "for %d s",
                    type(error).__name__,
                    RETRY_STORAGE_AFTER_SECONDS,
                )
                return self._count(method, limit, keys)
            logger.error("rate limit not counted: %s", type(error).__name__)
            return None

    def _strategy(self) -> RateLimiter:
        if self.primary_down_until is None or self.fallback is None:
            return self.primary
        if time.monotonic() < self.primary_down_until:
            return self.fallback
        if self.primary.storage.check():
            logger.info("rate limit storage reachable again; counting there")
            self.primary_down_until = None
            return self.primary
        self.primary_down_until = time.monotonic() + RETRY_STORAGE_AFTER_SECONDS
        return self.fallback


def limited_by(*budgets: Budget) -> Callable[[View], View]:
    """Check the budgets before a view runs, and count its stored enquiry after."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def limited(*args: Any, **kwargs: Any) -> Any:
            counting: Counting | None = current_app.extensions["rate_limits"]
            if counting is None:
                return view(*args, **kwargs)
            later = counting.check(budgets)
            response = view(*args, **kwargs)
            if later and g.get("outcome") in STORED:
                counting.spend(later)
            return response

        return cast(View, limited)

    return decorate


# The page and the API share both budgets.
limit_submissions = limited_by(PER_CLIENT, ALL_CLIENTS)
limit_challenges = limited_by(CHALLENGES)


def too_many_text(seconds: int, everyone: bool = False) -> str:
    """The sentence a visitor over the limit (theirs, or everyone's) reads."""
    minutes = max(1, math.ceil(seconds / 60))
    unit = "minute" if minutes == 1 else "minutes"
    if everyone:
        return (
            "The form is receiving an unusual number of messages right now. "
            f"Please try again in {minutes} {unit} or call the clinic."
        )
    return (
        "Too many messages from your connection; "
        f"please try again in {minutes} {unit} or call the clinic."
    )


def init_app(app: Flask) -> None:
    """Bind the limiter: no budget headers, and no error or refusal because Redis is down."""
    # Only a refusal says when to try again (Retry-After, set by the 429's handler). Flask-Limiter's
    # X-RateLimit-* headers on every answer would tell a robot how much budget it has left, put
    # "Retry-After: 0" on a 422, and cost a refusal a twentieth of its time.
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "contact-form")
    # If the shared store is unreachable, count in this process rather than refuse patients.
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    app.config.setdefault(
        "RATELIMIT_STORAGE_OPTIONS", {"socket_timeout": 2, "socket_connect_timeout": 2}
    )
    # "memory://" names limit_storage's swept storage, registered when that module is imported.
    # Flask-Limiter builds the storage and strategy from the settings; the routes' budgets are
    # checked here (Counting), without its per-request machinery, a fifth of a refusal's time.
    limiter.init_app(app)
    fallback = limit_storage.use_for_fallback(
        limiter, app.config.get("RATELIMIT_STRATEGY", "fixed-window")
    )
    # Disabled (RATELIMIT_ENABLED false), Flask-Limiter builds no strategy, and nothing counts.
    app.extensions["rate_limits"] = (
        Counting(limiter.limiter, fallback, str(app.config["RATELIMIT_KEY_PREFIX"]))
        if limiter.enabled
        else None
    )
    drop_per_request_hooks(app, limiter)


def drop_per_request_hooks(app: Flask, extension: Limiter) -> None:
    """Remove the limiter's passes around every request; the limited views check for themselves."""

    # Only the submission routes have limits, and they count them (Counting). Flask-Limiter's
    # pass before every request looks for application-wide and default limits, of which there
    # are none (a fifth of every page's time); its pass after every response writes budget
    # headers, which are off, and its teardown resets what the first pass set (together a
    # twentieth of the page's time).
    # An adapter, checked against Flask-Limiter 4.1.1, which has no switch for this: its
    # init_app registers a method of the Limiter with before_request and teardown_request, and
    # partial(Limiter.__inject_headers, limiter) with after_request.
    # tests/test_adapters.py fails if a new version registers them otherwise.
    def ours(hook: object) -> bool:
        owner = getattr(hook, "__self__", None)
        if isinstance(hook, functools.partial) and hook.args:
            owner = hook.args[0]
        return owner is not extension

    def keep_ours(hooks: dict[Any, list[Any]]) -> None:
        hooks[None] = [hook for hook in hooks.get(None, []) if ours(hook)]

    keep_ours(app.before_request_funcs)
    keep_ours(app.after_request_funcs)
    keep_ours(app.teardown_request_funcs)
