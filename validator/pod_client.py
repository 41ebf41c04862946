"""Pod clients on the secure host: one ``Pod`` protocol, an HTTP pod, an in-process pod, a pool.

The host trusts no result blindly: :func:`validate_result` is the one check of a
pod's answer against the job it sent, and ``SinglePod.run`` (what every single
pod, remote or in-process, answers through) is the one place it is called on the
host's path. Whoever holds a result from ``Pod.run`` holds a checked one: the
round runner and the verdicts index it without checking again. Every pod kind
reports a running job's live progress through ``Pod.status``.
``HttpPod`` signs every call with the validator hotkey (btauth/1, a fresh nonce
per attempt), polls with backoff, cancels the job when the deadline passes and
re-submits once when a restarted pod reports the job ``interrupted``.
``PodPool`` runs the whole job on the first healthy pod and moves it to the
next pod when one is down, refuses, fails the job or misbehaves: the king and
every challenger are always scored on the same machine and prompts (LESSONS 14).

Why a round's challengers are not split over pods: a verdict compares a
challenger's per-prompt KL with the king's on the same prompts, and early
stopping uses the king's list from the same run. Split sub-jobs would each have
to re-score the king, and a merged ``EvalResult`` holds one king entry, so
challengers from the other pods would be judged against a king scored on
different hardware (numerics differ across GPUs and dtypes). A pool adds
capacity by running different rounds or validators' jobs, and availability by
failover, not by splitting one round.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, final

import httpx

from eval.errors import KlhillError
from eval.progress import ProgressFn
from eval.schemas import EvalJob, EvalResult, JobProgress, JobStatus
from eval.stats import expected_onpolicy
from validator.pod import signing

log = logging.getLogger(__name__)


class PodError(KlhillError):
    """The pod's answer cannot be used for this job."""


class PodDown(PodError):
    """The pod cannot be reached (or keeps losing the job): try another pod."""


class PodTimeout(PodError):
    """The job missed its deadline; it was cancelled on the pod."""


class PodRejected(PodError):
    """The pod refused the request (auth, schema, conflict): retrying will not help."""


class PodJobFailed(PodError):
    """The pod ran the job and reported an infrastructure failure or a cancellation."""


class InvalidResult(PodError):
    """The result does not match the job that was sent."""


class Pod(Protocol):
    """What the host's round runner drives: one pod or a pool of them."""

    def run(self, job: EvalJob, deadline_s: float) -> EvalResult:
        """The result of ``job``, already checked against it (:func:`validate_result`), or a ``PodError``."""
        ...

    def health(self) -> dict[str, Any]: ...

    def status(self, job_id: str) -> JobStatus:
        """Live state and progress of a job this pod knows; a ``PodError`` when it cannot say."""
        ...


