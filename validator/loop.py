"""The validator's epoch: sync -> admit new -> the schedule's slots, each with its round -> weights.

Every step reads the chain and the store afresh and writes its result to the
store before the next step, so a crash anywhere loses nothing: the next start
resumes an unfinished round with the same job, and a finished round is never
recorded twice. Which slot judges whom, on which seed, is the shared schedule's
(``validator.schedule``, walked by ``validator.slots``): a pure function of the
chain, the same for every honest validator wherever its head is. Decisions are
the pure functions of ``validator.contest``; this module only sequences I/O.

The chain is asked for what each step needs and no more: the block *number*
each epoch and each poll (cheap), the *final* hash of a slot's first block only
when that slot has a round. A chain outage at any step ends that step with a
logged, typed reason; an epoch that could not finish is retried after a backoff
that doubles with each failure in a row, and never sooner than the RPC endpoint
asked when it throttled us.
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
from eval.exit_codes import ExitCode
from eval.jobs import build_job
from eval.model_store.port import ModelStore
from eval.prompts import PromptSource, prompt_sha256
from eval.rules import ContestRules
from validator import admit
from validator.chain.port import Chain, ChainThrottled
from validator.contest import (
    VANISHED_STATUSES,
    Candidate,
    RoundPlan,
    commitment_disqualifications,
    king_vanished,
    new_submissions,
    withdrawn_submissions,
)
from validator.pod_client import Pod
from validator.rounds import RoundRunner, plan_refs
from validator.sampling import PromptSampler
from validator.schedule import Entry, assign_slots
from validator.settings import LoopConfig
from validator.slots import ConsensusReport, SlotDriver, SlotReport
from validator.store.database import Store
from validator.store.rows import RoundRow
from validator.weights import WeightsKeeper

log = logging.getLogger(__name__)


@dataclass
class EpochReport:
    block: int
    final_block: int | None = None
    new_submissions: int = 0
    admission: admit.AdmitReport = field(default_factory=admit.AdmitReport)
    resumed: list[tuple[int, str]] = field(default_factory=list)
    slots: list[SlotReport] = field(default_factory=list)
    consensus: ConsensusReport | None = None
    weights: str = "not_due"
    withdrawn: int = 0

    def _last_round(self) -> SlotReport | None:
        return next((r for r in reversed(self.slots) if r.kind != "none"), None)

    @property
    def round_kind(self) -> str:
        """The kind of the last round this epoch planned ("none" without one)."""
        last = self._last_round()
        return last.kind if last else "none"

    @property
    def round_id(self) -> int | None:
        last = self._last_round()
        return last.round_id if last else None

    @property
    def round_state(self) -> str | None:
        """How the last planned round ended: done, failed, abandoned, waiting (seed not final) or no_prompts."""
        last = self._last_round()
        return last.outcome if last else None

    @property
    def prompts_error(self) -> str | None:
        """Why the last planned round has no prompts (typed: "ErrorClass: detail"), if that is what stopped it."""
        last = self._last_round()
        return last.detail.removeprefix(": ") if last and last.outcome == "no_prompts" else None


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
        self.rounds = RoundRunner(store, pod, deadline_s=config.pod_deadline_s, stop=self.stop)
        self.slots = SlotDriver(store, self.sampler, self.rounds, rules, config, self.hotkey, self.stop)
        self.weights = WeightsKeeper(store, config, self.hotkey)

    def teacher(self) -> TeacherSpec:
        """The teacher's tokenizer/vocab spec, fetched once when first needed."""
        if self._teacher is None:
            self._teacher = self._teacher_fn()
        return self._teacher

    def request_stop(self) -> None:
        self.stop.set()

    # --- the epoch -------------------------------------------------------------
    def epoch(self) -> EpochReport:
        number = self.chain.block_number()
        final = self.chain.finalized_block_number()  # read before the commitments: every slot it closes is seen
        neurons = self.chain.neurons()
        report = EpochReport(block=number, final_block=final)
        self.store.save_metagraph(number, [dataclasses.asdict(n) for n in neurons])
        self.store.set_meta(last_epoch_block=number)
        self._sync_submissions(number, neurons, report)
        report.admission = admit.admit_pending(
            self.store,
            self.model_store,
            number,
            self.rules,
            self.teacher,
            backoff_base=self.config.backoff_base,
            backoff_cap=self.config.backoff_cap,
            check=self.check,
        )
        admit.check_king_repo(self.store, self.model_store, number, self.config.max_strikes)
        registered = {n.hotkey for n in neurons}
        for row in self.store.interrupted_rounds():
            if self.stop.is_set():
                return report
            report.resumed.append((row.id, self._resume(row, registered, number)))
        if all(state == "done" for _, state in report.resumed) and not self.stop.is_set():
            report.slots = self.slots.catch_up(self.chain, final, neurons, registered)
        if self.stop.is_set():
            return report
        report.consensus = self.slots.observe(self.chain, final, neurons)
        king = self._king(self.store.candidates(registered))
        report.weights = self.weights.step(self.chain, number, neurons, king)
        return report

    def _sync_submissions(self, number: int, neurons: list[Any], report: EpochReport) -> None:
        """Record new commitments, place them in the schedule and withdraw what they replaced, in one transaction."""
        current = list(self.chain.commitments().values())
        # frozen chain types satisfy contest's protocols structurally; mypy wants settable attributes
        new = new_submissions(current, self.store.known_keys(), neurons)  # type: ignore[arg-type]
        withdrawn = withdrawn_submissions(current, self.store.live_keys())  # type: ignore[arg-type]
        if not new and not withdrawn:
            return
        with self.store.transaction():
            report.new_submissions = self.store.add_submissions(new, commitment_disqualifications(new))
            report.withdrawn = self.store.withdraw_submissions(withdrawn)
            self._place_new()
        for key, replaced_by in withdrawn.items():
            log.warning("%s withdrawn: its hotkey committed again at block %d", key, replaced_by)
        if new:
            log.info("block %d: %d new submission(s)", number, report.new_submissions)

    def _place_new(self) -> None:
        """Give each submission without a slot its place in the schedule; placed ones keep theirs."""
        entries = self.store.schedule_entries()
        if all(e.slot is not None for e in entries):
            return
        frozen = {e.key: e.slot for e in entries if e.slot is not None}
        placed = assign_slots([Entry(e.key, e.coldkey) for e in entries], self.rules, frozen)
        self.store.assign_slots({e.key: placed[e.key] for e in entries if e.slot is None})

    def _king(self, candidates: list[Candidate]) -> Candidate | None:
        row = self.store.current_king()
        if row is None:
            return None
        return next((c for c in candidates if c.key == row.key), None)

    def _resume(self, row: RoundRow, registered: set[str], number: int) -> str:
        """Re-send an unfinished round's exact job (same id, same prompts), or fail it if it cannot stand."""
        rid = row.id
        rules = ContestRules.model_validate(row.rules)
        by_key = {c.key: c for c in self.store.candidates(registered)}
        models = [by_key.get(k) for k in row.models]
        king_key = row.king
        problem = ""
        if any(m is None or m.status in VANISHED_STATUSES for m in models):
            problem = "a model of this round was disqualified or removed since it was planned"
        elif king_key is not None and (by_key.get(king_key) is None or king_vanished(by_key[king_key])):
            problem = "the king vanished since the round was planned"
        prompts: list[str] = []
        if not problem:
            try:
                prompts = self.sampler.sample(row.block_hash, rules, number)
            except TransientError:  # the source is down, not the round: it stays open and resumes later
                return "deferred"
            except KlhillError as exc:
                problem = f"cannot re-sample the round's prompts: {exc}"
            if prompts and [prompt_sha256(p) for p in prompts] != row.prompt_sha256s:
                problem = "the prompt corpus changed since the round was planned"
        if problem or not row.job_id:
            self.store.fail_round(rid, f"not resumable: {problem or 'no job id'}")
            log.warning("round %d not resumed (%s); a fresh round is planned next epoch", rid, problem)
            return "failed"
        present = [m for m in models if m is not None]
        king = next((m for m in present if m.key == king_key), None)
        current = self.store.current_king()
        vanished = current.key if current and king is None else None
        plan = RoundPlan(row.kind, king, tuple(m for m in present if m.key != king_key), vanished_king=vanished)
        job = build_job(row.job_id, row.block, row.block_hash, rules, row.teacher_revision, prompts, *plan_refs(plan))
        if row.state == "planned":
            self.store.mark_dispatched(rid, self.config.pod_name, row.job_id)
        log.info("resuming round %d (%s) with job %s", rid, row.kind, row.job_id)
        return self.rounds.dispatch(rid, plan, job, number)

    # --- the loop ---------------------------------------------------------------
    def run(self, once: bool = False) -> int:
        """Run epochs until stopped; ``once`` runs one. Returns a process exit code."""
        failures = 0
        while not self.stop.is_set():
            try:
                report = self.epoch()
            except KlhillError as exc:
                failures += 1
                delay = retry_delay(exc, failures, self.config.poll_seconds, self.config.chain_backoff_cap_s)
                log.error("epoch aborted (%s: %s); trying again in %.0fs", type(exc).__name__, exc, delay)
                if once:
                    return ExitCode.REFUSED
                self.stop.wait(delay)
                continue
            failures = 0
            log.info(
                "epoch at block %d: round=%s/%s weights=%s",
                report.block,
                report.round_kind,
                report.round_state,
                report.weights,
            )
            if once:
                return ExitCode.OK
            self._sleep(report.block)
        log.info("stopped")
        return ExitCode.OK

    def _sleep(self, start: int) -> None:
        """Wait until ``epoch_blocks`` blocks have passed since ``start`` (polling the number only)."""
        failures = 0
        delay = self.config.poll_seconds
        while not self.stop.wait(delay):
            try:
                if self.chain.block_number() >= start + self.config.epoch_blocks:
                    return
                failures, delay = 0, self.config.poll_seconds
            except KlhillError as exc:
                failures += 1
                delay = retry_delay(exc, failures, self.config.poll_seconds, self.config.chain_backoff_cap_s)
                log.warning(
                    "block number unavailable while waiting (%s: %s); next look in %.0fs",
                    type(exc).__name__,
                    exc,
                    delay,
                )


def retry_delay(exc: BaseException, failures: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait after ``failures`` failed tries in a row: doubling from ``base_s`` up to ``cap_s``,
    and never less than a throttling endpoint's ``Retry-After``."""
    delay = min(cap_s, base_s * 2 ** min(max(failures - 1, 0), 30))
    if isinstance(exc, ChainThrottled) and exc.retry_after_s is not None:
        delay = max(delay, exc.retry_after_s)
    return delay
