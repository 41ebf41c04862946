"""SubtensorChain against a stand-in SDK client answering from a SimChain (tests/subtensor_fakes.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import bittensor as bt
import pytest
from bittensor.intents.weights import SetWeights
from bittensor.metagraph import NeuronCommitment
from subtensor_fakes import OWNER, SimClient

from validator.chain.port import (
    AlreadyCommitted,
    Chain,
    ChainError,
    ChainThrottled,
    ChainUnavailable,
    CommitmentTooLong,
    NotRegistered,
    RateLimited,
    weights_match,
)
from validator.chain.sim import SimChain
from validator.chain.subtensor import SubtensorChain, commitment_call

ME, MINER = "5Validator", "5Miner"
TEXT = '{"model":"a/b","revision":"' + "0" * 40 + '"}'


class FakeWallet:
    hotkey = SimpleNamespace(ss58_address=ME)


class World:
    def __init__(self, tmp: Path) -> None:
        self.sim = SimChain(tmp / "chain.db", 7, block_time=3600.0, weights_rate_limit=100)
        self.sim.register(ME, "5Cold", stake=2.5, validator_permit=True)
        self.sim.register(MINER, "5Cold2")
        self.sim.advance(1000)
        self.faults: dict[str, list[BaseException]] = {}
        self.calls: list[str] = []
        self.lose: set[str] = set()
        self.delay: dict[str, float] = {}
        self.results: list[Any] = []
        self.clients: list[SimClient] = []
        self.lag = 0

    def client(self, network: str) -> SimClient:
        c = SimClient(
            self.sim,
            faults=self.faults,
            lose_answer=self.lose,
            delay=self.delay,
            calls=self.calls,
            finality_lag=self.lag,
            results=self.results,
        )
        self.clients.append(c)
        return c

    def chain(self, **kw: Any) -> SubtensorChain:
        return SubtensorChain("local", 7, FakeWallet(), client_factory=self.client, **{"timeout": 0.5, **kw})  # type: ignore[arg-type]

    def sent(self) -> int:
        return self.calls.count("execute")


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path)


@pytest.fixture
def chain(w: World) -> Any:
    c = w.chain()
    yield c
    c.close()


def test_reads(chain: SubtensorChain, w: World) -> None:
    assert isinstance(chain, Chain)
    head = chain.head()
    assert head.number == chain.block_number() == 1000 and head.hash == w.sim.block_hash(1000)
    with pytest.raises(ChainError, match="not known"):
        chain.block_hash(2000)
    neurons = chain.neurons()
    assert [n.uid for n in neurons] == [0, 1]
    assert neurons[0].stake == pytest.approx(2.5) and neurons[0].validator_permit
    assert chain.weights_rate_limit() == 100 and chain.weights_min_stake() == 0.0
    assert chain.last_weights_block(ME) is None and chain.last_weights_block("5Nobody") is None
    assert chain.is_registered(MINER) and not chain.is_registered("5Nobody")
    assert chain.weights_of(ME) == {} and chain.weights_of("5Nobody") is None


def test_cheap_poll_reads_the_number_only(chain: SubtensorChain, w: World) -> None:
    chain.block_number()
    assert w.calls == ["connect", "block"]  # no block_info: no whole block fetched and decoded


def test_commitments_are_read_at_the_finalized_block_and_sealed_ones_skipped(w: World) -> None:
    SimChain(w.sim.path, 7, hotkey=MINER).commit(TEXT)
    w.lag = 3
    chain = w.chain()
    try:
        assert chain.commitments() == {}  # included, not final yet: no submission identity from a fork
        w.sim.advance(3)
        (c,) = chain.commitments().values()
        assert (c.hotkey, c.block, c.text) == (MINER, 1000, TEXT)
    finally:
        chain.close()

    class Sealed(SimClient):
        async def _commitments(self, netuid: int, block: int | None = None) -> dict[str, NeuronCommitment]:
            found = await super()._commitments(netuid, block)
            found["5Sealed"] = NeuronCommitment(
                "5Sealed", netuid, 3, 990, 1000, bt.Balance.from_rao(0), "", True, 123, [], []
            )
            return found

    sealed = SubtensorChain("local", 7, FakeWallet(), client_factory=lambda n: Sealed(w.sim))  # type: ignore[arg-type,return-value]
    try:
        assert set(sealed.commitments()) == {MINER}
    finally:
        sealed.close()


def test_min_stake_is_the_threshold_except_for_the_subnet_owner(w: World) -> None:
    w.sim.set_min_stake(4.0)
    chain = w.chain()
    assert chain.weights_min_stake() == 4.0
    FakeWallet.hotkey = SimpleNamespace(ss58_address=OWNER)
    try:
        assert chain.weights_min_stake() == 0.0
    finally:
        FakeWallet.hotkey = SimpleNamespace(ss58_address=ME)
        chain.close()


def test_direct_set_waits_for_inclusion_and_shows_in_weights_storage(chain: SubtensorChain, w: World) -> None:
    receipt = chain.set_weights([0, 1], [0.0, 1.0])
    assert receipt.success and not receipt.committed and receipt.block == 1000 and receipt.reveal_by == 1000
    (intent,) = [k for k in w.clients[0].kwargs]
    assert intent == {"wait_for_inclusion": True, "wait_for_finalization": False}
    assert weights_match(chain.weights_of(ME), [0, 1], [0.0, 1.0])
    assert chain.weights_of(ME) == {1: 1.0}  # zeros dropped, as subtensor stores a row


def test_commit_reveal_commit_then_reveal(chain: SubtensorChain, w: World) -> None:
    w.sim.set_commit_reveal(True, reveal_blocks=10)
    receipt = chain.set_weights([0, 1], [0.0, 1.0])
    assert receipt.success and receipt.committed and receipt.block == 1000
    assert receipt.reveal_by is not None and receipt.reveal_by >= 1010 and "drand round" in receipt.message
    assert chain.last_weights_block(ME) == 1000  # the commit moved LastUpdate ...
    assert chain.weights_of(ME) == {}  # ... but the weights are not there until the reveal
    w.sim.advance(10)
    assert weights_match(chain.weights_of(ME), [0, 1], [0.0, 1.0])


def test_failed_reveal_never_shows(chain: SubtensorChain, w: World) -> None:
    w.sim.set_commit_reveal(True, reveal_blocks=10)
    w.sim.fail_next_reveals(1)
    assert chain.set_weights([1], [1.0]).success
    w.sim.advance(20)
    assert chain.weights_of(ME) == {} and chain.last_weights_block(ME) == 1000


@pytest.mark.parametrize("commit_reveal", [False, True])
@pytest.mark.parametrize(
    ("setup", "reason"),
    [("permit", "no_permit"), ("stake", "low_stake"), ("rate", "rate_limited"), ("unregistered", "not_registered")],
)
def test_standing_is_checked_before_anything_is_signed(
    chain: SubtensorChain, w: World, commit_reveal: bool, setup: str, reason: str
) -> None:
    """The chain takes a commit without permit or stake and drops its reveal silently: we must not send it."""
    w.sim.set_commit_reveal(commit_reveal)
    if setup == "permit":
        w.sim.set_validator_permit(ME, False)
    elif setup == "stake":
        w.sim.set_min_stake(10.0)
    elif setup == "rate":
        w.sim.set_weights_rate_limit(100)
        SimChain(w.sim.path, 7, hotkey=ME).set_weights([1], [1.0])
        w.sim.advance(5)
    else:
        w.sim.deregister(ME)
    before = w.sent()
    receipt = chain.set_weights([1], [1.0])
    assert not receipt.success and receipt.reason == reason and w.sent() == before


def test_failed_result_is_not_success_even_if_truthy(chain: SubtensorChain, w: World) -> None:
    class Truthy:
        success = False
        message = "Subtensor.IncorrectWeightVersionKey"
        error = None

        def __bool__(self) -> bool:
            return True

    w.results.append(Truthy())
    receipt = chain.set_weights([1], [1.0])
    assert not receipt.success and "IncorrectWeightVersionKey" in receipt.message and receipt.reason == "rejected"


def test_sdk_chain_error_becomes_failed_receipt(chain: SubtensorChain, w: World) -> None:
    w.faults["execute"] = [bt.ChainError("rate limit exceeded", code=bt.ErrorCode.RATE_LIMITED)]
    assert chain.set_weights([1], [1.0]).reason == "rate_limited"
    w.faults["execute"] = [bt.ChainError("no permit", name="NeuronNoValidatorPermit")]
    assert chain.set_weights([1], [1.0]).reason == "no_permit"


def test_dropped_connection_reconnects_once_for_reads(chain: SubtensorChain, w: World) -> None:
    w.faults["block"] = [bt.RpcConnectionError("websocket closed")]
    assert chain.block_number() == 1000 and w.calls.count("connect") == 2
    w.faults["block"] = [bt.RpcConnectionError("closed"), ConnectionResetError("reset")]
    with pytest.raises(ChainUnavailable, match="connection lost"):
        chain.block_number()


def test_rate_limited_endpoint_is_not_retried_at_once(chain: SubtensorChain, w: World) -> None:
    """The SDK already rotated endpoints and backed off; a retry now would amplify the 429."""
    w.faults["metagraph"] = [
        bt.RpcPolicyError("RPC endpoint rate limited this source (HTTP 429)", status_code=429, retry_after="7")
    ]
    with pytest.raises(ChainThrottled) as info:
        chain.neurons()
    assert info.value.retry_after_s == 7.0 and w.calls.count("metagraph") == 1
    assert chain.neurons()  # a fresh client next time


@pytest.mark.parametrize("landed", [True, False])
def test_lost_weights_answer_is_settled_on_chain_never_resent(chain: SubtensorChain, w: World, landed: bool) -> None:
    if landed:
        w.lose.add("execute")
    else:
        w.faults["execute"] = [bt.RpcConnectionError("websocket closed")]
    if landed:
        receipt = chain.set_weights([1], [1.0])
        assert receipt.success and receipt.block == 1000 and "lost" in receipt.message
    else:
        with pytest.raises(ChainUnavailable, match="connection lost"):
            chain.set_weights([1], [1.0])
    assert w.sent() == 1


def test_slow_write_within_its_budget_is_a_success_not_a_lost_answer(w: World) -> None:
    """Inclusion can take longer than a read's timeout; the write has its own budget."""
    w.delay.update(execute=0.8, submit_call=0.8)
    chain = w.chain(timeout=0.3, write_timeout=5.0)
    try:
        assert chain.set_weights([1], [1.0]).success and w.sent() == 1
        FakeWallet.hotkey = SimpleNamespace(ss58_address=MINER)
        assert chain.commit(TEXT) == 1000
    finally:
        FakeWallet.hotkey = SimpleNamespace(ss58_address=ME)
        chain.close()


