"""The in-process pod: the pod service's own routine run in this process, for the demo and tests.

It answers through ``SinglePod.run`` like a remote pod, so its result is checked
the same way, and it reports live progress through ``status`` like the service.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from eval.errors import KlhillError
from eval.progress import ProgressFn
from eval.schemas import EvalJob, EvalResult, JobProgress, JobStatus
from validator.pod_client import SinglePod
from validator.pod_errors import PodError, PodJobFailed, PodTimeout


class LocalPod(SinglePod):
    """Runs the job in this process with the same routine as the pod service, and reports progress like it."""

    def __init__(
        self,
        store: Any,
        workdir: Path,
        device: str = "cpu",
        *,
        on_progress: ProgressFn | None = None,
        **run_kwargs: Any,
    ) -> None:
        """``on_progress`` also sees every update (a benchmark's timer); the host reads ``status``."""
        self.store, self.workdir, self.device, self.run_kwargs = store, Path(workdir), device, run_kwargs
        self.on_progress = on_progress
        self._lock = threading.Lock()
        self._running: dict[str, JobStatus] = {}  # job id -> latest status, while it runs

    def health(self) -> dict[str, Any]:
        return {"state": "idle", "device": self.device}

    def status(self, job_id: str) -> JobStatus:
        with self._lock:
            status = self._running.get(job_id)
        if status is None:
            raise PodError(f"job {job_id} is not running in-process")
        return status

    def _progress(self, job_id: str, progress: JobProgress) -> None:
        with self._lock:
            self._running[job_id] = JobStatus(job_id=job_id, state="running", progress=progress)
        if self.on_progress is not None:
            self.on_progress(progress)

    def answer(self, job: EvalJob, deadline_s: float) -> EvalResult:
        from eval.runner import JobCancelled, run_job

        deadline = time.monotonic() + deadline_s
        with self._lock:
            self._running[job.job_id] = JobStatus(job_id=job.job_id, state="running", progress=JobProgress())
        try:
            result = run_job(
                job,
                self.store,
                self.workdir,
                self.device,
                on_progress=lambda p: self._progress(job.job_id, p),
                should_cancel=lambda: time.monotonic() > deadline,
                **self.run_kwargs,
            )
        except JobCancelled as exc:
            raise PodTimeout(f"job {job.job_id} missed its {deadline_s:.0f}s deadline in-process") from exc
        except KlhillError as exc:
            raise PodJobFailed(f"job {job.job_id} failed in-process: {exc}") from exc
        finally:
            with self._lock:
                self._running.pop(job.job_id, None)
        if time.monotonic() > deadline:
            raise PodTimeout(f"job {job.job_id} missed its {deadline_s:.0f}s deadline in-process")
        return result
