"""Per-client-IP token-bucket rate limit as plain ASGI middleware (no per-request thread hop).

The client IP is the direct peer, except when the peer is a configured trusted
proxy: then the right-most ``X-Forwarded-For`` address that is not itself a
trusted proxy is used. Anyone else's ``X-Forwarded-For`` is ignored, so a
client cannot dodge the limit by inventing addresses.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

Scope = dict[str, Any]
ASGIApp = Callable[..., Any]


class TokenBuckets:
    """``rate`` tokens per second per key, at most ``burst`` stored; LRU-bounded key count."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self._clock, self._max = rate, burst, clock, max_keys
        self._b: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """0.0 when allowed (a token is spent), else the seconds until a token is available."""
        now = self._clock()
        tokens, last = self._b.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._b[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._b[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        while len(self._b) > self._max:
            self._b.popitem(last=False)
        return wait


def _networks(proxies: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(p, strict=False) for p in proxies]


class ClientIP:
    """Resolve the client address of an ASGI scope, trusting X-Forwarded-For only from known proxies."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self._nets = _networks(trusted_proxies)

    def _trusted(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.strip())
        except ValueError:
            return False
        return any(ip in n for n in self._nets)

    def __call__(self, scope: Scope) -> str:
        peer = (scope.get("client") or ("unknown", 0))[0]
        if not self._nets or not self._trusted(peer):
            return peer
        for name, value in scope.get("headers", []):
            if name == b"x-forwarded-for":
                hops = [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
                for hop in reversed(hops):
                    if not self._trusted(hop):
                        try:
                            return str(ipaddress.ip_address(hop))
                        except ValueError:
                            return peer  # garbage from the proxy chain: fall back to the peer
                return peer
        return peer


class RateLimitMiddleware:
    """429 with Retry-After when a client IP exceeds its bucket; ``exempt`` paths are not counted."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        rate: float,
        burst: float,
        trusted_proxies: Iterable[str] = (),
        exempt: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
        stats: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.stats = stats if stats is not None else {}
        self.stats.setdefault("rate_limited", 0)
        self.buckets = TokenBuckets(rate, burst, clock)
        self.client_ip = ClientIP(trusted_proxies)
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(self.client_ip(scope))
        if wait <= 0.0:
            await self.app(scope, receive, send)
            return
        self.stats["rate_limited"] += 1
        retry = str(max(1, math.ceil(wait)))
        body = json.dumps({"error": "rate_limited", "detail": f"too many requests; retry after {retry}s"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"retry-after", retry.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"access-control-allow-origin", b"*"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
