"""What the on-policy guard adds to a round on this machine, at the demo's settings.

    OMP_NUM_THREADS=1 .venv/bin/python -m scripts.bench_onpolicy [--reps 5]
    OMP_NUM_THREADS=1 .venv/bin/python -m scripts.bench_onpolicy --prompts 40 --new-tokens 128 --guard-tokens 32

One round of the demo's second epoch (king strong; challengers better, marginal and the
looper) runs through the pod routine (``eval.runner.run_job``) three ways on the same
prompts: guard off (``onpolicy_prompts = 0``), guard on with the teacher kept loaded, and
guard on with the teacher freed and reloaded at the end. After one warm-up each, the three
alternate ``--reps`` times (LESSONS 30); medians are reported, each run in brackets, plus
the guard's own seconds as the pod reports them (each model's ``timings.onpolicy_s`` and
the teacher's ``onpolicy_s``). Prints a Markdown table for docs/benchmarks.md. The flags
change the round's shape (the second line above keeps production's proportions, 40 prompts
and guard tokens a quarter of the teacher's, at a quarter of the lengths).

The GPU figure comes from ``eval.onpolicy.measure_onpolicy`` (one student, both models
loaded), which scripts/bench_gpu.py can call with real-shaped models.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from eval.downloads import DiskLimits
from eval.model_store.local import LocalHub
from eval.prompts import LocalCorpus, sample_prompts
from eval.rules import ContestRules
from eval.runner import run_job
from eval.schemas import EvalJob, EvalResult
from scripts.demo import DEMO_RULES
from scripts.demo_cast import Recipe, build_cast, publish_dir
from scripts.pod_fixtures import ref

ROOT = Path(__file__).resolve().parents[1]

BLOCK_HASH = "0x" + "5a" * 32
MODELS = ("strong", "better", "marginal", "looper")


def guard_seconds(result: EvalResult) -> float:
    return sum(m.timings.onpolicy_s for m in result.models) + result.teacher.onpolicy_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=DEMO_RULES["prompts_per_round"])
    ap.add_argument("--new-tokens", type=int, default=DEMO_RULES["max_new_tokens"])
    ap.add_argument("--guard-prompts", type=int, default=DEMO_RULES["onpolicy_prompts"])
    ap.add_argument("--guard-tokens", type=int, default=DEMO_RULES["onpolicy_new_tokens"])
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    rules = ContestRules.model_validate(
        {
            **DEMO_RULES,
            "prompts_per_round": args.prompts,
            "max_new_tokens": args.new_tokens,
            "onpolicy_prompts": args.guard_prompts,
            "onpolicy_new_tokens": args.guard_tokens,
            "generation_batch_prompts": args.prompts,
        }
    )
    dirs = build_cast(Recipe(rules=dict(DEMO_RULES)), ROOT / "state" / "demo" / "cast", lambda _m: None, MODELS)
    prompts = sample_prompts(BLOCK_HASH, rules, LocalCorpus(None))
    variants = {
        "guard off": (rules.model_copy(update={"onpolicy_prompts": 0}), "auto"),
        "guard on, teacher resident": (rules, "resident"),
        "guard on, teacher reloaded": (rules, "deferred"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        hub = LocalHub(Path(tmp) / "hub")
        revs = {n: publish_dir(hub, f"demo/{n}", dirs[n]) for n in ("teacher", *MODELS)}
        refs = [ref(f"demo/{n}", revs[n], i + 1, 10 + i) for i, n in enumerate(MODELS)]
        walls: dict[str, list[float]] = {k: [] for k in variants}
        guard: dict[str, list[float]] = {k: [] for k in variants}
        for rep in range(args.reps + 1):
            for name, (r, mode) in variants.items():
                job = EvalJob(
                    job_id=f"bench-{rep}-{len(walls[name])}-{mode}",
                    block=1,
                    block_hash=BLOCK_HASH,
                    rules=r,
                    teacher_revision=revs["teacher"],
                    prompts=prompts,
                    king=refs[0],
                    challengers=refs[1:],
                )
                t0 = time.monotonic()
                result = run_job(
                    job, hub, Path(tmp) / "pod", "cpu", limits=DiskLimits(min_free_bytes=0), onpolicy_mode=mode
                )  # type: ignore[arg-type]
                wall = time.monotonic() - t0
                if rep > 0:  # the first pass warms every path up
                    walls[name].append(wall)
                    guard[name].append(guard_seconds(result))
    off = statistics.median(walls["guard off"])
    print(
        f"| demo round: king + 3 challengers, {len(prompts)} prompts x {rules.max_new_tokens} tokens, guard "
        f"{rules.onpolicy_prompts} prompts x {rules.onpolicy_new_tokens} tokens (CPU) | median wall | runs | "
        "guard's own seconds (median) | extra wall vs off |"
    )
    print("|---|---|---|---|---|")
    for name in variants:
        med = statistics.median(walls[name])
        runs = " / ".join(f"{w:.2f}" for w in walls[name])
        extra = "-" if name == "guard off" else f"+{med - off:.2f} s ({(med - off) / off:+.0%})"
        print(f"| {name} | {med:.2f} s | {runs} | {statistics.median(guard[name]):.2f} s | {extra} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
