"""A record of at most so many entries, safe across threads; the oldest is forgotten first."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# How many refusals a process remembers. A robot replaying one post is the common case; one
# that sends a new post each time pays the full checks and only pushes out its own older ones.
REFUSALS_HELD = 2048


class Bounded(Generic[K, V]):
    """Values by key, at most `most` of them: adding one more forgets the oldest."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.entries: dict[K, V] = {}
        self.lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value under `key`, or None."""
        return self.entries.get(key)

    def add(self, key: K, value: V) -> None:
        """Keep `value` under `key`; forget the oldest entry once `most` are held."""
        with self.lock:
            if key not in self.entries and len(self.entries) >= self.most:
                del self.entries[next(iter(self.entries))]
            self.entries[key] = value
