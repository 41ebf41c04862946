"""The durable seen-nonce store: once per pair across reopen, expiry, a bounded size, recovery from a corrupt file."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import pytest

from validator.pod.nonce_store import NonceStoreError, SqliteNonceStore, creation_floor_ns

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


NOW = 1_000_000.0


def _filled(path: Path, n: int = 50) -> list[int]:
    """A real store with ``n`` accepted nonces, closed (checkpointed into the main file); returns the nonces."""
    store = SqliteNonceStore(path, retention=60, clock=lambda: NOW - 5)
    nonces = [int((NOW - 5) * S) + i for i in range(n)]
    for nonce in nonces:
        assert store.check_and_store("hk", nonce)
    store.close()
    return nonces


def test_brand_new_store_refuses_nonces_signed_before_it_existed(tmp_path: Path):
    store = SqliteNonceStore(tmp_path / "n.sqlite3", retention=60, future_skew=2, clock=lambda: NOW)
    assert store.floor_ns() == int(NOW * S) - 1  # no file before: creation time, no skew margin
    assert not store.check_and_store("hk", int(NOW * S) - 1)
    assert store.check_and_store("hk", int(NOW * S))
    assert store.moved_aside is None


def test_creation_floor_is_pure():
    assert creation_floor_ns(10.0, False, 2.0) == 10 * S - 1
    assert creation_floor_ns(10.0, True, 2.0) == 12 * S - 1


def _assert_reset(store: SqliteNonceStore, old: list[int], now: float, skew: float) -> None:
    assert store.moved_aside is not None and store.moved_aside.name.startswith("n.sqlite3.corrupt-")
    for nonce in old:  # everything accepted before the loss is refused, never re-accepted
        assert not store.check_and_store("hk", nonce)
    assert not store.check_and_store("hk", int((now + skew) * S) - 1)  # may have been signed ahead, pre-reset
    assert store.check_and_store("hk", int((now + skew) * S))


@pytest.mark.parametrize(
    "damage", ["garbage", "garbage_with_sqlite_header", "truncated_page", "truncated_header", "garbage_page_inside"]
)
def test_corrupt_file_is_moved_aside_and_a_fresh_store_refuses_the_past(tmp_path: Path, damage: str, caplog):
    path = tmp_path / "n.sqlite3"
    old = _filled(path, n=600)  # several pages, so a truncation cuts real content
    data = path.read_bytes()
    assert len(data) > 3 * 4096
    damaged = {
        "garbage": os.urandom(len(data)),
        "garbage_with_sqlite_header": data[:100] + os.urandom(len(data) - 100),
        "truncated_page": data[: len(data) // 2 + 17],
        "truncated_header": data[:40],
        "garbage_page_inside": data[: 2 * 4096] + os.urandom(4096) + data[3 * 4096 :],  # schema reads fine
    }[damage]
    path.write_bytes(damaged)
    with caplog.at_level(logging.WARNING, logger="validator.pod.nonce_store"):
        store = SqliteNonceStore(path, retention=60, future_skew=2, clock=lambda: NOW)
    assert "moved it to" in caplog.text and str(store.moved_aside) in caplog.text
    assert store.moved_aside is not None and store.moved_aside.read_bytes() == damaged  # kept
    _assert_reset(store, old, NOW, 2)
    store.close()
    again = SqliteNonceStore(path, retention=60, future_skew=2, clock=lambda: NOW + 1)  # the fresh file is healthy
    assert again.moved_aside is None and not again.check_and_store("hk", int((NOW + 2) * S))


def test_stale_wal_never_lands_next_to_the_fresh_store(tmp_path: Path):
    path = tmp_path / "n.sqlite3"
    _filled(path)
    path.write_bytes(b"not a database at all" * 300)
    wal = tmp_path / "n.sqlite3-wal"
    wal.write_bytes(b"stale" * 200)
    store = SqliteNonceStore(path, retention=60, clock=lambda: NOW)
    assert store.moved_aside is not None
    assert store.check_and_store("hk", int(NOW * S))
    # SQLite may drop a WAL it cannot use; if it survived, it went with the corrupt file
    assert not wal.exists() or b"stale" not in wal.read_bytes()


def test_file_truncated_to_nothing_keeps_the_skew_margin(tmp_path: Path, caplog):
    path = tmp_path / "n.sqlite3"
    _filled(path)
    path.write_bytes(b"")  # SQLite reads an empty file as an empty database: no move, but state is lost
    with caplog.at_level(logging.WARNING, logger="validator.pod.nonce_store"):
        store = SqliteNonceStore(path, retention=60, future_skew=2, clock=lambda: NOW)
    assert store.moved_aside is None and "held no nonce state" in caplog.text
    assert store.floor_ns() == int((NOW + 2) * S) - 1


def test_foreign_schema_is_moved_aside(tmp_path: Path):
    path = tmp_path / "n.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE seen (something_else TEXT)")
    db.commit()
    db.close()
    store = SqliteNonceStore(path, retention=60, future_skew=2, clock=lambda: NOW)
    _assert_reset(store, [], NOW, 2)


def test_directory_in_its_place_is_moved_aside(tmp_path: Path):
    path = tmp_path / "n.sqlite3"
    path.mkdir()
    (path / "keep.txt").write_text("operator data")
    store = SqliteNonceStore(path, retention=60, future_skew=2, clock=lambda: NOW)
    assert store.moved_aside is not None and (store.moved_aside / "keep.txt").read_text() == "operator data"
    _assert_reset(store, [], NOW, 2)


def test_two_resets_in_one_second_do_not_collide(tmp_path: Path):
    path = tmp_path / "n.sqlite3"
    moved = []
    for _ in range(2):
        path.write_bytes(os.urandom(8192))
        store = SqliteNonceStore(path, retention=60, clock=lambda: NOW)
        moved.append(store.moved_aside)
        store.close()
    assert moved[0] != moved[1] and all(m is not None and m.exists() for m in moved)


def test_locked_by_another_process_is_an_error_not_a_reset(tmp_path: Path):
    path = tmp_path / "n.sqlite3"
    _filled(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(NonceStoreError, match="SQLITE_BUSY"):
            SqliteNonceStore(path, retention=60, busy_timeout=0.05, clock=lambda: NOW)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not list(tmp_path.glob("*.corrupt-*"))  # the healthy file stayed where it was
    reopened = SqliteNonceStore(path, retention=60, clock=lambda: NOW)
    assert reopened.moved_aside is None and not reopened.check_and_store("hk", int((NOW - 5) * S))


def test_unmovable_file_is_a_clear_error(tmp_path: Path, monkeypatch):
    path = tmp_path / "n.sqlite3"
    path.write_bytes(os.urandom(8192))

    def refuse(self: Path, target: Path) -> Path:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "rename", refuse)  # as a read-only workdir would (the tests may run as root)
    with pytest.raises(NonceStoreError, match="cannot be moved aside"):
        SqliteNonceStore(path, retention=60, clock=lambda: NOW)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file permissions")
def test_unreadable_file_is_moved_aside(tmp_path: Path):
    path = tmp_path / "n.sqlite3"
    _filled(path)
    path.chmod(0)
    store = SqliteNonceStore(path, retention=60, future_skew=2, clock=lambda: NOW)
    _assert_reset(store, [], NOW, 2)


def test_rejects_negative_skew(tmp_path: Path):
    with pytest.raises(ValueError):
        SqliteNonceStore(tmp_path / "n.sqlite3", future_skew=-1)
