"""Pod clients on the secure host: the ``Pod`` protocol, the ``SinglePod`` base and the HTTP pod.

The host trusts no result blindly: ``validator.pod_result.validate_result`` is
the one check of a pod's answer against the job it sent, and ``SinglePod.run``
(what every single pod, remote or in-process, answers through) is the one place
it is called on the host's path. Whoever holds a result from ``Pod.run`` holds a
checked one: the round runner and the verdicts index it without checking again.
Every pod kind reports a running job's live progress through ``Pod.status``.
``HttpPod`` signs every call with the validator hotkey (btauth/1, a fresh nonce
per attempt), polls with backoff, cancels the job when the deadline passes and
re-submits once when a restarted pod reports the job ``interrupted``. The other
pods: ``validator.local_pod.LocalPod`` (in-process) and
``validator.pod_pool.PodPool`` (failover over several).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol, final

import httpx

from eval.schemas import EvalJob, EvalResult, JobStatus
from validator.pod import signing
from validator.pod_errors import InvalidResult, PodDown, PodError, PodJobFailed, PodRejected, PodTimeout
from validator.pod_result import validate_result

log = logging.getLogger(__name__)


class Pod(Protocol):
    """What the host's round runner drives: one pod or a pool of them."""

    def run(self, job: EvalJob, deadline_s: float) -> EvalResult:
        """The result of ``job``, already checked against it (``validate_result``), or a ``PodError``."""
        ...

    def health(self) -> dict[str, Any]: ...

    def status(self, job_id: str) -> JobStatus:
        """Live state and progress of a job this pod knows; a ``PodError`` when it cannot say."""
        ...


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
