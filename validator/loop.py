"""The validator's epoch: sync -> admit new -> plan -> prompts (block hash) -> pod -> record -> weights.

Every step reads the chain and the store afresh and writes its result to the
store before the next step, so a crash anywhere loses nothing: the next start
resumes an unfinished round with the same job, and a finished round is never
recorded twice. Decisions are the pure functions of ``validator.contest``;
this module only sequences I/O.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eval.admission import TeacherSpec, check_model
from eval.errors import KlhillError, TransientError
from eval.prompts import PromptSource, prompt_sha256
from eval.rules import ContestRules
from eval.stores import ModelStore
from validator import admit
from validator.chain import BlockRef, Chain, ChainError, Neuron
from validator.contest import (
    VANISHED_STATUSES,
    Candidate,
    RoundPlan,
    king_vanished,
    new_submissions,
    plan_round,
    weights_due,
    weights_for,
)
from validator.pods import Pod
from validator.rounds import ProgressBox, RoundRunner, build_job, make_job_id
from validator.sampling import PromptSampler
from validator.settings import LoopConfig
from validator.store import Store

log = logging.getLogger(__name__)


@dataclass
class EpochReport:
    block: int
    new_submissions: int = 0
    admission: admit.AdmitReport = field(default_factory=admit.AdmitReport)
    resumed: list[tuple[int, str]] = field(default_factory=list)
    round_kind: str = "none"
    round_id: int | None = None
    round_state: str | None = None
    prompts_error: str | None = None  # why this epoch has no prompts (typed: "ErrorClass: detail")
    weights: str = "not_due"


class Validator:
    """Owns the store connection; the pod runs in a helper thread that never touches the store."""

    def __init__(
        self,
        chain: Chain,
        store: Store,
        model_store: ModelStore,
        pod: Pod,
        prompts: PromptSource,
        rules: ContestRules,
        teacher: Callable[[], TeacherSpec],
        config: LoopConfig = LoopConfig(),
        *,
        hotkey: str | None = None,
        progress: ProgressBox | None = None,
        check: Callable[..., Any] = check_model,
        stop: threading.Event | None = None,
    ) -> None:
        self.chain, self.store, self.model_store, self.pod = chain, store, model_store, pod
        self.prompts, self.rules, self.config, self.check = prompts, rules, config, check
        self.hotkey = hotkey if hotkey is not None else getattr(chain, "hotkey", None)
        self.stop = stop or threading.Event()
        self._teacher_fn = teacher
        self._teacher: TeacherSpec | None = None
        self.sampler = PromptSampler(prompts, store, config.epoch_blocks, config.prompts_backoff_cap)
        self.rounds = RoundRunner(store, pod, deadline_s=config.pod_deadline_s, stop=self.stop, progress=progress)

    def teacher(self) -> TeacherSpec:
        """The teacher's tokenizer/vocab spec, fetched once when first needed."""
        if self._teacher is None:
            self._teacher = self._teacher_fn()
        return self._teacher

    def request_stop(self) -> None:
        self.stop.set()

    # --- the epoch -------------------------------------------------------------
    def epoch(self) -> EpochReport:
        head = self.chain.head()
        neurons = self.chain.neurons()
        report = EpochReport(block=head.number)
        self.store.save_metagraph(head.number, [dataclasses.asdict(n) for n in neurons])
        self.store.set_meta(last_epoch_block=head.number)
        # frozen chain types satisfy contest's protocols structurally; mypy wants settable attributes
        new = new_submissions(self.chain.commitments().values(), self.store.known_keys(), neurons)  # type: ignore[arg-type]
        if new:
            report.new_submissions = self.store.add_submissions(new)
            log.info("block %d: %d new submission(s)", head.number, report.new_submissions)
        report.admission = admit.admit_pending(
            self.store, self.model_store, head.number, self.rules, self.teacher,
            backoff_base=self.config.backoff_base, backoff_cap=self.config.backoff_cap, check=self.check,
        )  # fmt: skip
        admit.check_king_repo(self.store, self.model_store, head.number, self.config.max_strikes)
        registered = {n.hotkey for n in neurons}
        for row in self.store.interrupted_rounds():
            if self.stop.is_set():
                return report
            report.resumed.append((row["id"], self._resume(row, registered, head)))
        if not report.resumed and not self.stop.is_set():
            self._plan_and_run(head, registered, report)
        if not self.stop.is_set():
            report.weights = self._weights(head, neurons, registered)
        return report

    def _king(self, candidates: list[Candidate]) -> Candidate | None:
        row = self.store.current_king()
        if row is None:
            return None
        key = (row["hotkey"], row["commit_block"])
        return next((c for c in candidates if c.key == key), None)

    def _plan_and_run(self, head: BlockRef, registered: set[str], report: EpochReport) -> None:
        candidates = self.store.candidates(registered)
        king = self._king(candidates)
        plan = plan_round(king, candidates, self.rules, self.config.max_challengers)
        report.round_kind = plan.kind
        if plan.kind == "none":
            if plan.vanished_king is not None and self.store.current_king() is not None:
                self.store.set_king(None, head.number, None, None, "king vanished; nobody left to crown")
                log.warning("king %s:%d vanished and nobody is left to crown", *plan.vanished_king)
            return
        try:
            prompts = self.sampler.sample(head.hash, self.rules, head.number)
        except KlhillError as exc:
            report.round_state, report.prompts_error = "no_prompts", f"{type(exc).__name__}: {exc}"[:1000]
            return
        keys = [c.key for c in plan.models]
        attempt = int(self.store.rounds(1, 1)["total"]) + 1
        job_id = make_job_id(attempt, head.number, head.hash, keys, self.rules)
        round_id = self.store.create_round(
            plan.kind, head.number, head.hash, [prompt_sha256(p) for p in prompts], self.rules, keys,
            plan.king.key if plan.king else None, teacher_revision=self.rules.teacher_revision,
            pod=self.config.pod_name, job_id=job_id,
        )  # fmt: skip
        job = build_job(job_id, head.number, head.hash, self.rules, self.rules.teacher_revision, prompts, plan)
        self.store.mark_dispatched(round_id, self.config.pod_name, job_id)
        log.info("round %d (%s) at block %d: %d model(s), job %s", round_id, plan.kind, head.number, len(keys), job_id)
        report.round_id = round_id
        report.round_state = self.rounds.dispatch(round_id, plan, job, head.number)

    def _resume(self, row: dict[str, Any], registered: set[str], head: BlockRef) -> str:
        """Re-send an unfinished round's exact job (same id, same prompts), or fail it if it cannot stand."""
        rid = row["id"]
        rules = ContestRules.model_validate(row["rules"])
        by_key = {c.key: c for c in self.store.candidates(registered)}
        models = [by_key.get(tuple(k)) for k in row["models"]]  # type: ignore[call-overload]
        king_key = (row["king_hotkey"], row["king_block"]) if row["king_hotkey"] else None
        problem = ""
        if any(m is None or m.status in VANISHED_STATUSES for m in models):
            problem = "a model of this round was disqualified or removed since it was planned"
        elif king_key is not None and (by_key.get(king_key) is None or king_vanished(by_key[king_key])):
            problem = "the king vanished since the round was planned"
        prompts: list[str] = []
        if not problem:
            try:
                prompts = self.sampler.sample(row["block_hash"], rules, head.number)
            except TransientError:  # the source is down, not the round: it stays open and resumes later
                return "deferred"
            except KlhillError as exc:
                problem = f"cannot re-sample the round's prompts: {exc}"
            if prompts and [prompt_sha256(p) for p in prompts] != row["prompt_sha256s"]:
                problem = "the prompt corpus changed since the round was planned"
        if problem or not row["job_id"]:
            self.store.fail_round(rid, f"not resumable: {problem or 'no job id'}")
            log.warning("round %d not resumed (%s); a fresh round is planned next epoch", rid, problem)
            return "failed"
        present = [m for m in models if m is not None]
        king = next((m for m in present if m.key == king_key), None)
        current = self.store.current_king()
        vanished = (current["hotkey"], current["commit_block"]) if current and king is None else None
        plan = RoundPlan(row["kind"], king, tuple(m for m in present if m.key != king_key), vanished_king=vanished)
        job = build_job(row["job_id"], row["block"], row["block_hash"], rules, row["teacher_revision"], prompts, plan)
        if row["state"] == "planned":
            self.store.mark_dispatched(rid, self.config.pod_name, row["job_id"])
        log.info("resuming round %d (%s) with job %s", rid, row["kind"], row["job_id"])
        return self.rounds.dispatch(rid, plan, job, head.number)

    # --- weights ---------------------------------------------------------------
    def _weights(self, head: BlockRef, neurons: list[Neuron], registered: set[str]) -> str:
        """King 1.0, others 0.0; only when due, within the rate limit, never in a tight loop (LESSONS 22, 23)."""
        king = self._king(self.store.candidates(registered))
        if king is None or king_vanished(king):
            return "no_king"
        vector = weights_for(king.key, neurons)  # type: ignore[arg-type]
        if vector is None:
            return "no_king"
        uids, weights = vector
        last_any = self.store.last_weights(successful=False)
        if last_any and not last_any["success"] and head.number - last_any["block"] < self.config.weights_retry_blocks:
            return "retry_later"
        last_ok = self.store.last_weights(successful=True)
        try:
            on_chain = self.chain.last_weights_block(self.hotkey) if self.hotkey else None
            rate_limit = self.chain.weights_rate_limit()
        except (ChainError, TransientError) as exc:
            log.warning("weights skipped this epoch: chain read failed: %s", exc)
            return "chain_error"
        last_block = on_chain if on_chain is not None else (last_ok["block"] if last_ok else None)
        changed = last_ok is None or last_ok["uids"] != uids or last_ok["weights"] != weights
        if not weights_due(last_block, head.number, changed, self.config.weights_interval, rate_limit):
            return "not_due"
        try:
            receipt = self.chain.set_weights(uids, weights)
        except (ChainError, TransientError) as exc:
            self.store.record_weights(head.number, uids, weights, False, f"{type(exc).__name__}: {exc}")
            log.error("set_weights raised; retried in %d blocks: %s", self.config.weights_retry_blocks, exc)
            return "failed"
        block = receipt.block if receipt.block is not None else head.number
        message = receipt.message if receipt.success else f"{receipt.reason or 'failed'}: {receipt.message}"
        wid = self.store.record_weights(block, uids, weights, receipt.success, message)
        if not receipt.success:
            log.error("weights refused (%s); retried in %d blocks", message, self.config.weights_retry_blocks)
            return "failed"
        confirmed = False
        try:
            seen = self.chain.last_weights_block(self.hotkey) if self.hotkey else None
            confirmed = seen is not None and seen >= block
        except (ChainError, TransientError) as exc:
            log.warning("could not confirm weights: %s", exc)
        self.store.confirm_weights(wid, confirmed)
        log.info("weights set at block %d: king %s:%d -> 1.0 over %d uids", block, *king.key, len(uids))
        return "set"

    # --- the loop ---------------------------------------------------------------
    def run(self, once: bool = False) -> int:
        """Run epochs until stopped; ``once`` runs one. Returns a process exit code."""
        while not self.stop.is_set():
            start: int | None = None
            try:
                report = self.epoch()
                start = report.block
                log.info("epoch at block %d: round=%s/%s weights=%s", report.block, report.round_kind,
                         report.round_state, report.weights)  # fmt: skip
            except KlhillError as exc:
                log.error("epoch aborted (%s: %s); trying again next epoch", type(exc).__name__, exc)
                if once:
                    return 1
            if once:
                return 0
            self._sleep(start)
        log.info("stopped")
        return 0

    def _sleep(self, start: int | None) -> None:
        """Wait until ``epoch_blocks`` blocks have passed since ``start``, waking early on stop."""
        while not self.stop.wait(self.config.poll_seconds):
            if start is None:
                return
            try:
                if self.chain.head().number >= start + self.config.epoch_blocks:
                    return
            except KlhillError as exc:
                log.warning("head unavailable while sleeping: %s", exc)