def test_lost_commit_answer_that_landed_returns_its_block(w: World) -> None:
    FakeWallet.hotkey = SimpleNamespace(ss58_address=MINER)
    chain = w.chain()
    try:
        w.lose.add("submit_call")
        assert chain.commit(TEXT) == 1000 and w.calls.count("submit_call") == 1
        w.faults["submit_call"] = [bt.RpcConnectionError("websocket closed")]
        with pytest.raises(ChainUnavailable):  # nothing new landed: the old commitment does not count as ours
            chain.commit(TEXT.replace("a/b", "a/c"), replace=True)
        assert w.calls.count("submit_call") == 2
    finally:
        FakeWallet.hotkey = SimpleNamespace(ss58_address=ME)
        chain.close()


def test_every_call_is_bounded_even_connect(w: World) -> None:
    w.delay["connect"] = 60
    chain = w.chain(timeout=0.3)
    try:
        with pytest.raises(ChainUnavailable, match="timed out"):
            chain.head()
    finally:
        chain.close()


def test_timeout_is_transient_and_the_client_replaced(chain: SubtensorChain, w: World) -> None:
    w.delay["metagraph"] = 60
    with pytest.raises(ChainUnavailable, match="timed out"):
        chain.neurons()
    del w.delay["metagraph"]
    assert chain.block_number() == 1000 and w.calls.count("connect") == 2


