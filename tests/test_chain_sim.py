"""SimChain: a real SQLite chain shared between processes."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import sqlite3
import time
from pathlib import Path

import pytest

from validator.chain.port import AlreadyCommitted, Chain, ChainError, CommitmentTooLong, NotRegistered
from validator.chain.sim import SimChain, derive_incentives


def _chain(tmp_path: Path, hotkey: str | None = None, **kw: object) -> SimChain:
    return SimChain(tmp_path / "chain.db", 1, hotkey=hotkey, genesis=time.time(), **kw)  # type: ignore[arg-type]


def test_is_a_chain(tmp_path: Path) -> None:
    assert isinstance(_chain(tmp_path), Chain)


def test_hash_chain_is_deterministic_and_documented(tmp_path: Path) -> None:
    chain = _chain(tmp_path)
    chain.advance(2100)
    seed = bytes.fromhex(chain._meta("seed"))
    digest = seed
    expected = {}
    for n in range(0, 2101):
        digest = hashlib.sha256(digest + n.to_bytes(8, "big")).digest()
        expected[n] = "0x" + digest.hex()
    assert chain.block_hash(0) == expected[0]
    assert chain.block_hash(2100) == expected[2100]
    assert chain.block_hash(1500) == expected[1500]  # walked from a cached checkpoint
    # A second handle (fresh cache) on the same file agrees, and so does the head.
    other = SimChain(tmp_path / "chain.db", 1)
    assert other.block_hash(1777) == expected[1777]
    assert other.head().hash == expected[other.head().number]
    assert len({expected[n] for n in expected}) == len(expected)


def test_different_files_have_different_seeds(tmp_path: Path) -> None:
    a = SimChain(tmp_path / "a.db")
    b = SimChain(tmp_path / "b.db")
    assert a.block_hash(0) != b.block_hash(0)


def test_fixed_seed_reproduces_the_hash_chain(tmp_path: Path) -> None:
    a = SimChain(tmp_path / "a.db", seed=b"klhill-fixed")
    b = SimChain(tmp_path / "b.db", seed=b"klhill-fixed")
    a.advance(1100), b.advance(1100)
    assert [a.block_hash(n) for n in (0, 1, 1024, 1100)] == [b.block_hash(n) for n in (0, 1, 1024, 1100)]
    assert a.block_hash(0) == "0x" + hashlib.sha256(b"klhill-fixed" + (0).to_bytes(8, "big")).hexdigest()
    assert SimChain(tmp_path / "c.db", seed=b"other").block_hash(0) != a.block_hash(0)
    # like block_time and genesis, the seed applies at creation only: an existing file keeps its own
    assert SimChain(tmp_path / "a.db", seed=b"ignored").block_hash(5) == a.block_hash(5)
    with pytest.raises(ValueError, match="seed"):
        SimChain(tmp_path / "d.db", seed=b"")


def test_admin_operations_still_on_simchain(tmp_path: Path) -> None:
    from validator.chain.sim_admin import SimChainAdmin

    chain = _chain(tmp_path)
    assert isinstance(chain, SimChainAdmin)
    for name in ("advance", "register", "deregister", "set_stake", "set_validator_permit", "set_weights_rate_limit"):
        assert callable(getattr(chain, name))


def test_blocks_advance_with_time(tmp_path: Path) -> None:
    chain = _chain(tmp_path)
    assert chain.head().number == 0
    assert chain.advance(10).number == 10
    with pytest.raises(ChainError, match="does not exist yet"):
        chain.block_hash(11)
    fast = SimChain(tmp_path / "fast.db", block_time=0.05, genesis=time.time() - 1.0)
    first = fast.head().number
    assert first >= 19
    time.sleep(0.12)
    assert fast.head().number >= first + 2


def test_stored_settings_win_on_reopen_and_state_persists(tmp_path: Path) -> None:
    chain = _chain(tmp_path, hotkey="hk", block_time=6.0)
    chain.register("hk", "ck")
    chain.advance(5)
    assert chain.commit('{"model":"a/b","revision":"x"}') == 5
    chain.close()
    again = SimChain(tmp_path / "chain.db", 1, block_time=99.0)
    assert again._block_time == 6.0
    assert again.head().number == 5
    assert again.commitments()["hk"].block == 5
    assert again.is_registered("hk")


def test_uid_recycling_drops_weakest_non_validator(tmp_path: Path) -> None:
    chain = _chain(tmp_path, max_uids=3)
    assert chain.register("val", "c0", stake=1000.0, validator_permit=True) == 0
    assert chain.register("old", "c1", stake=5.0) == 1
    chain.advance(1)
    assert chain.register("rich", "c2", stake=50.0) == 2
    # Full: "old" has the lowest stake among non-validators and loses uid 1.
    assert chain.register("new", "c3") == 1
    hotkeys = {n.uid: n.hotkey for n in chain.neurons()}
    assert hotkeys == {0: "val", 1: "new", 2: "rich"}
    assert not chain.is_registered("old")
    with pytest.raises(ChainError, match="already registered"):
        chain.register("new", "c3")
    chain.deregister("rich")
    assert chain.register("other", "c4") == 2


def test_recycled_uid_does_not_inherit_incentive(tmp_path: Path) -> None:
    chain = _chain(tmp_path, hotkey="val", max_uids=2)
    chain.register("val", "c0", stake=10.0, validator_permit=True)
    chain.register("miner", "c1")
    chain.advance(1)
    assert chain.set_weights([1], [1.0]).success
    assert {n.hotkey: n.incentive for n in chain.neurons()}["miner"] == pytest.approx(1.0)
    chain.advance(1)
    assert chain.register("newcomer", "c2") == 1
    assert {n.hotkey: n.incentive for n in chain.neurons()}["newcomer"] == 0.0


def test_one_commitment_per_hotkey_and_size_limit(tmp_path: Path) -> None:
    chain = _chain(tmp_path, hotkey="m")
    with pytest.raises(NotRegistered):
        chain.commit("x")
    chain.register("m", "c")
    with pytest.raises(CommitmentTooLong):
        chain.commit("é" * 65)  # 130 bytes of UTF-8, 65 characters
    with pytest.raises(ChainError):
        chain.commit("")
    text = "x" * 128
    assert chain.commit(text) == 0
    chain.advance(3)
    with pytest.raises(AlreadyCommitted):
        chain.commit("second")
    assert chain.commitments()["m"].text == text and chain.commitments()["m"].block == 0
    chain.deregister("m")
    assert "m" in chain.commitments()  # storage keeps it, as on subtensor
    with pytest.raises(ChainError, match="no hotkey"):
        SimChain(tmp_path / "chain.db").commit("y")


def test_commitments_are_per_netuid(tmp_path: Path) -> None:
    one = SimChain(tmp_path / "c.db", 1, hotkey="m")
    two = SimChain(tmp_path / "c.db", 2, hotkey="m")
    one.register("m", "c")
    two.register("m", "c")
    one.commit("a")
    two.commit("b")
    assert one.commitments()["m"].text == "a" and two.commitments()["m"].text == "b"


def test_set_weights_receipts_and_rate_limit(tmp_path: Path) -> None:
    chain = _chain(tmp_path, hotkey="val", weights_rate_limit=10)
    assert chain.set_weights([0], [1.0]).reason == "not_registered"
    chain.register("val", "c0", stake=1.0)
    chain.register("m1", "c1")
    chain.register("m2", "c2")
    assert chain.set_weights([1], [1.0]).reason == "no_permit"
    chain.set_validator_permit("val")
    chain.advance(1)
    assert chain.last_weights_block("val") is None
    receipt = chain.set_weights([1, 2], [3.0, 1.0])
    assert receipt.success and receipt.block == 1
    assert chain.last_weights_block("val") == 1
    incentives = {n.uid: n.incentive for n in chain.neurons()}
    assert incentives[1] == pytest.approx(0.75) and incentives[2] == pytest.approx(0.25)
    chain.advance(9)
    limited = chain.set_weights([2], [1.0])
    assert not limited.success and limited.reason == "rate_limited" and limited.block is None
    assert {n.uid: n.incentive for n in chain.neurons()}[1] == pytest.approx(0.75)  # nothing recorded
    chain.advance(1)
    assert chain.set_weights([2], [1.0]).success
    assert chain.weights_rate_limit() == 10
    chain.advance(10)
    assert chain.set_weights([7], [1.0]).reason == "rejected"
    with pytest.raises(ChainError):
        chain.set_weights([1, 2], [1.0])
    with pytest.raises(ChainError):
        chain.set_weights([1], [float("nan")])


def test_derive_incentives_is_stake_weighted() -> None:
    vectors = [(5, [1, 2], [1.0, 1.0], 3.0), (5, [2], [2.0], 1.0)]
    result = derive_incentives(vectors, {1: 0, 2: 0})
    assert result == pytest.approx({1: 0.375, 2: 0.625})
    assert derive_incentives([], {1: 0}) == {}
    assert derive_incentives([(5, [1], [1.0], 0.0)], {1: 9}) == {}


def _miner_proc(path: str, index: int, n: int) -> None:
    chain = SimChain(Path(path), 1, hotkey=f"hk{index}")
    chain.register(f"hk{index}", f"ck{index}")
    chain.commit(f'{{"model":"m/{index}","revision":"{index:040x}"}}')
    for _ in range(n):
        chain.neurons()
        chain.commitments()


def test_many_processes_commit_while_another_reads(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    reader = SimChain(path, 1, genesis=time.time())
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_miner_proc, args=(str(path), i, 20)) for i in range(4)]
    for proc in procs:
        proc.start()
    seen = 0
    while any(p.is_alive() for p in procs):
        seen = max(seen, len(reader.commitments()))
        reader.neurons()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert sorted(reader.commitments()) == [f"hk{i}" for i in range(4)]
    assert sorted(n.uid for n in reader.neurons()) == [0, 1, 2, 3]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
