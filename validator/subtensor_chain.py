"""SubtensorChain: the ``Chain`` port on bittensor v11.

Calls go through ``validator.subtensor_rpc.RpcRunner`` (a bounded await for each, SDK errors typed
for the loop). Reads get ``timeout`` (30 s); writes get ``write_timeout`` (90 s).

Finality: writes wait for **inclusion**, not finalization (docs/decisions.md). Inclusion takes a
block or two (12-24 s); finality usually follows a few blocks later but can stall for minutes,
and a budget sized for that would leave the loop blind for as long. Nothing here trusts the
inclusion alone: weights count once ``weights_of`` shows them, a commitment once
``commitments()`` (read at the **finalized** block, so a fork can never make up a submission)
shows it. A lost answer to a write is never resent blindly: it is settled by reading the chain
(``LastUpdate`` moved for weights; the hotkey's commitment for a commit).

Weights: before anything is signed, the validator's standing is read at one block (registered,
validator permit, stake against ``StakeThreshold``, the rate limit): commit-reveal commits are not
checked for permit or stake by the chain, and a reveal that fails is dropped silently, so a
validator without them would "succeed" forever. Then the ``SetWeights`` intent runs (a direct set,
or a timelocked commit when the subnet runs commit-reveal) and ``result.success`` is read
explicitly (LESSONS 22). A commit's receipt says when its reveal is due; the loop confirms it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
    ChainThrottled,
    Commitment,
    Neuron,
    NotRegistered,
    RateLimited,
    WeightsReceipt,
    check_commitment_text,
    normalized_weights,
    version_key,
)
from validator.subtensor_rpc import ClientFactory, RpcRunner

T = TypeVar("T")
_SUB = "SubtensorModule"
_INCLUSION = {"wait_for_inclusion": True, "wait_for_finalization": False}


@dataclass(frozen=True)
class Standing:
    """This validator on the subnet at one block: what decides whether weights may be sent."""

    block: int
    uid: int | None
    permit: bool
    stake: float
    min_stake: float
    last_update: int
    rate_limit: int
    commit_reveal: bool
    reveal_blocks: int


class SubtensorChain:
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

    async def _min_stake(self, client: bt.Client, block: int) -> float:
        threshold, owner = await asyncio.gather(
            client.query((_SUB, "StakeThreshold"), None, block=block),
            client.query((_SUB, "SubnetOwnerHotkey"), [self.netuid], block=block),
        )
        return 0.0 if owner is not None and str(owner) == self.hotkey else int(threshold or 0) / 1e9

    def weights_min_stake(self) -> float:
        async def op(client: bt.Client) -> float:
            return await self._min_stake(client, await client.block())

        return self._call("reading the stake threshold", op)

    async def _uid_and_last(self, client: bt.Client, hotkey: str) -> tuple[int | None, int]:
        """The hotkey's uid and its LastUpdate, read at one pinned block."""
        block = await client.block()
        uid = await client.query((_SUB, "Uids"), [self.netuid, hotkey], block=block)
        if uid is None:
            return None, 0
        last = await client.query((_SUB, "LastUpdate"), [self.netuid], block=block)
        uid = int(uid)
        return uid, int(last[uid]) if isinstance(last, (list, tuple)) and uid < len(last) else 0

    def last_weights_block(self, hotkey: str) -> int | None:
        uid, last = self._call("reading last update", lambda client: self._uid_and_last(client, hotkey))
        return last if uid is not None and last > 0 else None

    def weights_of(self, hotkey: str) -> dict[int, float] | None:
        """The hotkey's row of ``SubtensorModule.Weights`` (mechanism 0), as fractions of the row."""

        async def op(client: bt.Client) -> dict[int, float] | None:
            block = await client.block()
            uid = await client.query((_SUB, "Uids"), [self.netuid, hotkey], block=block)
            if uid is None:
                return None
            row = await client.query((_SUB, "Weights"), [self.netuid, int(uid)], block=block) or []
            return normalized_weights([int(t) for t, _ in row], [float(v) for _, v in row])

        return self._call("reading weights", op)

    def is_registered(self, hotkey: str) -> bool:
        uid = self._call("reading registration", lambda client: client.neurons.uid(hotkey, self.netuid))
        return uid is not None

    async def _standing(self, client: bt.Client) -> Standing:
        block = await client.block()
        graph, min_stake, limit, enabled, period, tempo = await asyncio.gather(
            client.subnets.metagraph(self.netuid, block, commitments=False),
            self._min_stake(client, block),
            client.query((_SUB, "WeightsSetRateLimit"), [self.netuid], block=block),
            client.query((_SUB, "CommitRevealWeightsEnabled"), [self.netuid], block=block),
            client.query((_SUB, "RevealPeriodEpochs"), [self.netuid], block=block),
            client.query((_SUB, "Tempo"), [self.netuid], block=block),
        )
        me = graph.by_hotkey(self.hotkey) if graph is not None else None
        # a commit made in epoch e is revealed at the start of epoch e + period; one epoch of slack
        reveal_blocks = (int(period or 1) + 1) * (int(tempo or 360) + 1)
        return Standing(block, me.uid if me else None, bool(me and me.validator_permit),
                        float(me.total_stake.amount) if me else 0.0, min_stake, int(me.last_update) if me else 0,
                        int(limit or 0), bool(enabled), reveal_blocks)  # fmt: skip

    # -- signed writes ------------------------------------------------------------------------

    def set_weights(self, uids: list[int], weights: list[float]) -> WeightsReceipt:
        if len(uids) != len(weights) or not uids:
            raise ChainError(f"uids and weights must be equal-length and non-empty; got {uids} / {weights}.")
        st = self._call("reading this validator's standing", self._standing)
        refusal = standing_refusal(st, self.hotkey, self.netuid)
        if refusal is not None:
            return refusal
        intent = SetWeights(netuid=self.netuid, uids=list(uids), weights=list(weights), version_key=version_key())
        try:
            result = self._write("setting weights", lambda client: client.execute(intent, self.wallet, **_INCLUSION))
        except ChainThrottled:
            raise  # asking again now would add to the 429; the next try's standing check sees LastUpdate
        except TransientError:
            # The answer was lost, not necessarily the extrinsic: never resend blindly (a duplicate would
            # only meet the rate limit); a set or a commit both move LastUpdate, so ask the chain.
            _, after = self._call("settling a lost weights answer", lambda c: self._uid_and_last(c, self.hotkey))
            if after > st.last_update:
                return _accepted(st, after, " (the answer was lost, but LastUpdate moved)")
            raise
        except ChainError as exc:
            return WeightsReceipt(False, str(exc), None, _reason(getattr(exc.__cause__, "name", None),
                                                                 getattr(exc.__cause__, "code", None)))  # fmt: skip
        if result.success is not True:
            error = result.error
            detail = (error.message if error is not None else result.message) or "no reason given"
            return WeightsReceipt(False, f"The chain rejected the weights: {detail}.", None,
                                  _reason(error.name, error.code) if error is not None else "rejected")  # fmt: skip
        block = _inclusion_block(result)
        if block is None:
            block = self._call("reading the head block", lambda client: client.block())
        rounds = f" (drand round {result.data['reveal_round']})" if "reveal_round" in result.data else ""
        return _accepted(st, block, rounds)

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
            raise AlreadyCommitted(f"Hotkey {hotkey} already has a commitment on netuid {self.netuid}; a new one "
                                   "would replace it and withdraw the submission it holds, so it is not sent.")
        call = commitment_call(self.netuid, data)
        try:
            result = self._write("committing", lambda client: client.submit_call(
                call, self.wallet, signer="hotkey", **_INCLUSION))  # fmt: skip
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
        block = _inclusion_block(result)
        return block if block is not None else self._call("reading the head block", lambda client: client.block())