def test_python310_asyncio_timeout_is_typed_too(chain: SubtensorChain, w: World, monkeypatch) -> None:
    """On 3.10 ``asyncio.wait_for`` raises ``asyncio.TimeoutError``, a class apart from ``TimeoutError``."""

    class Py310AsyncioTimeout(Exception):  # asyncio.exceptions.TimeoutError on 3.10: not an OSError subclass
        pass

    monkeypatch.setattr(asyncio, "TimeoutError", Py310AsyncioTimeout)
    w.faults["block"] = [Py310AsyncioTimeout()]  # what asyncio.TimeoutError is on 3.10
    with pytest.raises(ChainUnavailable, match="timed out"):
        chain.block_number()


def test_commit_encoding_and_checks(w: World) -> None:
    FakeWallet.hotkey = SimpleNamespace(ss58_address=MINER)
    chain = w.chain()
    try:
        assert chain.commit(TEXT) == 1000
        (kw,) = w.clients[0].kwargs
        assert kw == {"signer": "hotkey", "wait_for_inclusion": True, "wait_for_finalization": False}
        call = commitment_call(7, TEXT.encode())
        assert call.params == {"netuid": 7, "info": {"fields": [{f"Raw{len(TEXT)}": "0x" + TEXT.encode().hex()}]}}
        with pytest.raises(CommitmentTooLong):
            chain.commit("x" * 129)
        with pytest.raises(AlreadyCommitted):
            chain.commit("y")
        w.sim.advance(5)
        assert chain.commit("y", replace=True) == 1005 and w.sim.commitments()[MINER].text == "y"
        w.results.append(
            bt.ExtrinsicResult(success=False, message="no", error=bt.ChainError("quota", name="SpaceLimitExceeded"))
        )
        with pytest.raises(RateLimited):
            chain.commit("z", replace=True)
        w.sim.deregister(MINER)
        with pytest.raises(NotRegistered):
            chain.commit("z", replace=True)
    finally:
        FakeWallet.hotkey = SimpleNamespace(ss58_address=ME)
        chain.close()


