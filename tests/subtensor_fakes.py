"""A stand-in for bittensor v11's ``bt.Client`` that answers from a SimChain, with faults on demand.

It implements exactly the calls ``validator.chain.subtensor`` makes, with the SDK's own return
types (``BlockInfo``, ``Metagraph``/``MetagraphNeuron``, ``NeuronCommitment``, the identity read's
``Commitment``, ``ExtrinsicResult``, u16 weight rows as subtensor stores them) and the SDK's own
exception classes injected per call, so the adapter and the loop above it meet what they would
meet on finney. State lives in the SimChain: a set is applied, a commit waits for its reveal.

``faults["name"]`` is a list of exceptions raised (one per call) before the call runs; names are
the client method (``block``, ``finalized_block``, ``block_info``, ``block_hash`` (the hash RPC on the
SDK's ``Substrate`` backend), ``metagraph``, ``commitments``, ``weights``, ``commitment``, ``uid``,
``execute``, ``submit_call``, ``connect``) or ``query:<Item>``.
``lose_answer`` names writes that land on the chain and then lose their answer. ``delay`` adds
seconds to a call (a slow success, or a hang). ``calls`` records every call by name.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import bittensor as bt
from bittensor.intents.weights import normalize
from bittensor.metagraph import Metagraph, MetagraphNeuron, NeuronCommitment
from bittensor.reads.identity import Commitment as IdentityCommitment

from validator.chain.sim import SimChain

RAO = 10**9
OWNER = "5OwnerHotkeyOfTheSubnet"
_ERROR_NAMES = {
    "no_permit": "NeuronNoValidatorPermit",
    "low_stake": "NotEnoughStakeToSetWeights",
    "rate_limited": "SettingWeightsTooFast",
    "not_registered": "HotKeyNotRegisteredInSubNet",
}


class SimClient:
    """One connection; build a fresh one per ``client_factory`` call, sharing ``faults`` and ``calls``."""

    def __init__(
        self,
        sim: SimChain,
        *,
        faults: dict[str, list[BaseException]] | None = None,
        lose_answer: set[str] | None = None,
        delay: dict[str, float] | None = None,
        calls: list[str] | None = None,
        finality_lag: int = 0,
        results: list[Any] | None = None,
    ) -> None:
        self.sim = sim
        self.faults = faults if faults is not None else {}
        self.lose_answer = lose_answer if lose_answer is not None else set()
        self.delay = delay if delay is not None else {}
        self.calls = calls if calls is not None else []
        self.results = results if results is not None else []  # scripted ExtrinsicResults for writes
        self.finality_lag = finality_lag
        self.kwargs: list[dict[str, Any]] = []
        self.subnets = SimpleNamespace(metagraph=self._metagraph, commitments=self._commitments)
        self.hyperparameters = SimpleNamespace(weights_rate_limit=self._rate_limit)
        self.neurons = SimpleNamespace(uid=self._uid)
        self.identity = SimpleNamespace(commitment=self._commitment)
        self.weights = SimpleNamespace(weights=self._weights)
        self._substrate = SimpleNamespace(block_hash=self._block_hash)

    async def _enter(self, name: str) -> None:
        self.calls.append(name)
        if self.delay.get(name):
            await asyncio.sleep(self.delay[name])
        queue = self.faults.get(name)
        if queue:
            raise queue.pop(0)

    def _signed(self, wallet: Any) -> SimChain:
        return SimChain(self.sim.path, self.sim.netuid, hotkey=str(wallet.hotkey.ss58_address))

    # -- lifecycle ------------------------------------------------------------------------------
    async def connect(self) -> SimClient:
        await self._enter("connect")
        return self

    async def close(self) -> None:
        return None

    # -- reads ----------------------------------------------------------------------------------
    async def block(self) -> int:
        await self._enter("block")
        return self.sim.block_number()

    async def finalized_block(self) -> int:
        await self._enter("finalized_block")
        return max(0, self.sim.block_number() - self.finality_lag)

    async def block_info(self, block: int | None = None) -> bt.BlockInfo | None:
        await self._enter("block_info")
        number = self.sim.block_number() if block is None else block
        if number > self.sim.block_number():
            return None
        return bt.BlockInfo(
            number=number,
            hash=self.sim.block_hash(number),
            timestamp=datetime.now(UTC),
            explorer_url=None,
            header={"number": number},
            extrinsics=[],
        )

    async def _block_hash(self, block: int | None = None) -> str | None:
        """``chain_getBlockHash``: the hash, or None (JSON null) for a block the chain has not made yet."""
        await self._enter("block_hash")
        number = self.sim.block_number() if block is None else block
        return None if number > self.sim.block_number() else self.sim.block_hash(number)

    async def _weights(self, netuid: int, mechid: int = 0, *, block: int | None = None) -> dict[int, dict[int, float]]:
        """The SDK's ``weights.weights`` read: {validator_uid: {uid: fraction}}, each row summing to 1."""
        await self._enter("weights")
        return self.sim.weight_rows()

    async def _metagraph(self, netuid: int, block: int | None = None, *, commitments: bool = True) -> Metagraph:
        await self._enter("metagraph")
        rows = [_neuron(n, netuid) for n in self.sim.neurons()]
        return Metagraph(
            netuid=netuid,
            mechid=0,
            name="sim",
            symbol="a",
            block=self.sim.block_number(),
            tempo=360,
            last_step=0,
            blocks_since_last_step=0,
            owner_hotkey=OWNER,
            owner_coldkey=OWNER,
            network_registered_at=0,
            num_uids=len(rows),
            max_uids=256,
            price=None,
            moving_price=None,
            identity=None,
            neurons=rows,
            commitments={},
            unregistered_commitments={},
            raw={},
        )

    async def _commitments(self, netuid: int, block: int | None = None) -> dict[str, NeuronCommitment]:
        await self._enter("commitments")
        uids = {n.hotkey: n.uid for n in self.sim.neurons()}
        return {
            c.hotkey: NeuronCommitment(
                hotkey=c.hotkey,
                netuid=netuid,
                uid=uids.get(c.hotkey),
                block=c.block,
                queried_block=block or 0,
                deposit=bt.Balance.from_rao(0),
                data=c.text,
                encrypted=False,
                reveal_round=None,
                revealed=[],
                fields=[],
            )
            for c in self.sim.commitments().values()
            if block is None or c.block <= block
        }

    async def _commitment(self, netuid: int, hotkey: str) -> IdentityCommitment | None:
        await self._enter("commitment")
        c = self.sim.commitments().get(hotkey)
        return (
            None
            if c is None
            else IdentityCommitment(block=c.block, deposit=bt.Balance.from_rao(0), data=c.text, fields=[])
        )

    async def _uid(self, hotkey: str, netuid: int) -> int | None:
        await self._enter("uid")
        return next((n.uid for n in self.sim.neurons() if n.hotkey == hotkey), None)

    async def _rate_limit(self, netuid: int) -> int:
        await self._enter("rate_limit")
        return self.sim.weights_rate_limit()

    async def query(self, item: tuple[str, str], params: list | None = None, *, block: int | None = None) -> Any:
        await self._enter(f"query:{item[1]}")
        neurons = self.sim.neurons()
        meta = self.sim._meta
        if item[1] == "Uids":
            return next((n.uid for n in neurons if n.hotkey == params[1]), None)
        if item[1] == "LastUpdate":
            return [n.last_update for n in neurons]
        if item[1] == "Weights":
            hotkey = next((n.hotkey for n in neurons if n.uid == params[1]), None)
            row = self.sim.weights_of(hotkey) if hotkey else None
            return [list(p) for p in zip(*normalize(list(row), list(row.values())), strict=True)] if row else []
        values = {
            "StakeThreshold": int(float(meta("min_stake")) * RAO),
            "SubnetOwnerHotkey": OWNER,
            "WeightsSetRateLimit": self.sim.weights_rate_limit(),
            "CommitRevealWeightsEnabled": meta("commit_reveal") == "1",
            "RevealPeriodEpochs": 1,
            "Tempo": max(1, int(meta("reveal_blocks")) // 2),
        }
        return values[item[1]]

    # -- writes ---------------------------------------------------------------------------------
    async def execute(self, intent: Any, wallet: Any, **kwargs: Any) -> bt.ExtrinsicResult:
        await self._enter("execute")
        self.kwargs.append(kwargs)
        if self.results:
            return self.results.pop(0)
        receipt = self._signed(wallet).set_weights(list(intent.uids), list(intent.weights))
        if not receipt.success:  # the chain's own error names for the same refusals
            name = _ERROR_NAMES.get(receipt.reason, "WeightVecNotEqualSize")
            return bt.ExtrinsicResult(False, receipt.message, error=bt.ChainError(receipt.message, name=name))
        data = {"reveal_round": 1000 + receipt.block} if receipt.committed else {}
        return self._answer("execute", bt.ExtrinsicResult(True, "ok", extrinsic_id=f"{receipt.block}-1", data=data))

    async def submit_call(self, call: Any, wallet: Any, **kwargs: Any) -> bt.ExtrinsicResult:
        await self._enter("submit_call")
        self.kwargs.append(kwargs)
        if self.results:
            return self.results.pop(0)
        (field,) = call.params["info"]["fields"]
        text = bytes.fromhex(next(iter(field.values()))[2:]).decode()
        block = self._signed(wallet).commit(text, replace=True)  # the chain overwrites; refusing is our CLI's job
        return self._answer("submit_call", bt.ExtrinsicResult(True, "ok", extrinsic_id=f"{block}-2"))

    def _answer(self, name: str, result: bt.ExtrinsicResult) -> bt.ExtrinsicResult:
        if name in self.lose_answer:
            self.lose_answer.discard(name)
            raise bt.RpcConnectionError("websocket closed before the inclusion event arrived")
        return result


def _neuron(n: Any, netuid: int) -> MetagraphNeuron:
    zero = bt.Balance.from_rao(0, netuid)
    return MetagraphNeuron(
        uid=n.uid,
        hotkey=n.hotkey,
        coldkey=n.coldkey,
        active=True,
        validator_permit=n.validator_permit,
        last_update=n.last_update,
        block_at_registration=n.registered_at,
        rank=0.0,
        trust=0.0,
        consensus=0.0,
        incentive=n.incentive,
        dividends=0.0,
        pruning_score=0.0,
        emission=bt.Balance.from_rao(int(n.emission * RAO)),
        alpha_stake=zero,
        tao_stake=bt.Balance.from_rao(0),
        total_stake=bt.Balance.from_rao(int(n.stake * RAO), netuid),
        axon=None,
        identity=None,
        commitment=None,
    )
