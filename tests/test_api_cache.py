"""api/cache.py: the TTL cache refills once for concurrent misses and serves stale bytes on error."""

from __future__ import annotations

import asyncio
import time

import pytest

from api.cache import TTLCache


def test_ttl_cache_single_flight_and_stale_on_error():
    asyncio.run(_ttl_cache_checks())


async def _ttl_cache_checks() -> None:
    now = [0.0]
    cache = TTLCache(ttl_s=2.0, stale_s=10.0, clock=lambda: now[0])
    n = []

    def produce() -> bytes:
        n.append(1)
        time.sleep(0.05)
        return b"v%d" % len(n)

    got = await asyncio.gather(*[cache.get("k", produce) for _ in range(20)])
    assert set(got) == {b"v1"} and len(n) == 1
    now[0] = 3.0
    assert await cache.get("k", produce) == b"v2"

    def broken() -> bytes:
        raise OSError("db locked")

    now[0] = 6.0
    assert await cache.get("k", broken) == b"v2"  # stale but recent: served
    now[0] = 20.0
    with pytest.raises(OSError):
        await cache.get("k", broken)
