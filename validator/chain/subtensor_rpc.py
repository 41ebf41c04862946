"""Calling bittensor v11's async client from blocking code, with every SDK failure typed for the loop.

The SDK's ``bt.Client`` runs on a private event loop in a daemon thread; every await is bounded
by ``asyncio.wait_for``, so nothing can hang the validator. What the SDK can raise, and what it
becomes here:

- ``bt.RpcPolicyError`` (the endpoint's HTTP 429/403 policy answer) -> ``ChainThrottled``, never
  retried here: the SDK's transport already rotated endpoints and backed off before giving up,
  and an immediate retry would only add to the traffic that triggered the refusal.
- a timeout (``TimeoutError``; on Python 3.10 also ``asyncio.TimeoutError``, a different class
  there) -> ``ChainUnavailable``.
- a dropped connection (``bt.RpcConnectionError``, ``bt.ConnectionNotReady``, ``ConnectionError``,
  ``OSError``) -> one retry on a fresh client when the caller allows it (reads), else
  ``ChainUnavailable``. Writes are never resent blindly: their caller settles a lost answer
  by reading the chain.
- any other ``bt.BittensorError`` (``bt.ChainError``, which also carries the node's substrate
  errors, ``PolicyError``, bad arguments) -> ``ChainError``: a definite answer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import bittensor as bt

from validator.chain.port import ChainError, ChainThrottled, ChainUnavailable

T = TypeVar("T")
ClientFactory = Callable[[str], bt.Client]
CONNECTION_ERRORS = (bt.RpcConnectionError, bt.ConnectionNotReady, ConnectionError, OSError)


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


def default_factory(network: str) -> bt.Client:
    return bt.Client(network)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """An endpoint's ``Retry-After`` hint in seconds: a number of seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class LoopThread:
    """A private asyncio loop on a daemon thread, so blocking callers can bound every await."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="subtensor-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self.loop)
        try:
            return future.result(timeout + 5.0)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:.0f}s") from None

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


class RpcRunner:
    """One lazily connected client and the error mapping above; ``call`` is the only way in."""

    def __init__(self, network: str, netuid: int, timeout: float, factory: ClientFactory | None = None) -> None:
        self.network, self.netuid, self.timeout = network, netuid, timeout
        self._factory = factory or default_factory
        self._loop = LoopThread()
        self._client: bt.Client | None = None

    def drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                self._loop.run(client.close(), 5.0)
            except Exception:  # noqa: BLE001 - a broken socket may fail to close; it is discarded anyway
                pass

    def close(self) -> None:
        self.drop_client()
        self._loop.stop()

    def call(
        self, what: str, op: Callable[[bt.Client], Awaitable[T]], *, retry: bool = True, timeout: float | None = None
    ) -> T:
        """Run ``op`` on a connected client within ``timeout`` (default: the read timeout)."""
        budget = self.timeout if timeout is None else timeout
        for attempt in (1, 2):
            try:
                if self._client is None:
                    self._client = self._loop.run(self._factory(self.network).connect(), self.timeout)
                return self._loop.run(_awaited(op(self._client)), budget)
            except bt.RpcPolicyError as exc:  # before the connection errors: it is one of them
                self.drop_client()
                hint = retry_after_seconds(exc.retry_after)
                raise ChainThrottled(
                    f"{what} on {self.network}: the RPC endpoint is rate limiting this validator ({exc}); backing off",
                    hint,
                ) from exc
            # One class on Python >= 3.11, two on 3.10 (where ``asyncio.wait_for`` raises its own):
            # both are named, looked up when raised, so a timeout can never escape untyped.
            except (TimeoutError, asyncio.TimeoutError) as exc:  # noqa: UP041
                self.drop_client()
                raise ChainUnavailable(f"{what} on {self.network} timed out after {budget:.0f}s") from exc
            except CONNECTION_ERRORS as exc:
                self.drop_client()
                if attempt == 2 or not retry:
                    raise ChainUnavailable(f"{what} on {self.network} failed: connection lost ({exc})") from exc
            except bt.BittensorError as exc:
                raise ChainError(f"{what} on netuid {self.netuid} was refused: {exc}") from exc
        raise AssertionError("unreachable")
