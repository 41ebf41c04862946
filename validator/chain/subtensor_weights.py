"""SubtensorChain's weights: the validator's standing, the ``SetWeights`` write and the reads that confirm it.

Subtensor runs commit-reveal by default: ``SetWeights`` then sends a timelocked commit, which
the chain accepts without looking at the validator permit or stake (it cannot read the weights),
which moves ``LastUpdate`` at once, and whose reveal, epochs later, is dropped silently when it
fails. So before anything is signed the validator's standing is read at one block (registered,
permit, stake against ``StakeThreshold``, the rate limit); without it nothing is sent. After the
write ``result.success`` is read explicitly (LESSONS 22), a commit's receipt says when its reveal
is due, and the weights count as set only once ``weights_of`` (the ``Weights`` storage) shows them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import bittensor as bt
from bittensor.error_map import ErrorCode
from bittensor.intents.weights import SetWeights

from eval.errors import TransientError
from validator.chain.port import (
    ChainError,
    ChainThrottled,
    WeightsReceipt,
    normalized_weights,
    version_key,
    weights_standing,
)

T = TypeVar("T")
SUB = "SubtensorModule"
INCLUSION = {"wait_for_inclusion": True, "wait_for_finalization": False}


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


class SubtensorWeights:
    """Mixin for ``SubtensorChain``: needs its netuid, wallet, hotkey and bounded calls."""

    netuid: int
    wallet: bt.Wallet

    if TYPE_CHECKING:

        @property
        def hotkey(self) -> str: ...

        def _call(self, what: str, op: Callable[[bt.Client], Awaitable[T]], *, retry: bool = True) -> T: ...

        def _write(self, what: str, op: Callable[[bt.Client], Awaitable[T]]) -> T: ...

    # -- reads --------------------------------------------------------------------------------

    async def _min_stake(self, client: bt.Client, block: int) -> float:
        threshold, owner = await asyncio.gather(
            client.query((SUB, "StakeThreshold"), None, block=block),
            client.query((SUB, "SubnetOwnerHotkey"), [self.netuid], block=block),
        )
        return 0.0 if owner is not None and str(owner) == self.hotkey else int(threshold or 0) / 1e9

    def weights_min_stake(self) -> float:
        async def op(client: bt.Client) -> float:
            return await self._min_stake(client, await client.block())

        return self._call("reading the stake threshold", op)

    async def _uid_and_last(self, client: bt.Client, hotkey: str) -> tuple[int | None, int]:
        """The hotkey's uid and its LastUpdate, read at one pinned block."""
        block = await client.block()
        uid = await client.query((SUB, "Uids"), [self.netuid, hotkey], block=block)
        if uid is None:
            return None, 0
        last = await client.query((SUB, "LastUpdate"), [self.netuid], block=block)
        uid = int(uid)
        return uid, int(last[uid]) if isinstance(last, (list, tuple)) and uid < len(last) else 0

    def last_weights_block(self, hotkey: str) -> int | None:
        uid, last = self._call("reading last update", lambda client: self._uid_and_last(client, hotkey))
        return last if uid is not None and last > 0 else None

    def weights_of(self, hotkey: str) -> dict[int, float] | None:
        """The hotkey's row of ``SubtensorModule.Weights`` (mechanism 0), as fractions of the row."""

        async def op(client: bt.Client) -> dict[int, float] | None:
            block = await client.block()
            uid = await client.query((SUB, "Uids"), [self.netuid, hotkey], block=block)
            if uid is None:
                return None
            row = await client.query((SUB, "Weights"), [self.netuid, int(uid)], block=block) or []
            return normalized_weights([int(t) for t, _ in row], [float(v) for _, v in row])

        return self._call("reading weights", op)

    async def _standing(self, client: bt.Client) -> Standing:
        block = await client.block()
        graph, min_stake, limit, enabled, period, tempo = await asyncio.gather(
            client.subnets.metagraph(self.netuid, block, commitments=False),
            self._min_stake(client, block),
            client.query((SUB, "WeightsSetRateLimit"), [self.netuid], block=block),
            client.query((SUB, "CommitRevealWeightsEnabled"), [self.netuid], block=block),
            client.query((SUB, "RevealPeriodEpochs"), [self.netuid], block=block),
            client.query((SUB, "Tempo"), [self.netuid], block=block),
        )
        me = graph.by_hotkey(self.hotkey) if graph is not None else None
        # a commit made in epoch e is revealed at the start of epoch e + period; one epoch of slack
        reveal_blocks = (int(period or 1) + 1) * (int(tempo or 360) + 1)
        return Standing(
            block,
            me.uid if me else None,
            bool(me and me.validator_permit),
            float(me.total_stake.amount) if me else 0.0,
            min_stake,
            int(me.last_update) if me else 0,
            int(limit or 0),
            bool(enabled),
            reveal_blocks,
        )

    # -- the signed write ---------------------------------------------------------------------

    def set_weights(self, uids: list[int], weights: list[float]) -> WeightsReceipt:
        if len(uids) != len(weights) or not uids:
            raise ChainError(f"uids and weights must be equal-length and non-empty; got {uids} / {weights}.")
        st = self._call("reading this validator's standing", self._standing)
        refusal = standing_refusal(st, self.hotkey, self.netuid)
        if refusal is not None:
            return refusal
        intent = SetWeights(netuid=self.netuid, uids=list(uids), weights=list(weights), version_key=version_key())
        try:
            result = self._write("setting weights", lambda client: client.execute(intent, self.wallet, **INCLUSION))
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
            return WeightsReceipt(
                False,
                str(exc),
                None,
                _reason(getattr(exc.__cause__, "name", None), getattr(exc.__cause__, "code", None)),
            )
        if result.success is not True:
            error = result.error
            detail = (error.message if error is not None else result.message) or "no reason given"
            return WeightsReceipt(
                False,
                f"The chain rejected the weights: {detail}.",
                None,
                _reason(error.name, error.code) if error is not None else "rejected",
            )
        block = inclusion_block(result)
        if block is None:
            block = self._call("reading the head block", lambda client: client.block())
        rounds = f" (drand round {result.data['reveal_round']})" if "reveal_round" in result.data else ""
        return _accepted(st, block, rounds)


