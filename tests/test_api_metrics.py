"""api/metrics.py: the exposition prometheus_client writes from the store; counters only grow."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import DURATION_BUCKETS, render_metrics
from eval.rules import ContestRules
from validator.store.database import Store


def _families(store: Store, counters: dict[str, float] | None = None) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(render_metrics(store, counters).decode())}


def _finish_rounds(store: Store, durations: list[float], state: str = "done") -> None:
    """Rounds as the loop leaves them (created, then ended) without running any."""
    now = [1000.0]
    store._clock = lambda: now[0]
    for d in durations:
        now[0] += 10
        rid = store.create_round("challenge", 1, "0x" + "a" * 64, [], ContestRules(), [])
        now[0] += d
        if state == "done":
            store._db.execute("UPDATE rounds SET state = 'done', finished = ? WHERE id = ?", (now[0], rid))
        else:
            store.fail_round(rid, "PodDown: connection refused")


def test_counters_are_counters_with_total_and_gauges_are_gauges(tmp_path):
    store = Store.open(tmp_path / "v.db")
    _finish_rounds(store, [30.0, 400.0])
    _finish_rounds(store, [5.0], state="failed")
    fam = _families(store, {"cache_hits": 7, "rate_limited": 2})
    text = render_metrics(store, {"cache_hits": 7}).decode()
    for name in (
        "klhill_rounds",
        "klhill_pod_errors",
        "klhill_model_errors",
        "klhill_disqualifications",
        "klhill_api_cache_hits",
        "klhill_api_rate_limited",
    ):
        assert fam[name].type == "counter", name
        assert all(s.name == name + "_total" for s in fam[name].samples), name
    assert "# TYPE klhill_pod_errors_total counter\nklhill_pod_errors_total 1.0\n" in text
    for name in ("klhill_queue_length", "klhill_submissions", "klhill_rounds_open", "klhill_hub_token_rejected"):
        assert fam[name].type == "gauge", name
    rounds = {s.labels["state"]: s.value for s in fam["klhill_rounds"].samples}
    assert rounds == {"done": 2.0, "failed": 1.0} and fam["klhill_pod_errors"].samples[0].value == 1.0
    assert {s.labels["reason"] for s in fam["klhill_disqualifications"].samples} >= {"COPY", "REMOVED"}
    assert "klhill_king_kl" not in fam  # no king: no sample, never a NaN
    store.close()


def test_the_duration_histogram_covers_every_round_and_never_goes_down(tmp_path):
    store = Store.open(tmp_path / "v.db")
    seen: list[list[float]] = []
    for batch in ([30.0, 400.0, 5000.0], [20.0] * 1200):  # more than any "recent rounds" window
        _finish_rounds(store, batch)
        hist = _families(store)["klhill_round_duration_seconds"]
        assert hist.type == "histogram"
        buckets = [s.value for s in hist.samples if s.name.endswith("_bucket")]
        assert buckets == sorted(buckets) and len(buckets) == len(DURATION_BUCKETS) + 1  # cumulative, +Inf last
        seen.append(buckets)
    count = next(s.value for s in hist.samples if s.name.endswith("_count"))
    total = next(s.value for s in hist.samples if s.name.endswith("_sum"))
    assert count == 1203 and total == pytest.approx(30 + 400 + 5000 + 20 * 1200)
    assert all(b >= a for a, b in zip(seen[0], seen[1], strict=True))  # no bucket ever decreases
    store.close()


def test_hub_token_rejection_is_a_gauge(tmp_path):
    from validator import hub_health

    store = Store.open(tmp_path / "v.db")
    assert _families(store)["klhill_hub_token_rejected"].samples[0].value == 0
    hub_health.report_rejected(store, "HTTP 401", 5, "admission")
    assert _families(store)["klhill_hub_token_rejected"].samples[0].value == 1
    store.close()
