"""Benchmark the full-vocabulary KL against the naive formula (CPU, fp32).

Two comparisons, each measurement in its own subprocess so peak memory is
honest (tracemalloc does not see torch's allocations):

1. ``kl_per_position`` vs naive ``log_softmax`` x2, ``exp``, product, sum on
   ``[T, V]`` logits: time, extra peak memory, max |error| vs a float64 reference.
2. ``kl_from_hidden`` vs "full student logits, then KL" at a realistic hidden size.

Peak memory: after building its inputs a worker resets the kernel's peak-RSS
counter (``echo 5 > /proc/self/clear_refs``), runs the method once, and reads
``VmHWM``; extra peak = VmHWM - RSS before the run. Where the counter cannot be
reset it falls back to ``ru_maxrss`` (then input construction must not peak).

    .venv/bin/python scripts/bench_kl.py            # table
    .venv/bin/python scripts/bench_kl.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


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


def _worker(case: str, method: str, steps: int, vocab: int, hidden: int, reps: int) -> dict:
    import torch

    from eval.kl import kl_from_hidden, kl_per_position

    torch.manual_seed(0)
    if case == "logits":
        teacher = torch.randn(steps, vocab).mul_(3.0)
        student = torch.randn(steps, vocab).add_(teacher)

        def naive() -> torch.Tensor:
            lt = torch.log_softmax(teacher, -1)
            ls = torch.log_softmax(student, -1)
            return (lt.exp() * (lt - ls)).sum(-1)

        run = {"naive": naive, "chunked": lambda: kl_per_position(teacher, student)}[method]
    else:
        weight = torch.randn(vocab, hidden).mul_(hidden**-0.5)
        states = torch.randn(steps, hidden)
        teacher = torch.randn(steps, vocab).mul_(2.0)
        for rows in teacher.split(64):  # normalise to log-probs in place, without a [T, V] temporary
            rows.sub_(rows.logsumexp(-1, keepdim=True))

        def full() -> torch.Tensor:
            return kl_per_position(teacher, states @ weight.T)

        run = {"full_logits": full, "hidden": lambda: kl_from_hidden(teacher, states, weight)}[method]
    reset = _reset_peak()
    before_kib = _status_kib("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    result = run()
    first = time.perf_counter() - t0
    peak_kib = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = [first]
    for _ in range(reps - 1):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    out = {"case": case, "method": method, "seconds": min(times), "extra_peak_mib": (peak_kib - before_kib) / 1024}
    out["peak_counter"] = "VmHWM" if reset else "ru_maxrss"
    if case == "logits":
        out["max_abs_err_vs_f64"] = _max_err_f64(teacher, student, result)
    else:
        out["result"] = result.tolist()
    return out


def _max_err_f64(teacher, student, got) -> float:  # noqa: ANN001 - torch is imported lazily
    import torch

    worst = 0.0
    for start in range(0, teacher.shape[0], 16):
        lt = torch.log_softmax(teacher[start : start + 16].double(), -1)
        ls = torch.log_softmax(student[start : start + 16].double(), -1)
        ref = (lt.exp() * (lt - ls)).sum(-1)
        worst = max(worst, float((got[start : start + 16].double() - ref).abs().max()))
    return worst


def _spawn(case: str, method: str, args: argparse.Namespace, steps: int, reps: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", case, method, "--vocab", str(args.vocab)]
    cmd += ["--hidden", str(args.hidden), "--steps", str(steps), "--reps", str(reps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    shown = {k: v for k, v in row.items() if k != "result"}
    print(json.dumps(shown), file=sys.stderr, flush=True)  # partial figures survive an interrupted run
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=248_320)
    parser.add_argument("--steps", type=int, default=512, help="positions for the logits comparison")
    parser.add_argument("--hidden-steps", type=int, default=2048, help="positions for the hidden-state comparison")
    parser.add_argument("--hidden", type=int, default=2560)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(*args.worker, args.steps, args.vocab, args.hidden, args.reps)))
        return
    naive = _spawn("logits", "naive", args, args.steps, args.reps)
    chunked = _spawn("logits", "chunked", args, args.steps, args.reps)
    full = _spawn("hidden", "full_logits", args, args.hidden_steps, 1)
    hidden = _spawn("hidden", "hidden", args, args.hidden_steps, 1)
    diff = max(abs(a - b) for a, b in zip(full.pop("result"), hidden.pop("result"), strict=True))
    report = {
        "vocab": args.vocab,
        "logits": {"steps": args.steps, "naive": naive, "chunked": chunked},
        "hidden": {"steps": args.hidden_steps, "hidden_size": args.hidden, "full_logits": full, "hidden": hidden},
        "speedup": naive["seconds"] / chunked["seconds"],
        "memory_ratio": chunked["extra_peak_mib"] / naive["extra_peak_mib"],
        "hidden_speed_ratio": full["seconds"] / hidden["seconds"],
        "hidden_memory_ratio": hidden["extra_peak_mib"] / full["extra_peak_mib"],
        "hidden_max_abs_diff": diff,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"V={args.vocab}, fp32, CPU threads={_threads()}")
    print(f"{'comparison':<34}{'seconds':>10}{'extra peak MiB':>16}{'max |err|':>12}")
    for name, row in ((f"naive KL, T={args.steps}", naive), (f"kl_per_position, T={args.steps}", chunked)):
        print(f"{name:<34}{row['seconds']:>10.3f}{row['extra_peak_mib']:>16.1f}{row['max_abs_err_vs_f64']:>12.2e}")
    for name, row in ((f"full logits + KL, T={args.hidden_steps}", full), ("kl_from_hidden", hidden)):
        print(f"{name:<34}{row['seconds']:>10.3f}{row['extra_peak_mib']:>16.1f}{diff:>12.2e}")
    print(
        f"speedup {report['speedup']:.1f}x, memory {100 * report['memory_ratio']:.1f}% of naive; "
        f"hidden path {report['hidden_speed_ratio']:.2f}x speed, {100 * report['hidden_memory_ratio']:.1f}% memory"
    )


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
