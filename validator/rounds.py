"""One round on a pod: build the job from chain data and the store, dispatch, wait, record.

Why its own module: this is where a crash, a dead pod or a garbage result could
lose or double-count an evaluation. The round is created in the store before
the job leaves (state ``planned``/``dispatched``); only ``record_round_result``
(one transaction) or ``fail_round`` ends it, so a restart finds every
unfinished round and re-sends the *same* job (same id, same prompts): pods are
idempotent by job id. Nobody is judged by a failed round (LESSONS 14, 18).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from eval.jobs import model_ref
from eval.rules import ContestRules
from eval.schemas import EvalJob, EvalResult, ModelRef, SubmissionId
from validator.contest import Candidate, RoundPlan, king_changes
from validator.pod_client import Pod
from validator.store.database import Store
from validator.verdicts import RoundOutcome, interpret_result

log = logging.getLogger(__name__)


def make_job_id(attempt: int, block: int, block_hash: str, keys: Sequence[SubmissionId], rules: ContestRules) -> str:
    """Unique per round attempt and stable across restarts (it is stored with the round)."""
    material = "|".join([block_hash, rules.digest(), *(str(k) for k in keys)])
    return f"r{attempt}-b{block}-{hashlib.sha256(material.encode()).hexdigest()[:16]}"


def plan_refs(plan: RoundPlan) -> tuple[ModelRef | None, list[ModelRef]]:
    """The plan's king and challengers as the job names them, for ``eval.jobs.build_job``.

    Identity comes from the chain (hotkey, commit block) as stored, never from miner text (LESSONS 2).
    """

    def ref(c: Candidate) -> ModelRef:
        return model_ref(c.repo, c.revision, c.key)

    return (ref(plan.king) if plan.king else None), [ref(c) for c in plan.challengers]


def record_outcome(store: Store, round_id: int, outcome: RoundOutcome, result: EvalResult, block: int) -> None:
    """Record a finished round in one transaction, the throne written when ``contest.king_changes`` says so."""
    with store.transaction():
        stored = store.current_king()
        changed = king_changes(outcome.king_before, outcome.new_king, stored.key if stored else None)
        store.record_round_result(round_id, outcome, result, block, king_changed=changed)


class RoundRunner:
    """Runs a planned round's job on a pod and records exactly one ending for it."""

    def __init__(
        self,
        store: Store,
        pod: Pod,
        *,
        deadline_s: float,
        stop: threading.Event,
        progress_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.pod, self.deadline_s, self.stop = store, pod, deadline_s, stop
        self.progress_interval = progress_interval
        self._clock = clock

    def dispatch(self, round_id: int, plan: RoundPlan, job: EvalJob, block: int) -> str:
        """Run the job; returns 'done', 'failed' or 'abandoned' (stop requested: the round stays open)."""
        rules = job.rules
        base = {
            "round_id": round_id,
            "job_id": job.job_id,
            "kind": plan.kind,
            "block": job.block,
            "models": len(job.models),
            "pod": repr(self.pod),
        }
        self.store.set_progress({**base, "phase": "dispatched"})
        try:
            outcome = self._wait(job, base)
            if outcome is None:
                log.warning("stop requested: round %d left open; it resumes with job %s", round_id, job.job_id)
                return "abandoned"
            if isinstance(outcome, BaseException):
                raise outcome
            result = outcome  # checked against the job by the pod client (validate_result), the one place
            verdict = interpret_result(
                plan, result, rules, self.store.known_fingerprints(), self.store.known_content_hashes()
            )
        except Exception as exc:  # noqa: BLE001 - any pod fault or InvalidResult fails the round, nobody is judged
            self.store.fail_round(round_id, f"{type(exc).__name__}: {exc}")
            log.error(
                "round %d (%s) failed, nobody judged; retried next epoch: %s: %s",
                round_id,
                job.job_id,
                type(exc).__name__,
                exc,
            )
            return "failed"
        finally:
            self.store.set_progress(None)
        record_outcome(self.store, round_id, verdict, result, block)
        _log_outcome(round_id, verdict)
        return "done"

    def _wait(self, job: EvalJob, base: dict[str, Any]) -> EvalResult | BaseException | None:
        """Run ``pod.run`` in a daemon thread; meanwhile poll ``pod.status`` for live progress; None if stopped."""
        box: list[EvalResult | BaseException] = []

        def work() -> None:
            try:
                box.append(self.pod.run(job, self.deadline_s))
            except BaseException as exc:  # noqa: BLE001 - handed to the loop thread
                box.append(exc)

        thread = threading.Thread(target=work, name=f"pod-{job.job_id}", daemon=True)
        thread.start()
        next_poll = self._clock() + self.progress_interval
        while thread.is_alive():
            thread.join(0.2)
            if self.stop.is_set():
                return None
            if self._clock() < next_poll:
                continue
            next_poll = self._clock() + self.progress_interval
            latest = self._poll(job.job_id)
            if latest is not None:
                self.store.set_progress({**base, "phase": "running", "progress": latest})
        return box[0]

    def _poll(self, job_id: str) -> dict[str, Any] | None:
        try:
            return dict(self.pod.status(job_id).progress.model_dump(mode="json"))
        except Exception as exc:  # noqa: BLE001 - progress is best effort
            log.debug("progress poll failed: %s", exc)
            return None


def _log_outcome(round_id: int, outcome: RoundOutcome) -> None:
    log.info(
        "round %d (%s) done: %s; king %s",
        round_id,
        outcome.kind,
        outcome.reason,
        str(outcome.new_king) if outcome.new_king else "none",
    )
    for v in outcome.verdicts:
        log.info("  %s:%d %s mean_kl=%s %s", v.hotkey, v.commit_block, v.state, v.mean_kl, v.reason)
