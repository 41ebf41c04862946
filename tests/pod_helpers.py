"""Shared pieces for the pod tests: real hotkeys, jobs, a loopback server, a deterministic runner."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bittensor as bt
import uvicorn

from eval.rules import ContestRules
from eval.schemas import (
    EvalJob,
    EvalResult,
    JobProgress,
    ModelRef,
    ModelResult,
    OnPolicyPrompt,
    SubmissionId,
    TeacherInfo,
)
from eval.stats import expected_onpolicy

BLOCK_HASH = "0x" + "ab" * 32
RULES = ContestRules(
    teacher_repo="test/teacher",
    vocab_size=512,
    prompts_per_round=2,
    max_new_tokens=6,
    early_stop_min_prompts=2,
    max_prompt_tokens=64,
)


def make_wallet(root: Path, name: str) -> bt.Wallet:
    """A throwaway wallet with a real sr25519 hotkey (no password) under ``root``."""
    wallet = bt.Wallet(name=name, hotkey="default", path=str(root))
    wallet.create_new_hotkey(use_password=False, overwrite=True, suppress=True)
    return bt.Wallet(name=name, hotkey="default", path=str(root))


def ref(repo: str, revision: str, hotkey_n: int, block: int = 100) -> ModelRef:
    hotkey = "5" + "G" * 46 + f"{hotkey_n:02d}".replace("0", "A")
    return ModelRef(repo=repo, revision=revision, submission=SubmissionId(hotkey=hotkey, commit_block=block))


def make_job(
    job_id: str = "job-1",
    *,
    n_challengers: int = 1,
    prompts: list[str] | None = None,
    rules: ContestRules = RULES,
    king: ModelRef | None = None,
    challengers: list[ModelRef] | None = None,
) -> EvalJob:
    king = king or ref("miner/king", "a" * 40, 1)
    challengers = (
        challengers
        if challengers is not None
        else [ref(f"miner/c{i}", f"{i + 1:x}" * 40, 10 + i) for i in range(n_challengers)]
    )
    return EvalJob(
        job_id=job_id,
        block=123,
        block_hash=BLOCK_HASH,
        rules=rules,
        prompts=prompts or ["The river valley was", "A prime number is"],
        king=king,
        challengers=challengers,
    )


def trim_onpolicy(models: list[ModelResult], king_key: str | None, rules: ContestRules, n: int) -> list[ModelResult]:
    """Keep the guard's values only where a pod measures them: the king and challengers past its KL margin."""
    king = next((m for m in models if m.ref.key == king_key and m.status == "ok"), None)
    king_kl = list(king.prompt_kl) if king is not None else None
    return [
        m
        if expected_onpolicy(m.ref.key == king_key, king_kl, m.prompt_kl, rules, n)
        else m.model_copy(update={"onpolicy": []})
        for m in models
    ]


def fake_result(job: EvalJob) -> EvalResult:
    """A well-formed result for ``job`` (what a correct pod would return for constant KL)."""
    n = len(job.prompts)
    own = [
        OnPolicyPrompt(tokens=4, teacher_nll=0.7, reverse_kl=0.1, repetition=0.0, text=f"own text {p}")
        for p in range(job.rules.guarded_prompts(n))
    ]
    models = [
        ModelResult(
            ref=m,
            status="ok",
            prompt_kl=[0.5 + i] * n,
            prompt_tokens=[4] * n,
            content_hash="c" * 64,
            fingerprint=[0.1, 0.2],
            onpolicy=own,
        )
        for i, m in enumerate(job.models)
    ]
    models = trim_onpolicy(models, job.king.key if job.king else None, job.rules, n)
    teacher = TeacherInfo(repo=job.rules.teacher_repo, revision="f" * 40, continuation_tokens=[4] * n)
    return EvalResult(job_id=job.job_id, block_hash=job.block_hash, teacher=teacher, models=models, device="cpu")


class ScriptedRunner:
    """A runner whose duration the test controls: it reports progress and honours cancellation."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.calls: list[str] = []
        self.release = threading.Event()

    def __call__(self, job: EvalJob, on_progress: Any, should_cancel: Any) -> EvalResult:
        from eval.runner import JobCancelled

        self.calls.append(job.job_id)
        end = time.monotonic() + self.seconds
        step = 0
        while time.monotonic() < end and not self.release.is_set():
            if should_cancel():
                raise JobCancelled(job.job_id)
            step += 1
            on_progress(
                JobProgress(
                    phase="student",
                    model=job.models[0].spec,
                    model_count=len(job.models),
                    prompt=step % (len(job.prompts) + 1),
                    prompt_count=len(job.prompts),
                )
            )
            time.sleep(0.02)
        return fake_result(job)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on a loopback port in a thread; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def build_hub(root: Path) -> tuple[Any, dict[str, str]]:
    """A LocalHub with a tiny teacher, three tiny students and one with a foreign vocabulary."""
    from eval.model_store.local import LocalHub
    from scripts.tiny_models import save_model_dir, tiny_config, tiny_model, train_tokenizer

    tok = train_tokenizer(512)
    hub = LocalHub(root / "hub")
    cfg = tiny_config(512)
    revs = {}
    for name, seed, config in [
        ("test/teacher", 0, cfg),
        ("miner/king", 1, cfg),
        ("miner/c0", 2, cfg),
        ("miner/c1", 3, cfg),
        ("miner/badvocab", 4, tiny_config(640)),
    ]:
        src = save_model_dir(tiny_model(config, seed), tok, root / "src" / name.replace("/", "_"))
        revs[name] = hub.publish(name, src)
    return hub, revs


def hub_job(revs: dict[str, str], names: list[str], job_id: str, **kw: Any) -> EvalJob:
    king = ref(names[0], revs[names[0]], 1)
    challengers = [ref(n, revs[n], 10 + i) for i, n in enumerate(names[1:])]
    return make_job(job_id, king=king, challengers=challengers, **kw)
