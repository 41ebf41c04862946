"""The store's connection: WAL, read-only access, concurrent readers, the transaction."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from store_fixtures import admitted, hk, open_store, sub

from validator.store.connection import dumps, real
from validator.store.database import Store, StoreError
from validator.store.schema import SCHEMA_VERSION, SchemaError


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


def test_migrates_from_empty_wal_and_idempotent_reopen(tmp_path):
    path = tmp_path / "v.db"
    s = Store.open(path)
    assert s._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    s.set_meta(netuid=7, network="sim")
    s.close()
    s2 = Store.open(path)  # reopen: no migration re-run, data kept
    assert s2.meta() == {"netuid": 7, "network": "sim"} and s2.integrity_ok()
    s2._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    s2.close()
    with pytest.raises(SchemaError, match="newer"):
        Store.open(path)


def test_readonly_connection_refuses_writes(store, tmp_path):
    admitted(store, ("alice", 5))
    ro = Store.open_readonly(tmp_path / "state" / "validator.db")
    assert [c.hotkey for c in ro.commitments()] == [hk("alice")]
    with pytest.raises(sqlite3.OperationalError):
        ro._db.execute("DELETE FROM submissions")
    with pytest.raises(StoreError, match="read-only"):
        ro.set_progress({"phase": "x"})
    assert len(store.commitments()) == 1
    with pytest.raises(StoreError):
        Store.open_readonly(tmp_path / "missing.db")


def test_concurrent_reader_while_writer_writes(store, tmp_path):
    """WAL: the API's read-only connection reads consistently while the loop writes."""
    path = tmp_path / "state" / "validator.db"
    errors: list[BaseException] = []
    done = threading.Event()

    def reader():
        ro = Store.open_readonly(path)
        try:
            while not done.is_set():
                n = len(ro.commitments())
                ro.scores()
                assert n == len(ro.commitments()) or n >= 0
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test below
            errors.append(exc)
        finally:
            ro.close()

    t = threading.Thread(target=reader)
    t.start()
    for i in range(200):
        store.add_submissions([sub(f"m{i}", 100 + i, uid=i)])
        store.set_progress({"i": i})
    done.set()
    t.join(timeout=30)
    assert not errors and len(Store.open_readonly(path).commitments()) == 200


def test_a_nested_failure_rolls_back_the_outermost_transaction(store):
    """Callers compose writes (admission + DQ, a whole round) in one transaction: all of it or none."""
    with pytest.raises(StoreError, match="not storable"), store.transaction():
        store.add_submissions([sub("alice", 5)])
        with store.transaction():
            store.set_meta(network="sim")
            store.set_progress({"eta": float("inf")})
    assert store.commitments() == [] and store.meta() == {} and store.progress() is None
    assert dumps({"b": 1, "a": [2]}) == '{"a":[2],"b":1}' and real(None, "x") is None
    with pytest.raises(StoreError):
        dumps({"x": float("nan")})
