"""Bringing this validator up to the chain's newest final slot, one slot after the other.

The king after slot ``s`` is the outcome of slot ``s``'s round against the king after slot ``s-1``;
every honest validator computes the same chain of kings because each slot's challengers
(``validator.schedule``) and seed (the final hash of the slot's first block) come from the chain
alone. This module sequences that walk and keeps it restartable:

- A slot's record is opened with its round and closed (``empty`` or ``judged``) in the round's own
  transaction, so a SIGKILL anywhere leaves either a finished slot or an open one whose round
  resumes with the same job; no slot is judged twice.
- A slot whose round cannot run now (seed block not final, prompt source down, pod failed) stays
  where it is and is retried next epoch with the same seed: later slots wait for it.
- A validator with no history, or more than ``max_catchup_slots`` behind, anchors on the chain's
  consensus king (``validator.consensus``) instead of crowning a king of its own; with no consensus
  king on chain, its first slot crowns by coronation, seeded like everyone else's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from eval.errors import KlhillError
from eval.jobs import build_job
from eval.prompts import prompt_sha256
from eval.rules import ContestRules
from eval.schemas import SubmissionId
from validator.chain.port import Chain, Neuron
from validator.consensus import consensus_king, disagreement_streak, yuma_vtrust
from validator.contest import Candidate, plan_slot
from validator.rounds import RoundRunner, make_job_id, plan_refs
from validator.sampling import PromptSampler
from validator.schedule import slot_of, slot_start
from validator.settings import LoopConfig
from validator.store.database import Store

log = logging.getLogger(__name__)

DISAGREEMENT_WARN_SLOTS = 3
"""Slots in a row against the consensus after which the log warns (weights can lag a slot or two)."""


@dataclass(frozen=True)
class SlotReport:
    """What happened to one slot this epoch: ``empty``, ``done``, ``failed``, ``abandoned``, ``waiting``
    (seed block not final yet) or ``no_prompts``."""

    slot: int
    outcome: str
    kind: str = "none"
    round_id: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class ConsensusReport:
    """The chain's view of this validator after its newest slot (``validator.consensus``)."""

    slot: int
    king: SubmissionId | None
    consensus: SubmissionId | None
    agree: bool | None
    streak: int
    vtrust: float | None
    reanchored: bool = False


