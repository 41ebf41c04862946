"""Load figure for the public API: /api/scores under wrk while a writer records rounds.

    .venv/bin/python -m scripts.bench_api --miners 256 --rounds 1000 --workers 2 --duration 20

Builds (or reuses) a store with the real validator code (scripts/contest_store.py), starts
``python -m api`` with N uvicorn workers on loopback (rate limit raised out of the way,
the limiter still runs on every request), runs a writer thread that records king-defence
rounds and live progress through ``Store`` for the whole measurement, and runs ``wrk``
(Debian package) or, without it, a small asyncio httpx load loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from eval.rules import ContestRules
from eval.schemas import EvalResult, ModelRef, ModelResult, OnPolicyPrompt, SubmissionId, TeacherInfo
from scripts.contest_store import build_store
from scripts.pod_fixtures import free_port
from validator.contest import RoundPlan
from validator.rounds import record_outcome
from validator.store.database import Store
from validator.verdicts import interpret_result

ROOT = Path(__file__).resolve().parent.parent


def writer(db: Path, stop: threading.Event, stats: dict[str, int]) -> None:
    """Record king-only rounds (king defends) with per-prompt progress, as the validator loop does."""
    store = Store.open(db)
    try:
        while not stop.is_set():
            king = store.current_king()
            latest = store.latest_rules()
            assert king is not None and latest is not None, "the seeded store has a king and a round"
            cand = next(c for c in store.candidates([king.hotkey]) if c.hotkey == king.hotkey)
            rules = ContestRules.model_validate(latest.rules)
            n = rules.prompts_per_round
            block = 10_000_000 + stats["rounds"]
            bh = "0x" + f"{block:064x}"
            rid = store.create_round("challenge", block, bh, ["a" * 64] * n, rules, [cand.key], cand.key)
            store.mark_dispatched(rid, "http://127.0.0.1:1", f"bench-{rid}-{time.time_ns()}")
            for i in range(n):
                store.set_progress({"round_id": rid, "phase": "student", "prompt": i, "prompt_count": n})
                stats["writes"] += 1
                time.sleep(0.025)  # a fast pod: 40 prompts scored per second
            ref = ModelRef(
                repo=cand.repo,
                revision=cand.revision,
                submission=SubmissionId(hotkey=cand.hotkey, commit_block=cand.commit_block),
            )
            kls = [0.3 + 0.001 * i for i in range(n)]
            res = EvalResult(
                job_id=f"bench-{rid}",
                block_hash=bh,
                teacher=TeacherInfo(repo=rules.teacher_repo, continuation_tokens=[64] * n),
                models=[
                    ModelResult(
                        ref=ref,
                        status="ok",
                        prompt_kl=kls,
                        prompt_tokens=[64] * n,
                        onpolicy=[
                            OnPolicyPrompt(
                                tokens=64, teacher_nll=0.7, reverse_kl=0.1, repetition=0.0, text="its own text"
                            )
                        ]
                        * rules.guarded_prompts(n),
                    )
                ],
            )
            plan = RoundPlan("challenge", cand, ())
            record_outcome(store, rid, interpret_result(plan, res, rules), res, block)
            stats["rounds"] += 1
            time.sleep(0.5)
    finally:
        store.close()


def run_wrk(url: str, duration: int, connections: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print(out)

    def ms(tok: str) -> float:
        v, unit = re.match(r"([\d.]+)(us|ms|s)", tok).groups()  # type: ignore[union-attr]
        return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "tool": "wrk",
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else "",
    }


async def run_httpx(url: str, duration: int, connections: int) -> dict[str, float]:
    lat: list[float] = []
    bad = 0
    end = time.perf_counter() + duration
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=connections)) as client:

        async def one() -> None:
            nonlocal bad
            while time.perf_counter() < end:
                t = time.perf_counter()
                r = await client.get(url)
                lat.append(time.perf_counter() - t)
                bad += r.status_code != 200

        t0 = time.perf_counter()
        await asyncio.gather(*[one() for _ in range(connections)])
        wall = time.perf_counter() - t0
    lat.sort()
    return {
        "tool": "httpx",
        "rps": len(lat) / wall,
        "p50_ms": lat[len(lat) // 2] * 1e3,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
        "non_2xx": bad,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, default=ROOT / "state" / "bench" / "validator.db")
    ap.add_argument("--miners", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--path", default="/api/scores")
    ap.add_argument("--rebuild", action="store_true")
    a = ap.parse_args()
    if a.rebuild or not a.db.exists():
        a.db.parent.mkdir(parents=True, exist_ok=True)
        for p in a.db.parent.glob("*.db*"):
            p.unlink()
        t = time.time()
        b = build_store(
            a.db,
            a.db.parent / "chain.db",
            n_miners=a.miners,
            n_rounds=a.rounds,
            prompts=40,
            max_challengers=4,
            live_round=False,
            progress=lambda n: print(f"round {n}", end="\r"),
        )
        print(
            f"built store: {len(b.done_rounds)} done + {len(b.failed_rounds)} failed rounds in {time.time() - t:.0f}s"
        )
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "api",
            "--db",
            str(a.db),
            "--port",
            str(port),
            "--workers",
            str(a.workers),
            "--rate",
            "1e9",
            "--burst",
            "1e9",
        ],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}{a.path}"
    stop, stats = threading.Event(), {"rounds": 0, "writes": 0}
    try:
        for _ in range(100):
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        size = len(httpx.get(url).content)
        w = threading.Thread(target=writer, args=(a.db, stop, stats), daemon=True)
        w.start()
        time.sleep(1.0)
        res = (
            run_wrk(url, a.duration, a.connections, a.threads)
            if shutil.which("wrk")
            else asyncio.run(run_httpx(url, a.duration, a.connections))
        )
        stop.set()
        w.join(timeout=30)
        ro = Store.open_readonly(a.db)
        summary = {
            **res,
            "path": a.path,
            "response_bytes": size,
            "workers": a.workers,
            "connections": a.connections,
            "rounds_in_store": ro.rounds(1, 1)["total"],
            "submissions": len(ro.commitments()),
            "writer_rounds_recorded": stats["rounds"],
            "writer_progress_writes": stats["writes"],
        }
        ro.close()
        print(json.dumps(summary, indent=2))
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
