"""SubtensorChain: the ``Chain`` port on bittensor v11.

Calls go through ``validator.chain.subtensor_rpc.RpcRunner`` (a bounded await for each, SDK errors typed
for the loop). Reads get ``timeout`` (30 s); writes get ``write_timeout`` (90 s).

Finality: writes wait for **inclusion**, not finalization (docs/decisions.md). Inclusion takes a
block or two (12-24 s); finality usually follows a few blocks later but can stall for minutes,
and a budget sized for that would leave the loop blind for as long. Nothing here trusts the
inclusion alone: weights count once ``weights_of`` shows them, a commitment once
``commitments()`` (read at the **finalized** block, so a fork can never make up a submission)
shows it. A lost answer to a write is never resent blindly: it is settled by reading the chain
(``LastUpdate`` moved for weights; the hotkey's commitment for a commit).

Weights (the standing check, ``SetWeights``, commit-reveal) live in ``validator.chain.subtensor_weights``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import bittensor as bt
from bittensor import calls
from bittensor.error_map import ErrorCode

from eval.errors import TransientError
from validator.chain.port import (
    AlreadyCommitted,
    BlockRef,
    ChainError,
    ChainThrottled,
    Commitment,
    Neuron,
    NotRegistered,
    RateLimited,
    check_commitment_text,
)
from validator.chain.subtensor_rpc import ClientFactory, RpcRunner
from validator.chain.subtensor_weights import INCLUSION, SubtensorWeights, inclusion_block

T = TypeVar("T")


class SubtensorChain(SubtensorWeights):
    """The contest's view of a real subtensor network, signing with ``wallet``'s hotkey."""

    def __init__(
        self,
        network: str,
        netuid: int,
        wallet: bt.Wallet,
        *,
        timeout: float = 30.0,
        write_timeout: float = 90.0,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self.network = network
        self.netuid = netuid
        self.wallet = wallet
        self.timeout = timeout
        self.write_timeout = write_timeout
        self._rpc = RpcRunner(network, netuid, timeout, client_factory)

    @property
    def hotkey(self) -> str:
        return str(self.wallet.hotkey.ss58_address)

    def _call(self, what: str, op: Callable[[bt.Client], Awaitable[T]], *, retry: bool = True) -> T:
        return self._rpc.call(what, op, retry=retry)

    def _write(self, what: str, op: Callable[[bt.Client], Awaitable[T]]) -> T:
        return self._rpc.call(what, op, retry=False, timeout=self.write_timeout)

    def close(self) -> None:
        self._rpc.close()

    # -- reads --------------------------------------------------------------------------------

    def head(self) -> BlockRef:
        async def op(client: bt.Client) -> BlockRef:
            number = await client.block()
            return BlockRef(number=number, hash=await self._hash_of(client, number))

        return self._call("reading the head block", op)

    def block_number(self) -> int:
        return self._call("reading the block number", lambda client: client.block())

    def block_hash(self, number: int) -> str:
        return self._call(f"reading block {number}'s hash", lambda client: self._hash_of(client, number))

    def finalized_block_number(self) -> int:
        return self._call("reading the finalized block number", lambda client: client.finalized_block())

    def final_block_hash(self, number: int) -> str | None:
        async def op(client: bt.Client) -> str | None:
            if number > await client.finalized_block():
                return None
            return await self._hash_of(client, number)

        return self._call(f"reading final block {number}'s hash", op)

    @staticmethod
    async def _hash_of(client: bt.Client, number: int) -> str:
        """The hash RPC (``chain_getBlockHash``) alone: ``block_info`` would fetch and decode the whole block.

        The SDK serves that RPC on its ``Substrate`` backend only (``Client`` has no public wrapper).
        """
        found = await client._substrate.block_hash(number)
        if not found or not isinstance(found, str) or int(found, 16) == 0:
            raise ChainError(f"Block {number} is not known to the chain.")
        return found.lower()

    def weight_rows(self) -> dict[int, dict[int, float]]:
        async def op(client: bt.Client) -> dict[int, dict[int, float]]:
            rows = await client.weights.weights(self.netuid)
            return {int(v): {int(u): float(w) for u, w in row.items() if w > 0} for v, row in rows.items() if row}

        return self._call("reading the weight rows", op)

    def neurons(self) -> list[Neuron]:
        async def op(client: bt.Client) -> list[Neuron]:
            graph = await client.subnets.metagraph(self.netuid, commitments=False)
            if graph is None:
                raise ChainError(f"Subnet {self.netuid} does not exist on {self.network}.")
            return [
                Neuron(
                    uid=n.uid,
                    hotkey=n.hotkey,
                    coldkey=n.coldkey,
                    stake=float(n.total_stake.amount),
                    validator_permit=bool(n.validator_permit),
                    incentive=float(n.incentive),
                    emission=float(n.emission.amount),
                    last_update=int(n.last_update),
                    registered_at=int(n.block_at_registration),
                )
                for n in sorted(graph.neurons, key=lambda n: n.uid)
            ]

        return self._call("reading the metagraph", op)

    def commitments(self) -> dict[str, Commitment]:
        async def op(client: bt.Client) -> dict[str, Commitment]:
            final = await client.finalized_block()  # a fork's commitment never becomes a submission
            found = await client.subnets.commitments(self.netuid, block=final)
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

    def is_registered(self, hotkey: str) -> bool:
        uid = self._call("reading registration", lambda client: client.neurons.uid(hotkey, self.netuid))
        return uid is not None

    # -- signed writes ------------------------------------------------------------------------

    def commit(self, text: str, *, replace: bool = False) -> int:
        """Publish ``text`` as this hotkey's commitment; returns the inclusion block when known.

        The block is best-effort (from the extrinsic id, else the head after inclusion):
        poll ``commitments()`` for the block the chain records.
        """
        data = check_commitment_text(text)
        hotkey = self.hotkey
        if not self.is_registered(hotkey):
            raise NotRegistered(f"Hotkey {hotkey} is not registered on netuid {self.netuid}; register first.")
        existing = self._call("reading commitment", lambda client: client.identity.commitment(self.netuid, hotkey))
        if existing is not None and not replace:
            raise AlreadyCommitted(
                f"Hotkey {hotkey} already has a commitment on netuid {self.netuid}; a new one "
                "would replace it and withdraw the submission it holds, so it is not sent."
            )
        call = commitment_call(self.netuid, data)
        try:
            result = self._write(
                "committing", lambda client: client.submit_call(call, self.wallet, signer="hotkey", **INCLUSION)
            )
        except ChainThrottled:
            raise  # not now; the caller reads the commitments back later
        except TransientError:
            seen = self._call("settling a lost commit answer", lambda c: c.identity.commitment(self.netuid, hotkey))
            if seen is not None and seen.data == text and (existing is None or seen.block > existing.block):
                return int(seen.block)  # the write landed; only its answer was lost
            raise
        if result.success is not True:
            error = result.error
            message = (error.message if error is not None else result.message) or "no reason given"
            code, name = (error.code, error.name) if error is not None else (None, None)
            if code == ErrorCode.RATE_LIMITED or name == "SpaceLimitExceeded":
                raise RateLimited(f"The chain refused the commitment for now: {message}.")
            if code == ErrorCode.NOT_REGISTERED or name == "AccountNotAllowedCommit":
                raise NotRegistered(f"The chain refused the commitment: {message}.")
            raise ChainError(f"The chain rejected the commitment: {message}.")
        block = inclusion_block(result)
        return block if block is not None else self._call("reading the head block", lambda client: client.block())


def commitment_call(netuid: int, data: bytes) -> Any:
    """``Commitments.set_commitment`` with one ``Raw<N>`` field, the shape the SDK's reader decodes."""
    return calls.Commitments.set_commitment(netuid=netuid, info={"fields": [{f"Raw{len(data)}": "0x" + data.hex()}]})
