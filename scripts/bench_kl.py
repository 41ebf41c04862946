"""Benchmark the full-vocabulary KL against the plain formula (CPU, fp32).

Two comparisons, each in its own worker process (both of its sides share it):

1. ``logits``: ``kl_per_position`` vs the plain formula (``log_softmax`` x2,
   ``exp``, product, sum) on ``[T, V]`` logits: time, extra peak memory, max
   |error| vs a float64 reference.
2. ``hidden``: ``kl_from_hidden`` vs "full student logits, then KL" at a
   realistic hidden size: time, extra peak memory, max |difference|.

Fair timing (a first run pays page faults, lazy initialisation and cache
misses that later runs do not): every side runs once untimed before any side
is timed, then the repetitions alternate, A B A B ..., so load from other
processes hits both sides alike; medians are reported with min and max.

Peak memory: before every run the worker resets the kernel's peak-RSS counter
(``echo 5 > /proc/self/clear_refs``) and reads ``VmHWM`` after it; a side's
extra peak is the largest ``VmHWM - RSS before`` over its runs (tracemalloc
cannot see torch's allocator). Where the counter cannot be reset (not Linux),
memory is reported as not measured.

    OMP_NUM_THREADS=1 .venv/bin/python -m scripts.bench_kl            # table
    OMP_NUM_THREADS=1 .venv/bin/python -m scripts.bench_kl --json     # machine-readable
    .venv/bin/python -m scripts.bench_kl --tiny                       # small sizes, seconds (tested)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOGITS_SIDES = ("plain", "kl_per_position")
HIDDEN_SIDES = ("full_logits", "kl_from_hidden")
CASES = {"logits": LOGITS_SIDES, "hidden": HIDDEN_SIDES}  # comparison -> (what it replaces, the project's side)
TINY = {"vocab": 4096, "steps": 64, "hidden_steps": 64, "hidden": 64, "reps": 3, "hidden_reps": 2}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_once(run: Callable[[], Any]) -> tuple[float, float | None, int, Any]:
    """Seconds, extra peak RSS in MiB (None when unmeasurable), minor page faults and the result of one run.

    The page faults show what a side pays for memory it touches for the first
    time: freed blocks this large go back to the kernel, so that is every run.
    """
    reset = _reset_peak()
    before = _status_kib("VmRSS") if reset else 0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    extra = (_status_kib("VmHWM") - before) / 1024 if reset else None
    return seconds, extra, faults, result


def alternate(sides: dict[str, Callable[[], Any]], reps: int, warmup: int = 1) -> dict[str, dict[str, Any]]:
    """Warm every side up, then time ``reps`` rounds of A B A B ...; per side: times, peak, last result.

    Warm-up runs count for memory (the first run is where a side allocates the
    most) but not for time.
    """
    out: dict[str, dict[str, Any]] = {name: {"times": [], "page_faults": [], "extra_peak_mib": None} for name in sides}

    def record(name: str, timed: bool) -> None:
        seconds, extra, faults, result = measure_once(sides[name])
        row = out[name]
        if timed:
            row["times"].append(seconds)
            row["page_faults"].append(faults)
        if extra is not None:
            row["extra_peak_mib"] = max(extra, row["extra_peak_mib"] or 0.0)
        row["result"] = result

    for _ in range(warmup):
        for name in sides:
            record(name, timed=False)
    for _ in range(reps):
        for name in sides:
            record(name, timed=True)
    for row in out.values():
        times = row["times"]
        row.update(median_s=statistics.median(times), min_s=min(times), max_s=max(times))
        row["median_page_faults"] = int(statistics.median(row["page_faults"]))
    return out


def logits_case(steps: int, vocab: int) -> tuple[dict[str, Callable[[], Any]], Callable[[Any], float]]:
    """The two sides on realistic-ish logits, and an error function against float64."""
    import torch

    from eval.kl import kl_per_position

    torch.manual_seed(0)
    teacher = torch.randn(steps, vocab).mul_(3.0)
    student = torch.randn(steps, vocab).add_(teacher)

    def plain() -> torch.Tensor:
        lt = torch.log_softmax(teacher, -1)
        ls = torch.log_softmax(student, -1)
        return (lt.exp() * (lt - ls)).sum(-1)

    def max_err_f64(got: torch.Tensor) -> float:
        worst = 0.0
        for start in range(0, steps, 16):
            lt = torch.log_softmax(teacher[start : start + 16].double(), -1)
            ls = torch.log_softmax(student[start : start + 16].double(), -1)
            ref = (lt.exp() * (lt - ls)).sum(-1)
            worst = max(worst, float((got[start : start + 16].double() - ref).abs().max()))
        return worst

    return {"plain": plain, "kl_per_position": lambda: kl_per_position(teacher, student)}, max_err_f64


def hidden_case(steps: int, vocab: int, hidden: int) -> dict[str, Callable[[], Any]]:
    """Full logits + KL vs ``kl_from_hidden`` on the same teacher log-probs, hidden states and lm_head."""
    import torch

    from eval.kl import kl_from_hidden, kl_per_position

    torch.manual_seed(0)
    weight = torch.randn(vocab, hidden).mul_(hidden**-0.5)
    states = torch.randn(steps, hidden)
    teacher = torch.randn(steps, vocab).mul_(2.0)
    for rows in teacher.split(64):  # log-probs in place, without a [T, V] temporary
        rows.sub_(rows.logsumexp(-1, keepdim=True))
    return {
        "full_logits": lambda: kl_per_position(teacher, states @ weight.T),
        "kl_from_hidden": lambda: kl_from_hidden(teacher, states, weight),
    }


def run_worker(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """One comparison in this process: both sides warmed up, then alternated."""
    import torch

    if case == "logits":
        sides, err = logits_case(args.steps, args.vocab)
        rows = alternate(sides, args.reps)
        for row in rows.values():
            row["max_abs_err_vs_f64"] = err(row.pop("result"))
        steps = args.steps
    else:
        rows = alternate(hidden_case(args.hidden_steps, args.vocab, args.hidden), args.hidden_reps)
        full, tiled = (rows[name].pop("result") for name in HIDDEN_SIDES)
        rows["kl_from_hidden"]["max_abs_diff_vs_full_logits"] = float((full - tiled).abs().max())
        steps = args.hidden_steps
    return {"case": case, "steps": steps, "threads": torch.get_num_threads(), "sides": rows}


def _spawn(case: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "scripts.bench_kl", "--worker", case, "--vocab", str(args.vocab)]
    cmd += ["--steps", str(args.steps), "--hidden-steps", str(args.hidden_steps), "--hidden", str(args.hidden)]
    cmd += ["--reps", str(args.reps), "--hidden-reps", str(args.hidden_reps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {case} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    row: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(row), file=sys.stderr, flush=True)  # partial figures survive an interrupted run
    return row


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The whole run as one JSON-able dict, with each comparison's speed and memory ratio (new side vs old)."""
    rep: dict[str, Any] = {
        "vocab": args.vocab,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": args.load_before + list(os.getloadavg()[:1]),
        **results,
    }
    if "hidden" in rep:
        rep["hidden"] = {**rep["hidden"], "hidden_size": args.hidden}
    for case, res in results.items():
        old, new = (res["sides"][name] for name in CASES[case])
        rep[f"{CASES[case][1]}_speedup"] = old["median_s"] / new["median_s"]
        rep[f"{CASES[case][1]}_memory_ratio"] = _ratio(new["extra_peak_mib"], old["extra_peak_mib"])
    return rep


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def print_table(rep: dict[str, Any]) -> None:
    before, after = rep["load_average"]
    threads = next(rep[case]["threads"] for case in CASES if case in rep)
    print(f"V={rep['vocab']}, fp32, CPU threads={threads}, 1-min load average {before:.2f} -> {after:.2f}")
    print(
        f"{'side':<36}{'median s':>10}{'min s':>9}{'max s':>9}{'extra peak MiB':>16}{'faults/run':>12}{'max |err|':>11}"
    )
    for case in (c for c in CASES if c in rep):
        res = rep[case]
        for name in CASES[case]:
            row = res["sides"][name]
            label = f"{name}, T={res['steps']}" + (f", H={res['hidden_size']}" if case == "hidden" else "")
            err = row.get("max_abs_err_vs_f64", row.get("max_abs_diff_vs_full_logits"))
            print(
                f"{label:<36}{row['median_s']:>10.3f}{row['min_s']:>9.3f}{row['max_s']:>9.3f}"
                f"{_mib(row['extra_peak_mib']):>16}{row['median_page_faults']:>12}"
                f"{'-' if err is None else f'{err:.1e}':>11}"
            )
    for case in (c for c in CASES if c in rep):
        old, new = CASES[case]
        mem = rep[f"{new}_memory_ratio"]
        print(
            f"{new}: {rep[f'{new}_speedup']:.2f}x the speed of {old}, "
            f"{'n/a' if mem is None else f'{100 * mem:.1f}%'} of its extra peak memory"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_kl", description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=248_320)
    parser.add_argument("--steps", type=int, default=512, help="positions for the logits comparison")
    parser.add_argument("--hidden-steps", type=int, default=2048, help="positions for the hidden-state comparison")
    parser.add_argument("--hidden", type=int, default=2560)
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per side, logits comparison")
    parser.add_argument("--hidden-reps", type=int, default=3, help="timed repetitions per side, hidden comparison")
    parser.add_argument("--tiny", action="store_true", help=f"small sizes for a quick check: {TINY}")
    parser.add_argument("--only", choices=tuple(CASES), help="run one comparison (the hidden one takes minutes)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", choices=("logits", "hidden"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    if min(args.vocab, args.steps, args.hidden_steps, args.hidden, args.reps, args.hidden_reps) < 1:
        parser.error("sizes and repetitions must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker, args)))
        return 0
    args.load_before = list(os.getloadavg()[:1])
    rep = report(args, {case: _spawn(case, args) for case in CASES if args.only in (None, case)})
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print_table(rep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