def standing_refusal(st: Standing, hotkey: str, netuid: int) -> WeightsReceipt | None:
    """Why weights must not be sent now (a failed receipt), or None: nothing is signed when refused."""
    refusal = weights_standing(registered=st.uid is not None, permit=st.permit, stake=st.stake, min_stake=st.min_stake)
    if refusal is not None:
        return WeightsReceipt(False, f"Hotkey {hotkey} on netuid {netuid}: {refusal[1]}.", None, refusal[0])
    if st.last_update > 0 and st.block - st.last_update < st.rate_limit:
        return WeightsReceipt(
            False,
            f"Weights were set {st.block - st.last_update} blocks ago; the rate limit is {st.rate_limit} blocks.",
            None,
            "rate_limited",
        )
    return None


def _accepted(st: Standing, block: int, note: str) -> WeightsReceipt:
    if st.commit_reveal:
        reveal_by = block + st.reveal_blocks
        return WeightsReceipt(
            True,
            f"Weights committed at block {block}{note}; the chain reveals them by about block {reveal_by}.",
            block,
            committed=True,
            reveal_by=reveal_by,
        )
    return WeightsReceipt(True, f"Weights set at block {block}{note}.", block, reveal_by=block)


def _reason(name: str | None, code: Any) -> str:
    """Our receipt reason for an SDK/chain error name or code."""
    named = {"NeuronNoValidatorPermit": "no_permit", "NotEnoughStakeToSetWeights": "low_stake"}
    if name in named:
        return named[name]
    return {ErrorCode.RATE_LIMITED: "rate_limited", ErrorCode.NOT_REGISTERED: "not_registered"}.get(code, "rejected")


def inclusion_block(result: bt.ExtrinsicResult) -> int | None:
    """The block an extrinsic was included in, from its id ``"<block>-<index>"``; None when unknown."""
    head = (result.extrinsic_id or "").split("-")[0]
    return int(head) if head.isdigit() else None