def validate_result(job: EvalJob, result: EvalResult) -> EvalResult:
    """Check that ``result`` answers exactly ``job``; raise InvalidResult naming the first mismatch."""
    if result.job_id != job.job_id or result.block_hash != job.block_hash:
        raise InvalidResult(f"result is for job {result.job_id}, expected {job.job_id}")
    n = len(job.prompts)
    if len(result.teacher.continuation_tokens) != n:
        raise InvalidResult(f"teacher reports {len(result.teacher.continuation_tokens)} prompts, job has {n}")
    expected = {m.key: m for m in job.models}
    got = [m.ref.key for m in result.models]
    if len(got) != len(set(got)) or set(got) != set(expected):
        raise InvalidResult(f"model set differs: sent {sorted(expected)}, got {sorted(got)}")
    king = next((m for m in result.models if job.king is not None and m.ref.key == job.king.key), None)
    king_kl = list(king.prompt_kl) if king is not None and king.status == "ok" else None
    for m in result.models:
        if m.ref != expected[m.ref.key]:
            raise InvalidResult(f"{m.ref.key}: result names {m.ref.spec}, job sent {expected[m.ref.key].spec}")
        if m.status == "ok" and len(m.prompt_kl) != n:
            raise InvalidResult(f"{m.ref.key}: ok with {len(m.prompt_kl)} of {n} prompts")
        if m.status == "early_stopped":
            if job.king is not None and m.ref.key == job.king.key:
                raise InvalidResult("the king can never be early-stopped")
            if not 0 < len(m.prompt_kl) <= n:
                raise InvalidResult(f"{m.ref.key}: early_stopped with {len(m.prompt_kl)} prompts")
        if any(t > job.rules.max_new_tokens for t in m.prompt_tokens):
            raise InvalidResult(f"{m.ref.key}: more tokens than max_new_tokens on some prompt")
        if list(m.prompt_tokens) != list(result.teacher.continuation_tokens[: len(m.prompt_tokens)]):
            # every continuation position is scored; fewer tokens means silent truncation (LESSONS 12)
            raise InvalidResult(f"{m.ref.key}: scored tokens differ from the teacher's continuation tokens")
        want = expected_onpolicy(m is king, king_kl, m.prompt_kl, job.rules, n) if m.status == "ok" else 0
        if m.status == "ok" and len(m.onpolicy) != want:
            # the king and every KL winner carry the guard's values on the same prompts; missing never passes
            raise InvalidResult(f"{m.ref.key}: {len(m.onpolicy)} on-policy values, the rules want {want}")
        if any(o.tokens > job.rules.onpolicy_new_tokens for o in m.onpolicy):
            raise InvalidResult(f"{m.ref.key}: more on-policy tokens than onpolicy_new_tokens")
        values = list(m.prompt_kl) + list(m.fingerprint or [])
        if not all(math.isfinite(v) for v in values):
            raise InvalidResult(f"{m.ref.key}: non-finite values")
        if any(v < -1e-6 for v in m.prompt_kl):  # KL is never negative beyond float rounding
            raise InvalidResult(f"{m.ref.key}: negative KL")
    return result


class SinglePod(ABC):
    """One machine, remote or in-process: its raw answer is checked against the job here and nowhere else."""

    @final
    def run(self, job: EvalJob, deadline_s: float) -> EvalResult:
        return validate_result(job, self.answer(job, deadline_s))

    @abstractmethod
    def answer(self, job: EvalJob, deadline_s: float) -> EvalResult:
        """The pod's own answer to ``job`` (not yet checked), or a ``PodError``."""

    @abstractmethod
    def health(self) -> dict[str, Any]: ...

    @abstractmethod
    def status(self, job_id: str) -> JobStatus: ...


