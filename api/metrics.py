"""Prometheus text exposition (format 0.0.4), written by hand: a handful of gauges needs no library."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from validator.store import Store

DURATION_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(x: float | int | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "NaN"  # the exposition format's own spelling of "no value"; never JSON
    return repr(float(x)) if isinstance(x, float) else str(x)


def _metric(name: str, kind: str, help_: str, samples: Iterable[tuple[str, float | int | None]]) -> list[str]:
    lines = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {_num(v)}" for labels, v in samples]
    return lines


def render_metrics(store: Store, extra: Mapping[str, float] | None = None) -> str:
    """Round durations, king KL, queue length, last weights block, pod errors, submission states."""
    s = store.stats(recent=1000)
    king = store.current_king()
    durations = sorted(d for d in s["durations"] if d is not None)
    buckets = [(f'{{le="{b:g}"}}', sum(1 for d in durations if d <= b)) for b in DURATION_BUCKETS]
    buckets.append(('{le="+Inf"}', len(durations)))
    lw = s["last_weights"]
    h = "klhill_round_duration_seconds"
    out = [f"# HELP {h} Wall time of recent finished rounds.", f"# TYPE {h} histogram"]
    out += [f"{h}_bucket{labels} {n}" for labels, n in buckets]
    out += [f"{h}_sum {_num(float(sum(durations)))}", f"{h}_count {len(durations)}"]
    out += _metric(
        "klhill_king_kl",
        "gauge",
        "Mean KL of the current king when it was crowned or defended.",
        [("", king["kl"] if king else None)],
    )
    out += _metric(
        "klhill_king_since_block",
        "gauge",
        "Block since which the king holds the crown.",
        [("", king["since_block"] if king else None)],
    )
    out += _metric(
        "klhill_queue_length",
        "gauge",
        "Admitted submissions waiting for their first evaluation.",
        [("", s["submissions"].get("admitted", 0))],
    )
    out += _metric(
        "klhill_submissions",
        "gauge",
        "Submissions by status.",
        [(f'{{status="{_esc(k)}"}}', v) for k, v in sorted(s["submissions"].items())],
    )
    out += _metric(
        "klhill_rounds",
        "gauge",
        "Rounds by state.",
        [(f'{{state="{_esc(k)}"}}', v) for k, v in sorted(s["rounds"].items())],
    )
    out += _metric(
        "klhill_pod_errors",
        "gauge",
        "Failed rounds (pod down, timeout, bad result).",
        [("", s["rounds"].get("failed", 0))],
    )
    out += _metric(
        "klhill_model_errors", "gauge", "Evaluations that ended in a model error.", [("", s["model_errors"])]
    )
    out += _metric(
        "klhill_last_weights_block",
        "gauge",
        "Block of the last successful weight submission.",
        [("", lw["block"] if lw else None)],
    )
    for name, value in sorted((extra or {}).items()):
        out += _metric(f"klhill_api_{name}", "counter", f"API {name.replace('_', ' ')} in this worker.", [("", value)])
    return "\n".join(out) + "\n"
