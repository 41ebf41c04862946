"""``/metrics`` through ``prometheus_client``: one collector that reads the store at each scrape.

The API is read-only and may run several workers, so nothing is counted in the
API process itself (apart from its own cache and rate-limit counters): every
number comes from the store the validator writes. What only grows is exposed as
a counter (``_total``: finished rounds, failed rounds, model errors,
disqualifications) or a histogram over every finished round; what goes up and
down (queue, king, submissions by status) is a gauge. The library writes the
exposition text, so names, escaping and histogram layout follow the format.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from validator.store.database import Store
from validator.store.schema import DQ_REASONS

DURATION_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)


class StoreCollector(Collector):
    """Reads the store once per scrape; ``api_counters`` are this worker's own cumulative counters."""

    def __init__(self, store: Store, api_counters: Mapping[str, float] | None = None) -> None:
        self.store, self.api_counters = store, dict(api_counters or {})

    def collect(self) -> Iterator[Metric]:
        st = self.store
        s = st.stats(recent=1)
        buckets, total, count = st.round_durations(DURATION_BUCKETS)
        yield HistogramMetricFamily(
            "klhill_round_duration_seconds",
            "Wall time of every finished round (dispatch to result).",
            buckets=[*((f"{b:g}", n) for b, n in zip(DURATION_BUCKETS, buckets, strict=True)), ("+Inf", count)],
            sum_value=total,
        )
        rounds = CounterMetricFamily("klhill_rounds", "Rounds that ended, by outcome.", labels=["state"])
        for state in ("done", "failed"):
            rounds.add_metric([state], s.rounds.get(state, 0))
        yield rounds
        yield GaugeMetricFamily(
            "klhill_rounds_open",
            "Rounds planned or dispatched and not ended yet.",
            value=s.rounds.get("planned", 0) + s.rounds.get("dispatched", 0),
        )
        yield CounterMetricFamily(
            "klhill_pod_errors", "Failed rounds (pod down, timeout, bad result).", value=s.rounds.get("failed", 0)
        )
        yield CounterMetricFamily(
            "klhill_model_errors", "Evaluations that ended in a model error.", value=s.model_errors
        )
        dqs = CounterMetricFamily("klhill_disqualifications", "Disqualifications by reason.", labels=["reason"])
        by_reason = st.disqualification_counts()
        for reason in DQ_REASONS:
            dqs.add_metric([reason], by_reason.get(reason, 0))
        yield dqs
        subs = GaugeMetricFamily("klhill_submissions", "Submissions by status.", labels=["status"])
        for status, n in sorted(s.submissions.items()):
            subs.add_metric([status], n)
        yield subs
        yield GaugeMetricFamily(
            "klhill_queue_length",
            "Admitted submissions waiting for their first evaluation.",
            value=s.submissions.get("admitted", 0),
        )
        king = st.current_king()
        if king is not None:  # no king: no sample (rather than a NaN that graphs as a value)
            if king.kl is not None:
                yield GaugeMetricFamily(
                    "klhill_king_kl", "Mean KL of the current king when it was crowned or defended.", value=king.kl
                )
            yield GaugeMetricFamily(
                "klhill_king_since_block", "Block since which the king holds the crown.", value=king.since_block
            )
        if s.last_weights:
            yield GaugeMetricFamily(
                "klhill_last_weights_block",
                "Block of the last successful weight submission.",
                value=s.last_weights.block,
            )
        yield from _consensus_gauges(st)
        yield GaugeMetricFamily(
            "klhill_hub_token_rejected",
            "1 while the hub rejects the validator's HF_TOKEN.",
            value=1 if st.meta().get("hub_auth") == "rejected" else 0,
        )
        for name, value in sorted(self.api_counters.items()):
            yield CounterMetricFamily(
                f"klhill_api_{name}", f"API {name.replace('_', ' ')} in this worker.", value=value
            )


def _consensus_gauges(store: Store) -> Iterator[Metric]:
    """Agreement with the chain's consensus after the newest finished slot (``validator.slots`` records it)."""
    done = next((r for r in store.latest_slots(2) if r.state != "open"), None)
    if done is None:
        return
    yield GaugeMetricFamily(
        "klhill_slot", "The newest slot of the shared schedule this validator finished.", value=done.slot
    )
    yield GaugeMetricFamily(
        "klhill_consensus_disagreement_slots",
        "Slots in a row whose king differed from the chain's consensus king (0 while agreeing).",
        value=done.streak or 0,
    )
    if done.agree is not None:
        yield GaugeMetricFamily(
            "klhill_consensus_agree",
            "1 while this validator's king is the chain's consensus king.",
            value=int(done.agree),
        )
    if done.vtrust is not None:
        yield GaugeMetricFamily("klhill_vtrust", "This validator's trust under Yuma's clipping.", value=done.vtrust)


def render_metrics(store: Store, api_counters: Mapping[str, float] | None = None) -> bytes:
    """The exposition text for one scrape (a fresh registry: nothing global, nothing left behind)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, api_counters))
    return generate_latest(registry)
