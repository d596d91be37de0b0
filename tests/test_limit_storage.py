"""Rate limits counted in memory: the same counts, without walking every counter
100 times a second.
"""

from __future__ import annotations

import time
from typing import Any

from limits import parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from service.intake import limit_storage
from service.intake.limit_storage import SweptMemoryStorage
from service.intake.limits import limiter

CLIENTS = 50_000


class Counting(SweptMemoryStorage):
    """The swept storage, counting its sweeps."""

    def __init__(self) -> None:
        self.sweeps = 0
        super().__init__()

    def _sweep(self) -> None:
        self.sweeps += 1
        super()._sweep()


def a_flood_from_many_addresses(storage: MemoryStorage) -> None:
    """The counters 50,000 addresses leave: a minute's and an hour's each."""
    for n in range(CLIENTS):
        storage.incr(f"10.{n >> 8 & 255}.{n & 255}/minute", 60)
        storage.incr(f"10.{n >> 8 & 255}.{n & 255}/hour", 3600)


def test_memory_names_the_swept_storage_for_the_service_and_its_fallback(make_app: Any) -> None:
    make_app(RATELIMIT_STORAGE_URI="memory://", RATELIMIT_ENABLED=True)
    assert isinstance(storage_from_string("memory://"), SweptMemoryStorage)
    assert isinstance(limiter.storage, SweptMemoryStorage)
    assert isinstance(limiter._fallback_storage, SweptMemoryStorage)


def test_an_unreachable_redis_falls_back_to_the_swept_storage(make_app: Any) -> None:
    make_app(RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0", RATELIMIT_ENABLED=True)
    assert isinstance(limiter._fallback_storage, SweptMemoryStorage)


def test_a_steady_stream_of_counts_sweeps_about_once_a_second() -> None:
    storage = Counting()
    a_flood_from_many_addresses(storage)
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        storage.incr("203.0.113.7/minute", 60)
        time.sleep(0.001)
    # limits' own storage sweeps 10 ms after a count: about 200 walks over 100,000 counters.
    assert 1 <= storage.sweeps <= 4, storage.sweeps


def test_sweeping_costs_a_flood_little_of_its_time() -> None:
    # The same counts with limits' own storage and with the swept one: the process time a
    # count costs, sweeps included, while 100,000 counters are alive.
    def cpu_per_count(storage: MemoryStorage) -> float:
        a_flood_from_many_addresses(storage)
        started, cpu = time.monotonic(), time.process_time()
        counts = 0
        while time.monotonic() - started < 1.5:
            storage.incr("203.0.113.7/minute", 60)
            counts += 1
            time.sleep(0.001)
        return (time.process_time() - cpu) / counts

    own, swept = cpu_per_count(MemoryStorage()), cpu_per_count(SweptMemoryStorage())
    assert swept * 5 < own, (own, swept)


def test_the_counts_and_their_expiry_are_limits_own() -> None:
    limit = parse("3 per second")
    ours = FixedWindowRateLimiter(SweptMemoryStorage())
    theirs = FixedWindowRateLimiter(MemoryStorage())
    for strategy in (ours, theirs):
        assert [strategy.hit(limit, "client") for _ in range(4)] == [True, True, True, False]
    time.sleep(1.1)  # the window has ended: a counter read after its expiry is gone
    assert ours.hit(limit, "client") and theirs.hit(limit, "client")


def test_a_sweep_drops_the_expired_counters() -> None:
    storage = SweptMemoryStorage()
    for n in range(100):
        storage.incr(f"client-{n}", 0.05)
    time.sleep(0.1)
    storage._next_sweep = 0.0
    storage.incr("another", 60)  # a count starts the sweep that is now due
    storage.timer.join(5)
    assert set(storage.storage) == {"another"}


def test_the_sweep_share_keeps_slow_sweeps_apart() -> None:
    storage = SweptMemoryStorage()
    a_flood_from_many_addresses(storage)
    started = time.monotonic()
    storage._sweep()
    took = time.monotonic() - started
    assert storage._next_sweep >= started + took * limit_storage.SWEEP_SHARE * 0.9