class HttpPod(SinglePod):
    """A remote pod over HTTP, signed with the validator hotkey."""

    def __init__(
        self,
        url: str,
        wallet: Any,
        *,
        receiver_ss58: str | None = None,
        poll_interval: float = 1.0,
        max_poll_interval: float = 10.0,
        timeout: float = 30.0,
        retries: int = 4,
        down_grace_s: float = 120.0,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.wallet = wallet
        self.receiver_ss58 = receiver_ss58
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.retries = retries
        self.down_grace_s = down_grace_s  # how long polling waits out a restarting pod before PodDown
        self._client = client or httpx.Client(timeout=timeout)
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"HttpPod({self.url})"

    # --- transport ---------------------------------------------------------
    def _call(self, method: str, path: str, body: bytes = b"", deadline: float | None = None) -> httpx.Response:
        """One signed request with retries on network errors, 429 and 5xx; PodDown when they run out.

        No retry sleeps past ``deadline`` (monotonic), so a dead pod cannot stretch a job's deadline.
        """
        delay = 0.5
        last = ""
        for attempt in range(self.retries + 1):
            headers = signing.sign_request(self.wallet, method, path, body, self.receiver_ss58)
            if body:
                headers["Content-Type"] = "application/json"
            try:
                resp = self._client.request(method, self.url + path, content=body, headers=headers)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 500 and resp.status_code != 429:
                    return resp
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
            if attempt < self.retries:
                if deadline is not None and time.monotonic() + delay > deadline:
                    break
                self._sleep(delay)
                delay = min(delay * 2, 8.0)
        raise PodDown(f"{self.url}{path}: {last}")

    @staticmethod
    def _status(resp: httpx.Response, what: str) -> JobStatus:
        if resp.status_code >= 400:
            raise PodRejected(f"{what}: HTTP {resp.status_code}: {resp.text[:300]}")
        try:
            return JobStatus.model_validate_json(resp.content)
        except ValueError as exc:
            raise InvalidResult(f"{what}: malformed job status: {exc}") from exc

    def submit(self, job: EvalJob) -> JobStatus:
        return self._status(self._call("POST", "/jobs", job.model_dump_json().encode()), f"submit {job.job_id}")

    def status(self, job_id: str, deadline: float | None = None) -> JobStatus:
        resp = self._call("GET", f"/jobs/{job_id}", deadline=deadline)
        if resp.status_code == 404:  # the pod lost its records: same as a restart mid-job
            return JobStatus(job_id=job_id, state="interrupted", error="unknown to the pod")
        return self._status(resp, f"status {job_id}")

    def cancel(self, job_id: str) -> None:
        try:
            self._call("DELETE", f"/jobs/{job_id}")
        except PodError as exc:
            log.warning("could not cancel %s on %s: %s", job_id, self.url, exc)

    def health(self) -> dict[str, Any]:
        try:
            resp = self._client.get(self.url + "/health")
            resp.raise_for_status()
            return dict(resp.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise PodDown(f"{self.url}/health: {exc}") from exc

    # --- the job -------------------------------------------------------------
    def answer(self, job: EvalJob, deadline_s: float) -> EvalResult:
        """Submit, poll until done or the deadline; see the module docstring."""
        deadline = time.monotonic() + deadline_s
        status = self.submit(job)
        resubmitted = False
        interval = self.poll_interval
        down_since: float | None = None
        while True:
            if status.state == "done":
                if status.result is None:
                    raise InvalidResult(f"job {job.job_id} done without a result")
                return status.result
            if status.state in ("failed", "cancelled"):
                raise PodJobFailed(f"job {job.job_id} {status.state} on {self.url}: {status.error}")
            if status.state == "interrupted":
                if resubmitted:
                    raise PodDown(f"job {job.job_id} interrupted twice on {self.url}")
                log.warning("job %s interrupted on %s (pod restarted): re-submitting", job.job_id, self.url)
                resubmitted = True
                status = self.submit(job)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.cancel(job.job_id)
                raise PodTimeout(f"job {job.job_id} missed its {deadline_s:.0f}s deadline on {self.url}")
            self._sleep(min(interval, remaining))
            interval = min(interval * 1.5, self.max_poll_interval)
            try:
                status = self.status(job.job_id, deadline)
                down_since = None
            except PodDown as exc:  # restarting or a network blip: keep polling for a while
                now = time.monotonic()
                down_since = down_since if down_since is not None else now
                if now - down_since >= self.down_grace_s or now >= deadline:
                    raise PodDown(f"{self.url} unreachable for {now - down_since:.0f}s: {exc}") from exc
                log.warning("pod %s unreachable while polling %s: %s; still waiting", self.url, job.job_id, exc)


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


class PodPool:
    """Several pods; the whole job goes to the first that works, a failed or dead pod's job moves on."""

    def __init__(self, pods: Sequence[SinglePod]) -> None:
        if not pods:
            raise ValueError("a pod pool needs at least one pod")
        self.pods = list(pods)
        self._active: dict[str, SinglePod] = {}  # job id -> the pod running it now, for live progress

    def status(self, job_id: str) -> JobStatus:
        """Live status from whichever pod runs ``job_id`` now (the host's dashboard polls this)."""
        pod = self._active.get(job_id)
        if pod is None:
            raise PodError(f"job {job_id} is not running on any pod of this pool")
        return pod.status(job_id)

    def health(self) -> dict[str, Any]:
        states = []
        for pod in self.pods:
            try:
                states.append(pod.health())
            except PodError as exc:
                states.append({"state": "down", "error": str(exc)})
        return {"pods": states}

    def run(self, job: EvalJob, deadline_s: float) -> EvalResult:
        deadline = time.monotonic() + deadline_s
        errors: list[str] = []
        for pod in self.pods:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                pod.health()
                self._active[job.job_id] = pod
                return pod.run(job, remaining)
            except PodTimeout:
                raise  # the deadline is spent: no other pod could finish in time
            except PodError as exc:  # down, refused, failed the job (disk full, OOM) or lied (InvalidResult): next
                log.warning("pod %r unusable for job %s: %s; trying the next one", pod, job.job_id, exc)
                errors.append(f"{pod!r}: {exc}")
            finally:
                self._active.pop(job.job_id, None)
        raise PodDown(f"no pod could run job {job.job_id}: " + "; ".join(errors or ["deadline passed"]))
