"""The pod's job queue: durable records, one job at a time, cooperative cancel.

Every state change is written atomically (tmp + fsync + rename) under
``<workdir>/jobs/`` before it is visible, so a pod killed at any instant
restarts with a consistent picture. A job found ``queued`` or ``running`` at
start-up is reported ``interrupted`` - never ``done`` with partial data - and
the host re-submits it (re-posting an interrupted job queues it again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval.errors import InfraError
from eval.runner import CancelFn, JobCancelled, ProgressFn
from eval.schemas import EvalJob, EvalResult, JobProgress, JobStatus

log = logging.getLogger(__name__)

Runner = Callable[[EvalJob, ProgressFn, CancelFn], EvalResult]
ACTIVE = ("queued", "running")
MAX_KEPT_RECORDS = 500


class JobConflict(Exception):
    """A different job body was posted under an existing job id."""


class QueueFull(Exception):
    """Too many jobs are waiting; the caller should retry later."""


def job_digest(job: EvalJob) -> str:
    """Canonical digest of a job: equal jobs have equal digests whatever their JSON spelling."""
    return hashlib.sha256(json.dumps(job.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write-then-rename with fsyncs, so readers see the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class _Record:
    """One job as the pod knows it: the job, its digest, its last persisted status."""

    def __init__(self, job: EvalJob, digest: str, status: JobStatus) -> None:
        self.job, self.digest, self.status = job, digest, status
        self.cancel = threading.Event()  # set by the host's DELETE or by a shutdown
        self.host_cancelled = False

    def to_json(self) -> bytes:
        status = self.status.model_dump(mode="json")
        return json.dumps({"job": self.job.model_dump(mode="json"), "digest": self.digest, "status": status}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> _Record:
        data = json.loads(raw)
        return cls(EvalJob.model_validate(data["job"]), data["digest"], JobStatus.model_validate(data["status"]))


class JobManager:
    """Accepts jobs, runs them one by one in a worker thread, answers status queries."""

    def __init__(
        self, jobs_dir: Path, runner: Runner, *, max_queued: int = 4, progress_bar: bool | None = None
    ) -> None:
        self.jobs_dir = Path(jobs_dir)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.runner = runner
        self.max_queued = max_queued
        self.progress_bar = sys.stderr.isatty() if progress_bar is None else progress_bar
        self._records: dict[str, _Record] = {}
        self._queue: deque[str] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = False
        self._thread: threading.Thread | None = None
        self._current: str | None = None
        self._load()

    # --- lifecycle -------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pod-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._stop = True
            for rec in self._records.values():
                rec.cancel.set()
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _load(self) -> None:
        """Read persisted records; whatever was in flight when we died is interrupted."""
        paths = sorted(self.jobs_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for path in paths[:-MAX_KEPT_RECORDS]:
            path.unlink(missing_ok=True)
        for path in paths[-MAX_KEPT_RECORDS:]:
            try:
                rec = _Record.from_json(path.read_bytes())
            except (OSError, ValueError, KeyError) as exc:
                log.error("unreadable job record %s (%s); moved aside", path.name, exc)
                path.rename(path.with_suffix(".bad"))
                continue
            if rec.status.state in ACTIVE:
                rec.status = JobStatus(
                    job_id=rec.job.job_id, state="interrupted", error="pod restarted while the job was in flight"
                )
                self._persist(rec)
                log.warning("job %s was in flight at shutdown: marked interrupted", rec.job.job_id)
            self._records[rec.job.job_id] = rec

    def _persist(self, rec: _Record) -> None:
        atomic_write(self.jobs_dir / f"{rec.job.job_id}.json", rec.to_json())

    # --- API used by the routes -----------------------------------------
    @property
    def busy(self) -> bool:
        return self._current is not None

    def queued(self) -> int:
        return len(self._queue)

    def submit(self, job: EvalJob) -> tuple[JobStatus, bool]:
        """Queue ``job``; returns (status, created). Idempotent by job id."""
        digest = job_digest(job)
        with self._wake:
            rec = self._records.get(job.job_id)
            if rec is not None and rec.digest != digest:
                raise JobConflict(f"job {job.job_id} exists with a different body")
            if rec is not None and rec.status.state != "interrupted":
                return rec.status, False
            if len(self._queue) >= self.max_queued:
                raise QueueFull(f"{len(self._queue)} jobs already queued")
            rec = _Record(job, digest, JobStatus(job_id=job.job_id, state="queued"))
            self._persist(rec)
            self._records[job.job_id] = rec
            self._queue.append(job.job_id)
            self._wake.notify_all()
            log.info("job %s queued (%d models, %d prompts)", job.job_id, len(job.models), len(job.prompts))
            return rec.status, True

    def status(self, job_id: str) -> JobStatus | None:
        with self._lock:
            rec = self._records.get(job_id)
            return rec.status if rec else None

    def cancel(self, job_id: str) -> JobStatus | None:
        """Cancel a queued job at once; ask a running one to stop at its next check."""
        with self._wake:
            rec = self._records.get(job_id)
            if rec is None:
                return None
            if rec.status.state in ACTIVE:
                rec.host_cancelled = True
                rec.cancel.set()
            if rec.status.state == "queued":
                self._queue.remove(job_id)
                self._finish(rec, "cancelled", error="cancelled by the host")
            return rec.status

    # --- the worker thread ------------------------------------------------
    def _finish(self, rec: _Record, state: str, *, error: str | None = None, result: EvalResult | None = None) -> None:
        rec.status = JobStatus(
            job_id=rec.job.job_id,
            state=state,
            progress=rec.status.progress,
            error=error,
            result=result,  # type: ignore[arg-type]
        )
        self._persist(rec)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                rec = self._records[self._queue.popleft()]
                rec.status = JobStatus(job_id=rec.job.job_id, state="running")
                self._persist(rec)
                self._current = rec.job.job_id
            try:
                self._run(rec)
            finally:
                self._current = None

    def _run(self, rec: _Record) -> None:
        job_id = rec.job.job_id
        bar = _Bar() if self.progress_bar else None

        def on_progress(p: JobProgress) -> None:
            with self._lock:
                rec.status = rec.status.model_copy(update={"progress": p})
            if bar is not None:
                bar.update(p)

        log.info("job %s running", job_id)
        try:
            result = self.runner(rec.job, on_progress, rec.cancel.is_set)
            state, error = ("cancelled", "cancelled by the host") if rec.host_cancelled else ("done", None)
        except JobCancelled:
            state, error, result = "cancelled", "cancelled by the host", None
        except InfraError as exc:
            state, error, result = "failed", str(exc)[:2000], None
        except Exception as exc:  # the thread must survive anything a job throws
            log.exception("job %s crashed", job_id)
            state, error, result = "failed", f"{type(exc).__name__}: {exc}"[:2000], None
        finally:
            if bar is not None:
                bar.close()
        if state == "cancelled" and not rec.host_cancelled:
            # a graceful shutdown (PM2/systemd restart) stopped it, not the host: same as a crash
            state, error, result = "interrupted", "pod shut down while the job was running", None
        with self._lock:
            self._finish(rec, state, error=error, result=result if state == "done" else None)
        log.info("job %s %s%s", job_id, state, f": {error}" if error else "")


class _Bar:
    """A tqdm bar per phase, only when a human watches stderr."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._key: tuple[str, str | None] | None = None

    def update(self, p: JobProgress) -> None:
        from tqdm import tqdm

        key = (p.phase, p.model)
        if key != self._key:
            self.close()
            self._key = key
            self._bar = tqdm(total=p.prompt_count or None, desc=f"{p.phase} {p.model or ''}".strip(), unit="prompt")
        if self._bar is not None:
            self._bar.n = p.prompt
            self._bar.set_postfix(tok_s=f"{p.tokens_per_s:.0f}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
