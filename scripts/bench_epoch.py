"""Measure one validator epoch's pod work and host-side overhead on a busy subnet.

Setup: a SimChain with 256 registered hotkeys (255 miners + the validator), 200
submissions committed on chain and already admitted and evaluated in the store
(with a king), and 1 new challenger committed on chain whose model sits in a
LocalHub with a tiny real teacher. The epoch runs the real loop (sync, real
admission of the newcomer, plan, prompt sampling, recording, weights) against a
counting pod that returns a well-formed result instantly, so the CPU time of the
epoch is the host's own. Then a second epoch with no new challenger.

    .venv/bin/python -m scripts.bench_epoch
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bittensor.keyfiles import Keypair

from eval.admission import TeacherSpec, check_model
from eval.model_store.local import LocalHub
from eval.prompts import LocalCorpus
from eval.rules import ContestRules
from eval.schemas import EvalJob, EvalResult, ModelResult, OnPolicyPrompt, TeacherInfo
from eval.stats import expected_onpolicy
from validator.admit import record_attempt
from validator.chain.commitments import format_commitment
from validator.chain.sim import SimChain
from validator.contest import NewSubmission
from validator.loop import LoopConfig, Validator
from validator.store.database import Store

VOCAB = 512
RULES = ContestRules(
    teacher_repo="demo/teacher",
    vocab_size=VOCAB,
    prompts_per_round=40,
    max_new_tokens=8,
    prompt_min_chars=40,
    prompt_max_chars=400,
)


class CountingPod:
    """Counts teacher passes and student evaluations; returns a valid result at once."""

    def __init__(self) -> None:
        self.jobs = 0
        self.teacher_passes = 0
        self.student_evals = 0
        self.cpu_s = 0.0

    def health(self) -> dict[str, Any]:
        return {"state": "idle"}

    def run(self, job: EvalJob, deadline_s: float) -> EvalResult:
        t0 = time.thread_time()
        self.jobs += 1
        self.teacher_passes += 1
        self.student_evals += len(job.models)
        n = len(job.prompts)
        own = [
            OnPolicyPrompt(tokens=8, teacher_nll=0.7, reverse_kl=0.1, repetition=0.0, text="its own text")
            for _ in range(job.rules.guarded_prompts(n))
        ]
        models = [
            ModelResult(
                ref=m,
                status="ok",
                prompt_kl=[0.5 + 0.01 * i + 0.001 * (p % 3) for p in range(n)],
                prompt_tokens=[8] * n,
                content_hash=hashlib.sha256(m.revision.encode()).hexdigest(),
                fingerprint=[0.1 * i, 0.2],
                onpolicy=own,
            )
            for i, m in enumerate(job.models)
        ]
        king_kl = models[0].prompt_kl if job.king is not None else None  # a pod measures the king and KL winners only
        models = [
            m
            if expected_onpolicy(job.king is not None and i == 0, king_kl, m.prompt_kl, job.rules, n)
            else m.model_copy(update={"onpolicy": []})
            for i, m in enumerate(models)
        ]
        teacher = TeacherInfo(repo=job.rules.teacher_repo, continuation_tokens=[8] * n)
        result = EvalResult(job_id=job.job_id, block_hash=job.block_hash, teacher=teacher, models=models)
        self.cpu_s += time.thread_time() - t0
        return result


class CountingStore:
    """The LocalHub, counting every call the validator makes to it."""

    def __init__(self, inner: LocalHub) -> None:
        self.inner, self.calls = inner, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)

        def counted(*a: Any, **kw: Any) -> Any:
            self.calls += 1
            return attr(*a, **kw)

        return counted if callable(attr) else attr


def main() -> int:
    from scripts.tiny_models import save_model_dir, tiny_config, tiny_model, train_tokenizer

    root = Path(tempfile.mkdtemp(prefix="bench-epoch-"))
    tok, cfg = train_tokenizer(VOCAB), tiny_config(VOCAB)
    hub = LocalHub(root / "hub")
    revs = {
        name: hub.publish(name, save_model_dir(tiny_model(cfg, seed), tok, root / "src" / str(seed)))
        for name, seed in (("demo/teacher", 0), ("new/challenger", 1), ("miner0/model", 2))
    }
    validator_hk = str(Keypair.create_from_uri("//validator").ss58_address)
    chain = SimChain(root / "chain.db", 1, block_time=3600.0, hotkey=validator_hk, weights_rate_limit=5)
    chain.register(validator_hk, validator_hk, stake=1000.0, validator_permit=True)
    miners = [str(Keypair.create_from_uri(f"//miner{i}").ss58_address) for i in range(255)]
    for hk in miners:
        chain.register(hk, hk)
    store = Store.open(root / "validator.db")
    subs = []
    for i, hk in enumerate(miners[:200]):  # 200 known submissions: committed on chain, admitted, evaluated
        rev = revs["miner0/model"] if i == 0 else hashlib.sha1(f"m{i}".encode()).hexdigest()  # 0 is the king
        text = format_commitment(f"miner{i}/model", rev)
        SimChain(root / "chain.db", 1, hotkey=hk).commit(text)
        subs.append(NewSubmission(hk, chain.head().number, i + 1, hk, text, "pending", f"miner{i}/model", rev))
        chain.advance(1)
    store.add_submissions(subs)
    with store.transaction():
        for i, s in enumerate(subs):
            record_attempt(store, s.key, "admitted", params=1000, metadata_hash=f"{i:064x}")
            store.set_status(s.key, "evaluated", "lost")
        store.set_king(subs[0].key, chain.head().number, None, 0.5, "seeded")
    chain.advance(10)
    challenger = miners[200]
    text = format_commitment("new/challenger", revs["new/challenger"])
    SimChain(root / "chain.db", 1, hotkey=challenger).commit(text)
    chain.advance(1)

    pod, counted = CountingPod(), CountingStore(hub)
    admissions: list[str] = []

    def check(*a: Any, **kw: Any) -> Any:
        admissions.append(a[1])
        return check_model(*a, **kw)

    v = Validator(
        chain,
        store,
        counted,
        pod,
        LocalCorpus(None),
        RULES,
        lambda: TeacherSpec.from_store(hub, "demo/teacher", revs["demo/teacher"]),
        LoopConfig(),
        check=check,
    )
    t0, w0 = time.process_time(), time.perf_counter()
    report = v.epoch()
    cpu = time.process_time() - t0 - pod.cpu_s
    wall = time.perf_counter() - w0
    print(f"epoch 1 (1 new challenger): round={report.round_kind}/{report.round_state} weights={report.weights}")
    print(f"  pod jobs={pod.jobs} teacher passes={pod.teacher_passes} student evaluations={pod.student_evals}")
    print(f"  admission calls={len(admissions)} ({admissions}); model-store calls={counted.calls}")
    print(f"  host CPU excluding the pod={cpu:.3f}s wall={wall:.3f}s")
    chain.advance(1)
    jobs, admitted, calls = pod.jobs, len(admissions), counted.calls
    t0 = time.process_time()
    report = v.epoch()
    cpu2 = time.process_time() - t0
    print(
        f"epoch 2 (0 new challengers): round={report.round_kind} pod calls={pod.jobs - jobs} "
        f"admission calls={len(admissions) - admitted} model-store calls={counted.calls - calls} "
        f"host CPU={cpu2:.3f}s"
    )
    ok = (pod.teacher_passes, pod.student_evals, len(admissions), pod.jobs - jobs, len(admissions) - admitted) == (
        1,
        2,
        1,
        0,
        0,
    ) and cpu < 1.0
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