def standing_refusal(st: Standing, hotkey: str, netuid: int) -> WeightsReceipt | None:
    """Why weights must not be sent now (a failed receipt), or None: nothing is signed when refused."""
    where = f"Hotkey {hotkey} on netuid {netuid}"
    if st.uid is None:
        return WeightsReceipt(False, f"{where} is not registered.", None, "not_registered")
    if not st.permit:
        return WeightsReceipt(False, f"{where} has no validator permit; weights would not count.", None, "no_permit")
    if st.stake < st.min_stake:
        return WeightsReceipt(False, f"{where} has {st.stake:g} stake; weights need {st.min_stake:g} "
                                     "(StakeThreshold).", None, "low_stake")  # fmt: skip
    if st.last_update > 0 and st.block - st.last_update < st.rate_limit:
        return WeightsReceipt(False, f"Weights were set {st.block - st.last_update} blocks ago; the rate limit is "
                                     f"{st.rate_limit} blocks.", None, "rate_limited")  # fmt: skip
    return None


def _accepted(st: Standing, block: int, note: str) -> WeightsReceipt:
    if st.commit_reveal:
        reveal_by = block + st.reveal_blocks
        return WeightsReceipt(True, f"Weights committed at block {block}{note}; the chain reveals them by about "
                                    f"block {reveal_by}.", block, committed=True, reveal_by=reveal_by)  # fmt: skip
    return WeightsReceipt(True, f"Weights set at block {block}{note}.", block, reveal_by=block)


def _reason(name: str | None, code: Any) -> str:
    """Our receipt reason for an SDK/chain error name or code."""
    named = {"NeuronNoValidatorPermit": "no_permit", "NotEnoughStakeToSetWeights": "low_stake"}
    if name in named:
        return named[name]
    return {ErrorCode.RATE_LIMITED: "rate_limited", ErrorCode.NOT_REGISTERED: "not_registered"}.get(code, "rejected")


def _inclusion_block(result: bt.ExtrinsicResult) -> int | None:
    head = (result.extrinsic_id or "").split("-")[0]
    return int(head) if head.isdigit() else None


def commitment_call(netuid: int, data: bytes) -> Any:
    """``Commitments.set_commitment`` with one ``Raw<N>`` field, the shape the SDK's reader decodes."""
    return calls.Commitments.set_commitment(netuid=netuid, info={"fields": [{f"Raw{len(data)}": "0x" + data.hex()}]})
