"""SubtensorChain: the ``Chain`` port on bittensor v11.

The SDK's async ``bt.Client`` runs on a private event loop in a daemon thread; every call is
wrapped in ``asyncio.wait_for`` so nothing can hang the validator (a timeout is a
``TransientError``). A dropped websocket gets one retry with a fresh client for reads. Writes
are never resent blindly: a lost answer to set-weights is settled by reading ``LastUpdate``
(moved -> confirmed; else a ``TransientError`` the loop retries later), and a second
commitment would overwrite the first and move its block.

Weights: the rate limit is checked first (no extrinsic when it would be refused), then the
``SetWeights`` intent runs, ``result.success`` is read explicitly (LESSONS 22: never truth-test
the result) and the validator's ``LastUpdate`` must have moved before the receipt says success.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import bittensor as bt
from bittensor import calls
from bittensor.error_map import ErrorCode
from bittensor.intents.weights import SetWeights

from eval.errors import TransientError
from validator.chain import (
    AlreadyCommitted,
    BlockRef,
    ChainError,
    Commitment,
    Neuron,
    NotRegistered,
    RateLimited,
    WeightsReceipt,
    check_commitment_text,
    version_key,
)

T = TypeVar("T")
ClientFactory = Callable[[str], bt.Client]
_CONNECTION_ERRORS = (bt.RpcConnectionError, bt.ConnectionNotReady, ConnectionError, OSError)


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _default_factory(network: str) -> bt.Client:
    return bt.Client(network)


class _LoopThread:
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


class SubtensorChain:
    """The contest's view of a real subtensor network, signing with ``wallet``'s hotkey."""

    def __init__(
        self,
        network: str,
        netuid: int,
        wallet: bt.Wallet,
        *,
        timeout: float = 30.0,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self.network = network
        self.netuid = netuid
        self.wallet = wallet
        self.timeout = timeout
        self._factory = client_factory or _default_factory
        self._loop = _LoopThread()
        self._client: bt.Client | None = None

    @property
    def hotkey(self) -> str:
        return str(self.wallet.hotkey.ss58_address)

    # -- plumbing -----------------------------------------------------------------------------

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                self._loop.run(client.close(), 5.0)
            except Exception:  # noqa: BLE001 - a broken socket may fail to close; it is discarded anyway
                pass

    def _call(self, what: str, op: Callable[[bt.Client], Awaitable[T]], *, retry: bool = True) -> T:
        """Run ``op`` on a connected client with a timeout; one reconnect on a dropped connection."""
        for attempt in (1, 2):
            try:
                if self._client is None:
                    self._client = self._loop.run(self._factory(self.network).connect(), self.timeout)
                return self._loop.run(_awaited(op(self._client)), self.timeout)
            except TimeoutError as exc:
                self._drop_client()
                raise TransientError(f"{what} on {self.network} timed out after {self.timeout:.0f}s") from exc
            except _CONNECTION_ERRORS as exc:
                self._drop_client()
                if attempt == 2 or not retry:
                    raise TransientError(f"{what} on {self.network} failed: connection lost ({exc})") from exc
            except bt.BittensorError as exc:  # ChainError, PolicyError, bad arguments: definite answers
                raise ChainError(f"{what} on netuid {self.netuid} was refused: {exc}") from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._drop_client()
        self._loop.stop()

    # -- reads --------------------------------------------------------------------------------

    def head(self) -> BlockRef:
        async def op(client: bt.Client) -> BlockRef:
            number = await client.block()
            return BlockRef(number=number, hash=await self._hash_of(client, number))

        return self._call("reading the head block", op)

    def block_hash(self, number: int) -> str:
        return self._call(f"reading block {number}", lambda client: self._hash_of(client, number))

    @staticmethod
    async def _hash_of(client: bt.Client, number: int) -> str:
        info = await client.block_info(number)
        if info is None or not info.hash:
            raise ChainError(f"Block {number} is not known to the chain.")
        return info.hash.lower()

    def neurons(self) -> list[Neuron]:
        async def op(client: bt.Client) -> list[Neuron]:
            graph = await client.subnets.metagraph(self.netuid, commitments=False)
            if graph is None:
                raise ChainError(f"Subnet {self.netuid} does not exist on {self.network}.")
            return [
                Neuron(
                    uid=n.uid, hotkey=n.hotkey, coldkey=n.coldkey, stake=float(n.total_stake.amount),
                    validator_permit=bool(n.validator_permit), incentive=float(n.incentive),
                    emission=float(n.emission.amount), last_update=int(n.last_update),
                )
                for n in sorted(graph.neurons, key=lambda n: n.uid)
            ]

        return self._call("reading the metagraph", op)

    def commitments(self) -> dict[str, Commitment]:
        async def op(client: bt.Client) -> dict[str, Commitment]:
            found = await client.subnets.commitments(self.netuid)
            return {
                hotkey: Commitment(hotkey=hotkey, block=int(c.block), text=c.value)
                for hotkey, c in found.items()
                if c.value is not None  # sealed: nothing readable yet
            }

        return self._call("reading commitments", op)

    def weights_rate_limit(self) -> int:
        return self._call(
            "reading the weights rate limit", lambda client: client.hyperparameters.weights_rate_limit(self.netuid)
        )

    async def _uid_and_last(self, client: bt.Client, hotkey: str) -> tuple[int | None, int]:
        """The hotkey's uid and its LastUpdate, read at one pinned block."""
        block = await client.block()
        uid = await client.query(("SubtensorModule", "Uids"), [self.netuid, hotkey], block=block)
        if uid is None:
            return None, 0
        last = await client.query(("SubtensorModule", "LastUpdate"), [self.netuid], block=block)
        uid = int(uid)
        return uid, int(last[uid]) if isinstance(last, (list, tuple)) and uid < len(last) else 0

    def last_weights_block(self, hotkey: str) -> int | None:
        uid, last = self._call("reading last update", lambda client: self._uid_and_last(client, hotkey))
        return last if uid is not None and last > 0 else None

    def is_registered(self, hotkey: str) -> bool:
        uid = self._call("reading registration", lambda client: client.neurons.uid(hotkey, self.netuid))
        return uid is not None

    # -- signed writes ------------------------------------------------------------------------

    def set_weights(self, uids: list[int], weights: list[float]) -> WeightsReceipt:
        if len(uids) != len(weights) or not uids:
            raise ChainError(f"uids and weights must be equal-length and non-empty; got {uids} / {weights}.")
        hotkey = self.hotkey
        head = self._call("reading the head block", lambda client: client.block())
        uid, before = self._call("reading last update", lambda client: self._uid_and_last(client, hotkey))
        if uid is None:
            return WeightsReceipt(False, f"Hotkey {hotkey} is not registered on netuid {self.netuid}.", None,
                                  "not_registered")
        limit = self.weights_rate_limit()
        if before > 0 and head - before < limit:
            return WeightsReceipt(False, f"Weights were set {head - before} blocks ago; the rate limit is "
                                         f"{limit} blocks.", None, "rate_limited")
        intent = SetWeights(netuid=self.netuid, uids=list(uids), weights=list(weights), version_key=version_key())
        try:
            result = self._call("setting weights", lambda client: client.execute(intent, self.wallet), retry=False)
        except TransientError:
            # The answer was lost, not necessarily the extrinsic: never resend blindly (a duplicate would
            # only meet the rate limit); ask the chain whether LastUpdate moved instead.
            _, after = self._call("confirming weights", lambda client: self._uid_and_last(client, hotkey))
            if after > before:
                return WeightsReceipt(True, f"Weights confirmed on chain at block {after} (the answer was lost).",
                                      after)
            raise
        except ChainError as exc:
            cause = exc.__cause__
            code = getattr(cause, "code", None)
            reason = {ErrorCode.RATE_LIMITED: "rate_limited", ErrorCode.NOT_REGISTERED: "not_registered"}
            return WeightsReceipt(False, str(exc), None, reason.get(code, "rejected") if code else "rejected")
        if result.success is not True:
            detail = result.error.message if result.error is not None else result.message
            return WeightsReceipt(False, f"The chain rejected the weights: {detail or 'no reason given'}.", None,
                                  "rejected")
        _, after = self._call("confirming weights", lambda client: self._uid_and_last(client, hotkey))
        if after <= before:
            return WeightsReceipt(False, f"The extrinsic reported success but LastUpdate for uid {uid} did not move "
                                         f"(still {before}).", None, "not_confirmed")
        return WeightsReceipt(True, f"Weights set and confirmed at block {after}.", after)

    def commit(self, text: str) -> int:
        """Publish ``text`` as this hotkey's commitment; returns the inclusion block when known.

        The block is best-effort (from the extrinsic id, else the head after inclusion):
        poll ``commitments()`` for the block the chain records.
        """
        data = check_commitment_text(text)
        hotkey = self.hotkey
        if not self.is_registered(hotkey):
            raise NotRegistered(f"Hotkey {hotkey} is not registered on netuid {self.netuid}; register first.")
        existing = self._call("reading commitment", lambda client: client.identity.commitment(self.netuid, hotkey))
        if existing is not None:
            raise AlreadyCommitted(f"Hotkey {hotkey} already has a commitment on netuid {self.netuid}; "
                                   "the first one counts, so it is not overwritten.")
        call = commitment_call(self.netuid, data)
        result = self._call(
            "committing", lambda client: client.submit_call(call, self.wallet, signer="hotkey"), retry=False
        )
        if result.success is not True:
            error = result.error
            message = (error.message if error is not None else result.message) or "no reason given"
            code, name = (error.code, error.name) if error is not None else (None, None)
            if code == ErrorCode.RATE_LIMITED or name == "SpaceLimitExceeded":
                raise RateLimited(f"The chain refused the commitment for now: {message}.")
            if code == ErrorCode.NOT_REGISTERED or name == "AccountNotAllowedCommit":
                raise NotRegistered(f"The chain refused the commitment: {message}.")
            raise ChainError(f"The chain rejected the commitment: {message}.")
        if result.extrinsic_id and result.extrinsic_id.split("-")[0].isdigit():
            return int(result.extrinsic_id.split("-")[0])
        return self._call("reading the head block", lambda client: client.block())


def commitment_call(netuid: int, data: bytes) -> Any:
    """``Commitments.set_commitment`` with one ``Raw<N>`` field, the shape the SDK's reader decodes."""
    return calls.Commitments.set_commitment(netuid=netuid, info={"fields": [{f"Raw{len(data)}": "0x" + data.hex()}]})
