"""Pod figures on this machine: per-phase wall time, HTTP-path overhead vs LocalPod, worker peak RSS.

    OMP_NUM_THREADS=1 .venv/bin/python -m scripts.bench_pod --reps 3   # tiny teacher + 3 tiny students, 8 x 32

LocalPod and HttpPod runs alternate ``--reps`` times after one warm-up each, so
load from other processes hits both paths alike; medians are reported.

Prints a Markdown table for docs/benchmarks.md. Everything is local: a LocalHub
in a temp dir, a real ``python -m validator.pod`` subprocess on loopback and a
throwaway hotkey.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from eval.downloads import DiskLimits
from eval.rules import ContestRules
from eval.schemas import EvalResult, JobProgress, JobStatus
from scripts.pod_fixtures import build_hub, free_port, hub_job, make_wallet, pod_args
from validator.local_pod import LocalPod
from validator.pod_client import HttpPod

ROOT = Path(__file__).resolve().parents[1]

PROMPTS = [f"Report {i}: the river valley held farms, mills and a market where traders" for i in range(8)]


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class CountingPod(HttpPod):
    polls = 0

    def status(self, job_id: str, deadline: float | None = None) -> JobStatus:
        self.polls += 1
        return super().status(job_id, deadline)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--poll", type=float, default=0.05)
    ap.add_argument("--reps", type=int, default=3, help="alternating LocalPod/HttpPod runs (medians reported)")
    args = ap.parse_args()
    rules = ContestRules(
        teacher_repo="test/teacher",
        vocab_size=512,
        prompts_per_round=8,
        max_new_tokens=args.new_tokens,
        early_stop_min_prompts=8,
        max_prompt_tokens=64,
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-pod-"))
    store, revs = build_hub(tmp)
    wallet = make_wallet(tmp / "wallets", "validator")

    def job(job_id: str, n_students: int = 3):
        chosen = ["miner/king", "miner/c0", "miner/c1"][:n_students]
        return hub_job(revs, chosen, job_id, prompts=PROMPTS, rules=rules)

    # LocalPod, warm (imports and teacher snapshot done once), per-phase timing from progress.
    local = LocalPod(store, tmp / "local", "cpu", limits=DiskLimits(min_free_bytes=0))
    local.run(job("warm"), 600)

    def run_local(rep: int) -> tuple[float, dict[str, float], EvalResult]:
        marks: list[tuple[float, str]] = []
        t0 = time.perf_counter()
        res = LocalPod(
            store, tmp / "local", "cpu", limits=DiskLimits(min_free_bytes=0), on_progress=lambda p: _mark(marks, p)
        ).run(job(f"local-{rep}"), 600)
        secs = time.perf_counter() - t0
        return secs, _phase_totals(marks, t0 + secs), res

    # HTTP path: a real pod subprocess, signed calls, polling.
    port = free_port()
    cmd = [sys.executable, *pod_args(port, wallet.hotkey.ss58_address, store.root, tmp / "pod")]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    local_runs: list[float] = []
    http_runs: list[float] = []
    http_gaps: list[float] = []  # client wall time minus the pod's own total_s: the cost of the HTTP path
    poll_ms: list[float] = []
    polls: list[int] = []
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        idle_rss = rss_kb(proc.pid, "VmRSS")
        pod = CountingPod(url, wallet, poll_interval=args.poll, max_poll_interval=args.poll)
        pod.run(job("warm-1", 1), 600)
        hwm_one = rss_kb(proc.pid, "VmHWM")
        for rep in range(args.reps):
            secs, phases, result = run_local(rep)
            local_runs.append(secs)
            pod.polls = 0
            t1 = time.perf_counter()
            remote = pod.run(job(f"http-{rep}"), 600)
            http_runs.append(time.perf_counter() - t1)
            http_gaps.append(http_runs[-1] - remote.total_s)
            polls.append(pod.polls)
        for _ in range(20):  # one signed poll of a finished job, pod idle: sign, send, verify, nonce commit, answer
            t2 = time.perf_counter()
            pod.status("http-0")
            poll_ms.append((time.perf_counter() - t2) * 1000)
        hwm_three = rss_kb(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(10)
    local_s, http_s = statistics.median(local_runs), statistics.median(http_runs)
    pod.polls = int(statistics.median(polls))
    overhead = http_s - local_s
    allowed = 0.05 * local_s + 0.05 * pod.polls
    print(f"| tiny teacher + 3 students, 8 prompts x {args.new_tokens} tokens (CPU) | value |")
    print("|---|---|")
    for name, secs in phases.items():
        print(f"| phase `{name}` (last LocalPod run) | {secs:.2f} s |")
    for m in result.models:
        t = m.timings
        print(f"| {m.ref.repo}: download / load / score | {t.download_s:.2f} / {t.load_s:.2f} / {t.score_s:.2f} s |")
    print(f"| LocalPod total, median of {args.reps} (each run) | {local_s:.2f} s ({_runs(local_runs)}) |")
    print(
        f"| HttpPod total, median ({pod.polls} polls at {args.poll * 1000:.0f} ms) | {http_s:.2f} s "
        f"({_runs(http_runs)}) |"
    )
    gap = statistics.median(http_gaps)
    print(f"| HttpPod wall minus the pod's own job time (median) | {gap:.2f} s ({_runs(http_gaps)}) |")
    print(
        f"| one signed poll, pod idle (median / max of 20) | {statistics.median(poll_ms):.1f} / {max(poll_ms):.1f} ms |"
    )
    print(
        f"| HTTP overhead (median wall difference) | {overhead:+.2f} s ({overhead / local_s * 100:+.1f}%); "
        "budget 5% + 50 ms/poll = "
        f"{allowed:.2f} s: {'within' if overhead <= allowed else 'OVER'} |"
    )
    print(
        f"| worker RSS idle / peak after 1-student job / peak after 3-student job | "
        f"{idle_rss / 1024:.0f} / {hwm_one / 1024:.0f} / {hwm_three / 1024:.0f} MiB |"
    )
    return 0


def _runs(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def _mark(marks: list[tuple[float, str]], p: JobProgress) -> None:
    if not marks or marks[-1][1] != p.phase:
        marks.append((time.perf_counter(), p.phase))


def _phase_totals(marks: list[tuple[float, str]], end: float) -> dict[str, float]:
    totals: dict[str, float] = {}
    for (t, phase), nxt in zip(marks, [m[0] for m in marks[1:]] + [end], strict=True):
        totals[phase] = totals.get(phase, 0.0) + (nxt - t)
    totals.pop("done", None)
    return totals


if __name__ == "__main__":
    sys.exit(main())