def test_set_weights_intent(chain: SubtensorChain, w: World) -> None:
    seen: list[Any] = []

    class Spy(SimClient):
        async def execute(self, intent: Any, wallet: Any, **kwargs: Any) -> Any:
            seen.append(intent)
            return await super().execute(intent, wallet, **kwargs)

    spy = SubtensorChain("local", 7, FakeWallet(), client_factory=lambda n: Spy(w.sim))  # type: ignore[arg-type,return-value]
    try:
        assert spy.set_weights([1], [1.0]).success
    finally:
        spy.close()
    (intent,) = seen
    assert isinstance(intent, SetWeights) and intent.netuid == 7 and intent.uids == [1] and intent.version_key == 100


def test_mypy_passes_on_the_adapters() -> None:
    root = Path(__file__).resolve().parents[1]
    files = [
        "validator/chain/port.py",
        "validator/chain/subtensor.py",
        "validator/chain/subtensor_rpc.py",
        "validator/chain/subtensor_weights.py",
        "validator/chain/sim.py",
        "validator/chain/sim_weights.py",
        "validator/chain/wallets.py",
    ]
    proc = subprocess.run([sys.executable, "-m", "mypy", *files], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_python_311_is_required_where_it_is_declared() -> None:
    """3.10's separate asyncio.TimeoutError is why: the package, the linters and the README say 3.11+."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["requires-python"] == ">=3.11"
    assert project["tool"]["ruff"]["target-version"] == "py311" and project["tool"]["mypy"]["python_version"] == "3.11"
    assert "Python >= 3.11" in (root / "README.md").read_text()
