"""A tiny TTL cache of rendered response bodies, with single-flight refills.

Why: dashboards poll; with a short TTL every endpoint touches SQLite at most once
per TTL per worker, whatever the request rate. Values are the final JSON bytes,
so a hit costs no query, no validation and no serialisation. When a refill fails
(the store is briefly unreadable) the last good value is served while it is not
older than ``stale_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from anyio import to_thread


@dataclass
class Entry:
    value: bytes
    at: float


class TTLCache:
    """Per-key TTL cache; the producer is a blocking function run in a worker thread."""

    def __init__(
        self,
        ttl_s: float = 2.0,
        stale_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 4096,
    ) -> None:
        self.ttl_s = ttl_s
        self.stale_s = stale_s
        self._clock = clock
        self._max = max_entries
        self._entries: dict[str, Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.hits = 0
        self.misses = 0

    def peek(self, key: str, ttl_s: float | None = None) -> bytes | None:
        e = self._entries.get(key)
        if e is not None and self._clock() - e.at < (self.ttl_s if ttl_s is None else ttl_s):
            return e.value
        return None

    async def get(self, key: str, producer: Callable[[], bytes], ttl_s: float | None = None) -> bytes:
        """The cached value if fresh, else one refill shared by every concurrent caller."""
        hit = self.peek(key, ttl_s)
        if hit is not None:
            self.hits += 1
            return hit
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self.peek(key, ttl_s)  # filled while we waited
            if hit is not None:
                self.hits += 1
                return hit
            self.misses += 1
            try:
                value = await to_thread.run_sync(producer)
            except Exception:
                old = self._entries.get(key)
                if old is not None and self._clock() - old.at < self.stale_s:
                    return old.value
                raise
            if len(self._entries) >= self._max:
                self._entries.clear()
                self._locks = {key: lock}
            self._entries[key] = Entry(value, self._clock())
            return value
