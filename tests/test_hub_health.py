"""validator/hub_health.py: a rejected token is recorded loudly and cleared only by the reader that met it."""

from __future__ import annotations

from validator import hub_health
from validator.store.database import Store


def test_rejection_is_logged_recorded_and_cleared_by_the_same_reader(tmp_path, caplog):
    store = Store.open(tmp_path / "v.db")
    with caplog.at_level("ERROR"):
        hub_health.report_rejected(
            store, "HTTP 401 (Invalid credentials in Authorization header)", 7, "prompt sampling", hub_health.DATASET
        )
    assert any(r.levelname == "ERROR" and "HF_TOKEN" in r.getMessage() for r in caplog.records)
    meta = store.meta()
    assert (meta["hub_auth"], meta["hub_auth_block"], meta["hub_auth_source"]) == ("rejected", 7, "dataset")
    assert meta["hub_auth_detail"].startswith("prompt sampling: HTTP 401")
    hub_health.report_ok(store, 8, hub_health.MODELS)  # a local model store answering says nothing of the hub
    assert store.meta()["hub_auth"] == "rejected"
    hub_health.report_ok(store, 9, hub_health.DATASET)
    assert (store.meta()["hub_auth"], store.meta()["hub_auth_detail"]) == ("ok", "")
    store.close()


def test_ok_is_written_once_not_every_epoch(tmp_path):
    writes: list[dict] = []
    store = Store.open(tmp_path / "v.db")
    real = store.set_meta
    store.set_meta = lambda **kw: (writes.append(kw), real(**kw))  # type: ignore[method-assign]
    for block in range(5):
        hub_health.report_ok(store, block)
    assert len(writes) == 1
    store.close()
