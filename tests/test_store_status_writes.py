"""Status writes: weights, metagraph, progress; non-finite numbers refused, JSON round trips exact."""

from __future__ import annotations

import pytest
from store_fixtures import admitted, first_round, open_store

from validator.store.database import StoreError


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


def test_nan_and_inf_refused(store):
    """LESSONS 26: a non-finite number never reaches the store."""
    (a,) = admitted(store, ("alice", 5))
    with pytest.raises(StoreError):
        store.record_weights(10, [0, 1], [1.0, float("nan")], True)
    with pytest.raises(StoreError):
        store.set_king(a.key, 10, None, float("inf"), "x")
    with pytest.raises(StoreError):
        store.set_progress({"eta": float("nan")})
    with pytest.raises(StoreError):
        store.save_metagraph(10, [{"uid": 0, "stake": float("inf")}])
    assert store.last_weights() is None and store.current_king() is None


def test_json_round_trip_keeps_ints_ints(store):
    wid = store.record_weights(10, [0, 5, 17], [0.0, 1.0, 0.0], True, "ok")
    store.confirm_weights(wid, True)
    w = store.last_weights()
    assert w.uids == [0, 5, 17] and all(type(u) is int for u in w.uids) and w.confirmed is True
    store.save_metagraph(10, [{"uid": 3, "hotkey": "h", "stake": 1.5}])
    n = store.metagraph().neurons[0]
    assert type(n["uid"]) is int and n["stake"] == 1.5
    store.set_progress({"prompt": 3, "prompt_count": 40})
    assert store.progress().data == {"prompt": 3, "prompt_count": 40}
    rid, _ = first_round(store)
    assert all(type(t) is int for t in store.round(rid).evaluations[0].prompt_tokens)


def test_weights_states_and_supersede(store):
    first = store.record_weights(10, [1], [1.0], True, "committed", state="committed", reveal_block=30)
    assert store.pending_weights().id == first
    second = store.record_weights(15, [2], [1.0], True, "committed", state="committed", reveal_block=35)
    rows = {r["id"]: (r["state"], r["confirmed"]) for r in store._db.execute("SELECT * FROM weight_submissions")}
    assert rows == {first: ("superseded", 0), second: ("committed", None)}
    store.confirm_weights(second, True, "revealed")
    assert store.pending_weights() is None and store.last_weights(confirmed=True).state == "revealed"
    with pytest.raises(StoreError):
        store.record_weights(16, [2], [1.0], True, state="maybe")
