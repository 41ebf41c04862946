"""The durable seen-nonce store: once per (hotkey, nonce) across reopen, expiry, a bounded size without replays."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval.nonce_store import SqliteNonceStore

S = 10**9


def test_once_per_pair_and_survives_reopen(tmp_path: Path):
    now = 1_000_000.0
    path = tmp_path / "n.sqlite3"
    store = SqliteNonceStore(path, retention=60, clock=lambda: now)
    nonce = int(now * S)
    assert store.check_and_store("hkA", nonce)
    assert not store.check_and_store("hkA", nonce)
    assert store.check_and_store("hkB", nonce)  # another hotkey, same nonce: distinct pair
    store.close()
    reopened = SqliteNonceStore(path, retention=60, clock=lambda: now + 1)
    assert not reopened.check_and_store("hkA", nonce)
    assert not reopened.check_and_store("hkB", nonce)


def test_entries_expire_past_retention(tmp_path: Path):
    clock = [1_000_000.0]
    store = SqliteNonceStore(tmp_path / "n.sqlite3", retention=60, clock=lambda: clock[0])
    for i in range(5):
        assert store.check_and_store("hk", int(clock[0] * S) + i)
    assert len(store) == 5
    clock[0] += 61
    assert store.check_and_store("hk", int(clock[0] * S))
    assert len(store) == 1  # the five old ones were pruned; verify() refuses them as stale anyway


def test_cap_evicts_oldest_but_never_reopens_a_replay(tmp_path: Path):
    now = 1_000_000.0
    store = SqliteNonceStore(tmp_path / "n.sqlite3", retention=60, max_entries=3, clock=lambda: now)
    base = int(now * S)
    for i in range(10):
        assert store.check_and_store("hk", base + i)
    assert len(store) == 3
    for i in range(10):  # evicted or kept, every seen nonce is still refused
        assert not store.check_and_store("hk", base + i), i
    assert not store.check_and_store("other", base + 2)  # below the floor: refused for safety
    assert store.check_and_store("hk", base + 100)
    assert len(store) == 3


def test_rejects_nonsense_cap(tmp_path: Path):
    with pytest.raises(ValueError):
        SqliteNonceStore(tmp_path / "n.sqlite3", max_entries=0)
