"""api/ratelimit.py: which client IP is believed (forwarded headers only from trusted proxies)."""

from __future__ import annotations

import pytest

from api.ratelimit import ClientIP, TokenBuckets


def test_client_ip_trusts_forwarded_for_only_from_configured_proxies():
    scope = {"client": ("10.0.0.5", 1), "headers": [(b"x-forwarded-for", b"198.51.100.1, 203.0.113.7")]}
    assert ClientIP()(scope) == "10.0.0.5"
    assert ClientIP(["10.0.0.0/24"])(scope) == "203.0.113.7"
    assert ClientIP(["10.0.0.5", "203.0.113.7"])(scope) == "198.51.100.1"
    assert ClientIP(["127.0.0.1"])(scope) == "10.0.0.5"
    assert ClientIP(["10.0.0.5"])({"client": ("10.0.0.5", 1), "headers": [(b"x-forwarded-for", b"junk")]}) == "10.0.0.5"
    now = [0.0]
    b = TokenBuckets(rate=2.0, burst=2.0, clock=lambda: now[0])
    assert [b.take("a"), b.take("a")] == [0.0, 0.0] and b.take("a") == pytest.approx(0.5)
    assert b.take("b") == 0.0  # buckets are per client
    now[0] = 0.5
    assert b.take("a") == 0.0
