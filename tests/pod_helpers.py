"""Stand-ins only the pod tests need: a well-formed result, a scripted runner, a loopback server.

The hub, hotkeys and jobs they share with the benchmarks are in ``scripts/pod_fixtures.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from eval.schemas import EvalJob, EvalResult, JobProgress, ModelResult, OnPolicyPrompt, TeacherInfo
from scripts.pod_fixtures import free_port, trim_onpolicy
from validator.pod.server import PodSettings, create_app


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


def scripted_pod(tmp_path: Path, wallets: Any, seconds: float = 0.1) -> Any:
    """A pod service that takes jobs signed by ``wallets[0]`` and answers them with a ``ScriptedRunner``."""
    settings = PodSettings(allow_hotkeys=frozenset({wallets[0].hotkey.ss58_address}), workdir=tmp_path)
    return create_app(settings, runner=ScriptedRunner(seconds=seconds))


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
