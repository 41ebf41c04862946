"""Subnet token price and emission, read from the chain through bittensor v11 (cached).

The reader is injectable: ``BittensorPriceReader`` for a real network,
``UnavailablePriceReader`` for the sim chain or when nothing is configured. A
failed or slow read never fails the API: the answer has null fields and a short
reason, and is cached like a good one so a poll storm cannot hammer the chain.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

RAO_PER_TAO = 1_000_000_000


@dataclass(frozen=True)
class PriceQuote:
    price_tao_per_alpha: float | None
    emission_tao_per_block: float | None
    block: int | None = None
    reason: str | None = None


class PriceReader(Protocol):
    def read(self, netuid: int) -> PriceQuote: ...


class UnavailablePriceReader:
    """For chains without a token (SimChain) or no configured network."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def read(self, netuid: int) -> PriceQuote:
        return PriceQuote(None, None, None, self.reason)


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class BittensorPriceReader:
    """Spot alpha price (``prices.alpha_price``) and per-block TAO emission (``SubnetTaoInEmission``)."""

    def __init__(self, network: str, timeout_s: float = 10.0, client_factory: Callable[[str], Any] | None = None):
        self.network = network
        self.timeout_s = timeout_s
        self._factory = client_factory

    async def _read(self, netuid: int) -> PriceQuote:
        if self._factory is None:
            import bittensor as bt  # heavy import: only when a real network is configured

            client = bt.Client(self.network)
        else:
            client = self._factory(self.network)
        await client.connect()
        try:
            price = await client.prices.alpha_price(netuid)
            emission = await client.query(("SubtensorModule", "SubnetTaoInEmission"), [netuid])
            block = await client.block()
        finally:
            await client.close()
        tao = _finite(price.get("tao_per_alpha")) if isinstance(price, dict) else None
        em = _finite(emission)
        return PriceQuote(
            tao,
            em / RAO_PER_TAO if em is not None else None,
            _int_or_none(block),
            None if tao is not None else "price not reported by the chain",
        )

    def read(self, netuid: int) -> PriceQuote:
        try:
            return asyncio.run(asyncio.wait_for(self._read(netuid), self.timeout_s))
        except TimeoutError:
            return PriceQuote(None, None, None, f"chain did not answer within {self.timeout_s:.0f}s")
        except Exception as exc:  # noqa: BLE001 - any SDK failure becomes a reason, never a 500
            return PriceQuote(None, None, None, f"chain read failed ({type(exc).__name__})")


def _int_or_none(x: Any) -> int | None:
    try:
        return int(x) if x is not None else None
    except (TypeError, ValueError):
        return None


def reader_for(network: str) -> PriceReader:
    if network in ("sim", "", "none"):
        return UnavailablePriceReader("sim chain: no subnet token price or emission")
    return BittensorPriceReader(network)


class PriceService:
    """Caches the reader's answer for ``ttl_s`` (one chain read at a time)."""

    def __init__(
        self, reader: PriceReader, netuid: int, ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.reader, self.netuid, self.ttl_s, self._clock = reader, netuid, ttl_s, clock
        self._lock = threading.Lock()
        self._cached: tuple[float, PriceQuote, float] | None = None
        self.reads = 0

    def get(self) -> tuple[PriceQuote, float]:
        """(quote, wall-clock time it was fetched)."""
        with self._lock:
            if self._cached and self._clock() - self._cached[0] < self.ttl_s:
                return self._cached[1], self._cached[2]
            self.reads += 1
            quote = self.reader.read(self.netuid)
            self._cached = (self._clock(), quote, time.time())
            return quote, self._cached[2]
