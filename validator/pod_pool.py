"""Several pods as one: the whole job runs on the first pod that works, and moves on when one fails.

The king and every challenger are always scored on the same machine and prompts
(LESSONS 14). Why a round's challengers are not split over pods: a verdict
compares a challenger's per-prompt KL with the king's on the same prompts, and
early stopping uses the king's list from the same run. Split sub-jobs would each
have to re-score the king, and a merged ``EvalResult`` holds one king entry, so
challengers from the other pods would be judged against a king scored on
different hardware (numerics differ across GPUs and dtypes). A pool adds
capacity by running different rounds or validators' jobs, and availability by
failover, not by splitting one round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from eval.schemas import EvalJob, EvalResult, JobStatus
from validator.pod_client import SinglePod
from validator.pod_errors import PodDown, PodError, PodTimeout

log = logging.getLogger(__name__)


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