class SlotDriver:
    """Walks the schedule for the loop; owns no state beyond the store's slot records."""

    def __init__(
        self,
        store: Store,
        sampler: PromptSampler,
        rounds: RoundRunner,
        rules: ContestRules,
        config: LoopConfig,
        hotkey: str | None,
        stop: threading.Event,
    ) -> None:
        self.store, self.sampler, self.rounds = store, sampler, rounds
        self.rules, self.config, self.hotkey, self.stop = rules, config, hotkey, stop
        self.chain: Chain

    def next_slot(self) -> int | None:
        """The first slot not done yet (an open one first); None before this validator's first slot."""
        latest = self.store.latest_slots(1)
        if not latest:
            return None
        return latest[0].slot if latest[0].state == "open" else latest[0].slot + 1

    def catch_up(self, chain: Chain, final: int, neurons: Sequence[Neuron], registered: set[str]) -> list[SlotReport]:
        """Run every slot up to the one ``final`` (the finalized block) is in, in order; stop at the first that
        cannot finish now."""
        self.chain = chain
        target = slot_of(final, self.rules)
        first = self.next_slot()
        if first is None or target - first >= self.config.max_catchup_slots:
            behind = "no slot history" if first is None else f"{target - first} slots behind"
            self._anchor(target, final, neurons, why=behind)
            first = target
        reports: list[SlotReport] = []
        for slot in range(first, target + 1):
            if self.stop.is_set():
                break
            report = self._run_slot(slot, registered, final)
            reports.append(report)
            if report.outcome not in ("empty", "done"):
                log.warning("slot %d not finished (%s%s); it is retried first", slot, report.outcome, report.detail)
                break
        return reports

    # --- one slot -----------------------------------------------------------------------------
    def _run_slot(self, slot: int, registered: set[str], final: int) -> SlotReport:
        start = slot_start(slot, self.rules)
        candidates = self.store.candidates(registered)
        self._defer_unadmitted(slot, candidates)
        king = self._king(candidates)
        record = self.store.slot_record(slot)
        plan = plan_slot(slot, king, candidates, self.rules, crown=record is not None and record.anchor == "none")
        if plan.kind == "none":
            stored = self.store.current_king()
            after = stored.key if stored is not None and plan.vanished_king is None else None
            with self.store.transaction():
                if plan.vanished_king is not None and self.store.current_king() is not None:
                    self.store.set_king(None, start, None, None, "king vanished; nobody left to crown")
                    log.warning("king %s vanished and nobody is left to crown", plan.vanished_king)
                self.store.close_slot(slot, start, "empty", after)
            return SlotReport(slot, "empty")
        seed = self.chain.final_block_hash(start)
        if seed is None:  # never a local or random stand-in: every validator must draw the same prompts
            return SlotReport(slot, "waiting", plan.kind, detail=f": block {start} is not final yet")
        try:
            prompts = self.sampler.sample(seed, self.rules, final)
        except KlhillError as exc:
            return SlotReport(slot, "no_prompts", plan.kind, detail=f": {type(exc).__name__}: {exc}"[:1000])
        keys = [c.key for c in plan.models]
        job_id = make_job_id(self.store.round_count() + 1, start, seed, keys, self.rules)
        round_id = self.store.create_round(
            plan.kind,
            start,
            seed,
            [prompt_sha256(p) for p in prompts],
            self.rules,
            keys,
            plan.king.key if plan.king else None,
            teacher_revision=self.rules.teacher_revision,
            pod=self.config.pod_name,
            job_id=job_id,
            slot=slot,
        )
        job = build_job(job_id, start, seed, self.rules, self.rules.teacher_revision, prompts, *plan_refs(plan))
        self.store.mark_dispatched(round_id, self.config.pod_name, job_id)
        log.info("slot %d: round %d (%s), %d model(s), job %s", slot, round_id, plan.kind, len(keys), job_id)
        return SlotReport(slot, self.rounds.dispatch(round_id, plan, job, start), plan.kind, round_id)

    def _defer_unadmitted(self, slot: int, candidates: Sequence[Candidate]) -> None:
        """A model this validator could not admit yet (hub outage) waits one slot, for this validator only."""
        waiting = {c.key: slot + 1 for c in candidates if c.slot == slot and c.status == "pending"}
        if waiting:
            self.store.assign_slots(waiting)
            log.warning("slot %d: %d model(s) not admitted yet, deferred to slot %d", slot, len(waiting), slot + 1)

    def _king(self, candidates: Sequence[Candidate]) -> Candidate | None:
        row = self.store.current_king()
        if row is None:
            return None
        return next((c for c in candidates if c.key == row.key), None)

    # --- the chain's consensus ----------------------------------------------------------------
    def _consensus(self, neurons: Sequence[Neuron]) -> tuple[SubmissionId | None, float | None]:
        rows = self.chain.weight_rows()
        king = consensus_king(neurons, rows, self.store.live_submissions(), exclude=self.hotkey)
        return king, (yuma_vtrust(neurons, rows, self.hotkey) if self.hotkey else None)

    def _anchor(self, slot: int, final: int, neurons: Sequence[Neuron], *, why: str) -> None:
        """Take the chain's consensus king as the king before ``slot`` (no consensus: ``slot`` crowns by coronation)."""
        king, _ = self._consensus(neurons)
        start = slot_start(slot, self.rules)
        with self.store.transaction():
            if king is not None:
                self.store.set_king(king, final, None, None, f"adopted the chain's consensus king at block {final}")
            elif self.store.current_king() is not None:
                self.store.set_king(None, final, None, None, f"no consensus king on chain at block {final}")
            self.store.open_slot(slot, start, anchor="consensus" if king else "none", anchor_block=final)
        log.warning(
            "%s: starting at slot %d %s",
            why,
            slot,
            f"with the chain's consensus king {king}" if king else "with a coronation (no consensus king on chain)",
        )

    def observe(self, chain: Chain, final: int, neurons: Sequence[Neuron]) -> ConsensusReport | None:
        """Record what the chain's weights say of this validator's king after its newest done slot.

        After ``max_disagreement_slots`` slots in a row against the consensus, re-anchor on it: with the
        schedule deterministic that means a fault (a lost disk, a bug, a hub outage here only).
        """
        self.chain = chain
        latest = self.store.latest_slots(self.config.max_disagreement_slots + 1)
        if not latest or latest[0].state == "open":
            return None
        newest = latest[0]
        consensus, vtrust = self._consensus(neurons)
        own = self.store.current_king()
        mine = own.key if own is not None else None
        agree = None if consensus is None else mine == consensus
        streak = disagreement_streak([r.agree for r in reversed(latest[1:])] + [agree])
        reanchor = consensus is not None and streak >= self.config.max_disagreement_slots
        with self.store.transaction():
            if reanchor:
                reason = f"re-anchored on the chain's consensus king after {streak} slots of disagreement"
                self.store.set_king(consensus, final, None, None, reason)
            self.store.observe_consensus(
                newest.slot, consensus, agree, vtrust, final, streak=streak, king=consensus if reanchor else None
            )
        if reanchor:
            log.error("king %s differed from the consensus king %s for %d slots: re-anchored", mine, consensus, streak)
        elif streak >= DISAGREEMENT_WARN_SLOTS:
            log.warning("king %s differs from the chain's consensus king %s for %d slots", mine, consensus, streak)
        return ConsensusReport(newest.slot, mine, consensus, agree, streak, vtrust, reanchor)
