"""SubtensorChain against a stubbed async SDK client (the methods it calls, nothing more)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import bittensor as bt
import pytest
from bittensor.intents.weights import SetWeights

from eval.errors import TransientError
from validator.chain import AlreadyCommitted, Chain, ChainError, CommitmentTooLong, NotRegistered, RateLimited
from validator.subtensor_chain import SubtensorChain, commitment_call

ME = "5Validator"
HASH = "0x" + "AB" * 32


@dataclass
class FakeState:
    block: int = 1000
    uids: dict[str, int] = field(default_factory=lambda: {ME: 0, "5Miner": 1})
    last_update: list[int] = field(default_factory=lambda: [500, 0])
    rate_limit: int = 100
    result: Any = None
    confirm: bool = True
    executed: list[Any] = field(default_factory=list)
    submitted: list[Any] = field(default_factory=list)
    drop_next: int = 0
    hang: bool = False
    connects: int = 0
    commitment: Any = None


class FakeClient:
    def __init__(self, state: FakeState) -> None:
        self.s = state
        self.subnets = SimpleNamespace(metagraph=self._metagraph, commitments=self._commitments)
        self.hyperparameters = SimpleNamespace(weights_rate_limit=self._rate_limit)
        self.neurons = SimpleNamespace(uid=self._uid)
        self.identity = SimpleNamespace(commitment=self._commitment)

    async def _gate(self) -> None:
        if self.s.hang:
            await asyncio.sleep(60)
        if self.s.drop_next:
            self.s.drop_next -= 1
            raise bt.RpcConnectionError("websocket closed")

    async def connect(self) -> FakeClient:
        self.s.connects += 1
        return self

    async def close(self) -> None:
        return None

    async def block(self) -> int:
        await self._gate()
        return self.s.block

    async def block_info(self, n: int) -> Any:
        await self._gate()
        return SimpleNamespace(number=n, hash=HASH if n <= self.s.block else None)

    async def query(self, item: tuple[str, str], params: list, *, block: int | None = None) -> Any:
        await self._gate()
        if item[1] == "Uids":
            return self.s.uids.get(params[1])
        assert item[1] == "LastUpdate"
        return list(self.s.last_update)

    async def _rate_limit(self, netuid: int) -> int:
        return self.s.rate_limit

    async def _uid(self, hotkey: str, netuid: int) -> int | None:
        await self._gate()
        return self.s.uids.get(hotkey)

    async def _commitment(self, netuid: int, hotkey: str) -> Any:
        return self.s.commitment

    async def _metagraph(self, netuid: int, *, commitments: bool = True) -> Any:
        await self._gate()
        def neuron(uid: int, hk: str) -> Any:
            return SimpleNamespace(
                uid=uid, hotkey=hk, coldkey="5Cold", total_stake=bt.Balance.from_tao(2.5), validator_permit=uid == 0,
                incentive=0.5, emission=bt.Balance.from_tao(0.25), last_update=self.s.last_update[uid],
            )

        return SimpleNamespace(neurons=[neuron(1, "5Miner"), neuron(0, ME)])

    async def _commitments(self, netuid: int) -> dict[str, Any]:
        return {
            "5Plain": SimpleNamespace(block=900, value='{"model":"a/b"}'),
            "5Sealed": SimpleNamespace(block=901, value=None),
        }

    async def execute(self, intent: Any, wallet: Any, **kw: Any) -> Any:
        await self._gate()
        self.s.executed.append(intent)
        if self.s.confirm and self.s.result.success:
            self.s.block += 1
            self.s.last_update[0] = self.s.block
        return self.s.result

    async def submit_call(self, call: Any, wallet: Any, **kw: Any) -> Any:
        self.s.submitted.append((call, kw))
        return self.s.result


class FakeWallet:
    hotkey = SimpleNamespace(ss58_address=ME)


@pytest.fixture
def state() -> FakeState:
    return FakeState(result=bt.ExtrinsicResult(success=True, message="ok", extrinsic_id="1001-3"))


@pytest.fixture
def chain(state: FakeState) -> Any:
    c = SubtensorChain("local", 7, FakeWallet(), timeout=0.5, client_factory=lambda network: FakeClient(state))  # type: ignore[arg-type,return-value]
    yield c
    c.close()


def test_reads(chain: SubtensorChain, state: FakeState) -> None:
    assert isinstance(chain, Chain)
    head = chain.head()
    assert head.number == 1000 and head.hash == HASH.lower()
    with pytest.raises(ChainError, match="not known"):
        chain.block_hash(2000)
    neurons = chain.neurons()
    assert [n.uid for n in neurons] == [0, 1]
    assert neurons[0].stake == pytest.approx(2.5) and neurons[0].validator_permit and neurons[0].last_update == 500
    assert chain.commitments() == {"5Plain": chain.commitments()["5Plain"]}  # sealed skipped
    assert chain.commitments()["5Plain"].block == 900
    assert chain.weights_rate_limit() == 100
    assert chain.last_weights_block(ME) == 500 and chain.last_weights_block("5Miner") is None
    assert chain.last_weights_block("5Nobody") is None
    assert chain.is_registered("5Miner") and not chain.is_registered("5Nobody")


def test_set_weights_success_is_confirmed(chain: SubtensorChain, state: FakeState) -> None:
    receipt = chain.set_weights([1], [1.0])
    assert receipt.success and receipt.block == 1001
    intent = state.executed[0]
    assert isinstance(intent, SetWeights) and intent.netuid == 7 and intent.uids == [1] and intent.version_key == 100


def test_failed_result_is_not_success_even_if_truthy(chain: SubtensorChain, state: FakeState) -> None:
    class Truthy:
        success = False
        message = "Subtensor.IncorrectWeightVersionKey"
        error = None

        def __bool__(self) -> bool:
            return True

    state.result = Truthy()
    receipt = chain.set_weights([1], [1.0])
    assert not receipt.success and "IncorrectWeightVersionKey" in receipt.message and receipt.reason == "rejected"


def test_success_without_on_chain_update_fails(chain: SubtensorChain, state: FakeState) -> None:
    state.confirm = False
    receipt = chain.set_weights([1], [1.0])
    assert not receipt.success and receipt.reason == "not_confirmed"


def test_rate_limited_sends_nothing(chain: SubtensorChain, state: FakeState) -> None:
    state.last_update[0] = 950
    receipt = chain.set_weights([1], [1.0])
    assert not receipt.success and receipt.reason == "rate_limited" and state.executed == []


def test_unregistered_validator_sends_nothing(chain: SubtensorChain, state: FakeState) -> None:
    del state.uids[ME]
    assert chain.set_weights([1], [1.0]).reason == "not_registered" and state.executed == []


def test_sdk_chain_error_becomes_failed_receipt(chain: SubtensorChain, state: FakeState) -> None:
    async def refuse(intent: Any, wallet: Any, **kw: Any) -> Any:
        raise bt.ChainError("rate limit exceeded", code=bt.ErrorCode.RATE_LIMITED)

    chain._call("connect", lambda client: client.block())
    chain._client.execute = refuse  # type: ignore[union-attr,method-assign]
    receipt = chain.set_weights([1], [1.0])
    assert not receipt.success and receipt.reason == "rate_limited"


def test_dropped_connection_reconnects_once(chain: SubtensorChain, state: FakeState) -> None:
    state.drop_next = 1
    assert chain.head().number == 1000
    assert state.connects == 2
    state.drop_next = 2
    with pytest.raises(TransientError, match="connection lost"):
        chain.head()


@pytest.mark.parametrize("landed", [True, False])
def test_lost_weights_answer_is_settled_on_chain_never_resent(
    chain: SubtensorChain, state: FakeState, landed: bool
) -> None:
    async def drop_after(intent: Any, wallet: Any, **kw: Any) -> Any:
        state.executed.append(intent)
        if landed:
            state.block += 1
            state.last_update[0] = state.block
        raise bt.RpcConnectionError("websocket closed")

    chain._call("connect", lambda client: client.block())
    chain._client.execute = drop_after  # type: ignore[union-attr,method-assign]
    if landed:
        receipt = chain.set_weights([1], [1.0])
        assert receipt.success and receipt.block == 1001 and "lost" in receipt.message
    else:
        with pytest.raises(TransientError, match="connection lost"):
            chain.set_weights([1], [1.0])
    assert len(state.executed) == 1 and state.connects == 2  # reconnected to read, never resent


def test_lost_commit_answer_is_not_resent(chain: SubtensorChain, state: FakeState) -> None:
    async def drop(call: Any, wallet: Any, **kw: Any) -> Any:
        state.submitted.append(call)
        raise bt.RpcConnectionError("websocket closed")

    chain._call("connect", lambda client: client.block())
    chain._client.submit_call = drop  # type: ignore[union-attr,method-assign]
    with pytest.raises(TransientError, match="connection lost"):
        chain.commit('{"model":"a/b","revision":"' + "0" * 40 + '"}')
    assert len(state.submitted) == 1


def test_every_call_is_bounded_even_connect(state: FakeState) -> None:
    class SlowConnect(FakeClient):
        async def connect(self) -> FakeClient:
            await asyncio.sleep(60)
            return self

    c = SubtensorChain("local", 7, FakeWallet(), timeout=0.3, client_factory=lambda n: SlowConnect(state))  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(TransientError, match="timed out"):
            c.head()
    finally:
        c.close()


def test_timeout_is_transient(chain: SubtensorChain, state: FakeState) -> None:
    state.hang = True
    with pytest.raises(TransientError, match="timed out"):
        chain.neurons()
    state.hang = False
    assert chain.head().number == 1000  # a fresh client afterwards


def test_commit_encoding_and_checks(chain: SubtensorChain, state: FakeState) -> None:
    text = '{"model":"a/b","revision":"' + "0" * 40 + '"}'
    assert chain.commit(text) == 1001
    call, kw = state.submitted[0]
    assert kw == {"signer": "hotkey"}
    expected = commitment_call(7, text.encode())
    assert call == expected
    assert call.params == {"netuid": 7, "info": {"fields": [{f"Raw{len(text)}": "0x" + text.encode().hex()}]}}
    with pytest.raises(CommitmentTooLong):
        chain.commit("x" * 129)
    state.commitment = SimpleNamespace(data="old")
    with pytest.raises(AlreadyCommitted):
        chain.commit("y")
    state.commitment = None
    state.result = bt.ExtrinsicResult(
        success=False, message="no", error=bt.ChainError("quota", name="SpaceLimitExceeded")
    )
    with pytest.raises(RateLimited):
        chain.commit("y")
    del state.uids[ME]
    with pytest.raises(NotRegistered):
        chain.commit("y")


def test_mypy_passes_on_the_adapters() -> None:
    root = Path(__file__).resolve().parents[1]
    files = ["validator/chain.py", "validator/subtensor_chain.py", "validator/simchain.py", "validator/wallets.py"]
    proc = subprocess.run([sys.executable, "-m", "mypy", *files], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
