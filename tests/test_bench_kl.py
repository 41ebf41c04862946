"""scripts/bench_kl.py: every side warmed up, repetitions alternated, medians reported; --tiny runs in seconds."""

from __future__ import annotations

import json
import time

import pytest

from scripts.bench_kl import HIDDEN_SIDES, LOGITS_SIDES, TINY, alternate, main, parse_args, report


def test_the_cold_run_is_never_timed_and_sides_alternate() -> None:
    order: list[str] = []
    cold = {"a": True, "b": True}

    def side(name: str, cold_s: float):  # noqa: ANN202 - a closure per side
        def run() -> str:
            order.append(name)
            if cold[name]:  # the first call pays (page faults, lazy initialisation)
                cold[name] = False
                time.sleep(cold_s)
            return name

        return run

    rows = alternate({"a": side("a", 0.3), "b": side("b", 0.0)}, reps=3)
    assert order == ["a", "b"] * 4  # one warm-up each, then A B A B A B
    assert len(rows["a"]["times"]) == 3 and rows["a"]["max_s"] < 0.3  # the cold run is not among them
    for row in rows.values():
        assert row["min_s"] <= row["median_s"] <= row["max_s"]
        assert len(row["page_faults"]) == 3 and row["result"] in ("a", "b")


def test_tiny_run_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tiny", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["vocab"] == TINY["vocab"]
    for case, names, reps in (("logits", LOGITS_SIDES, TINY["reps"]), ("hidden", HIDDEN_SIDES, TINY["hidden_reps"])):
        assert report[case]["steps"] == TINY["steps" if case == "logits" else "hidden_steps"]
        for name in names:
            row = report[case]["sides"][name]
            assert len(row["times"]) == reps and row["median_s"] > 0
            assert row["extra_peak_mib"] is not None and row["extra_peak_mib"] >= 0  # Linux: VmHWM was reset
    for name in LOGITS_SIDES:
        assert report["logits"]["sides"][name]["max_abs_err_vs_f64"] < 1e-5
    assert report["hidden"]["sides"]["kl_from_hidden"]["max_abs_diff_vs_full_logits"] < 1e-4
    assert report["kl_per_position_speedup"] > 0 and report["kl_from_hidden_speedup"] > 0
    assert len(report["load_average"]) == 2


def test_size_flags() -> None:
    args = parse_args(["--vocab", "128", "--steps", "8", "--reps", "1"])
    assert (args.vocab, args.steps, args.reps, args.hidden_steps) == (128, 8, 1, 2048)
    assert parse_args(["--tiny", "--vocab", "999"]).vocab == TINY["vocab"]  # --tiny wins: it is one preset
    with pytest.raises(SystemExit):
        parse_args(["--steps", "0"])


def test_report_of_one_comparison_gives_its_ratios_only() -> None:
    args = parse_args(["--only", "logits"])
    args.load_before = [1.0]
    sides = {
        "plain": {"median_s": 2.0, "extra_peak_mib": 2400.0},
        "kl_per_position": {"median_s": 0.5, "extra_peak_mib": 24.0},
    }
    rep = report(args, {"logits": {"steps": 512, "threads": 1, "sides": sides}})
    assert rep["kl_per_position_speedup"] == 4.0 and rep["kl_per_position_memory_ratio"] == 0.01
    assert "hidden" not in rep and "kl_from_hidden_speedup" not in rep
