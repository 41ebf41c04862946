"""Writes about rounds: plan, dispatch, fail, the finished round in one transaction, and the throne.

Everything a finished round writes is decided by the domain: states, statuses and
KL intervals by ``validator.verdicts``, whether the throne changes by
``validator.contest.king_changes``. The store only persists it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from eval.rules import ContestRules
from eval.schemas import EvalResult, SubmissionId
from validator.store.connection import StoreError, dumps, key_cols, real
from validator.store.slot_writes import SlotWrites
from validator.store.submission_writes import SubmissionWrites
from validator.verdicts import Evaluation, RoundOutcome


class RoundWrites(SubmissionWrites, SlotWrites):
    def create_round(
        self,
        kind: str,
        block: int,
        block_hash: str,
        prompt_sha256s: Sequence[str],
        rules: ContestRules,
        models: Sequence[SubmissionId],
        king: SubmissionId | None = None,
        *,
        teacher_revision: str | None = None,
        pod: str | None = None,
        job_id: str | None = None,
        slot: int | None = None,
    ) -> int:
        """Record a planned round (state 'planned') with everything needed to audit it.

        A round of the shared schedule names its ``slot`` (``block`` is then the slot's start); the
        slot's record is opened with it, in the same transaction.
        """
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO rounds(kind, block, block_hash, prompt_sha256s, rules, rules_digest, teacher_repo,"
                " teacher_revision, models, king_hotkey, king_block, pod, job_id, state, started, slot)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'planned',?,?)",
                (
                    kind,
                    block,
                    block_hash,
                    dumps(list(prompt_sha256s)),
                    rules.to_json(),
                    rules.digest(),
                    rules.teacher_repo,
                    teacher_revision or rules.teacher_revision,
                    dumps([list(key_cols(k)) for k in models]),
                    king.hotkey if king else None,
                    king.commit_block if king else None,
                    pod,
                    job_id,
                    self._clock(),
                    slot,
                ),
            )
            assert cur.lastrowid is not None
            if slot is not None:
                self.open_slot(slot, block, block_hash=block_hash, round_id=cur.lastrowid)
            return cur.lastrowid

    def mark_dispatched(self, round_id: int, pod: str, job_id: str) -> None:
        self._round_transition(round_id, ("planned", "dispatched"), "dispatched", pod=pod, job_id=job_id)

    def fail_round(self, round_id: int, error: str) -> None:
        """A round that cannot complete (pod down, garbage result): nobody is judged by it."""
        self._round_transition(
            round_id, ("planned", "dispatched"), "failed", error=error[:2000], finished=self._clock()
        )

    def _round_transition(self, round_id: int, allowed: tuple[str, ...], state: str, **cols: Any) -> None:
        with self.transaction() as db:
            row = db.execute("SELECT state FROM rounds WHERE id = ?", (round_id,)).fetchone()
            if row is None or row["state"] not in allowed:
                raise StoreError(f"round {round_id} is {row['state'] if row else 'missing'}, expected {allowed}")
            sets = ", ".join(f"{c} = ?" for c in ["state", *cols])
            db.execute(f"UPDATE rounds SET {sets} WHERE id = ?", (state, *cols.values(), round_id))

    def record_round_result(
        self, round_id: int, outcome: RoundOutcome, result: EvalResult, block: int, *, king_changed: bool
    ) -> None:
        """Record a finished round in one transaction: evaluations, hashes, fingerprints, DQs,
        submission states, the round's decision and, when ``king_changed``, the new king. A round is recorded once.

        ``king_changed`` is the domain's answer (``validator.contest.king_changes``), never re-derived here;
        ``result`` supplies only the teacher revision the pod actually scored with.
        """
        with self.transaction() as db:
            self._round_transition(
                round_id,
                ("planned", "dispatched"),
                "done",
                finished=self._clock(),
                decision=outcome.reason,
                p_value=real(outcome.p_value, "p_value"),
                new_king_hotkey=outcome.new_king.hotkey if outcome.new_king else None,
                new_king_block=outcome.new_king.commit_block if outcome.new_king else None,
            )
            # an unpinned teacher: the audit record keeps the revision the pod actually scored with
            db.execute(
                "UPDATE rounds SET teacher_revision = ? WHERE id = ? AND teacher_revision IS NULL",
                (result.teacher.revision, round_id),
            )
            for e in outcome.evaluations:
                self._record_evaluation(db, round_id, e)
            for dq in outcome.dqs:
                self.add_disqualification(dq.key, dq.reason, dq.check, dq.detail, dq.evidence, block, round_id)
            if king_changed:
                self.set_king(outcome.new_king, block, round_id, outcome.new_king_kl, outcome.reason)
            planned = db.execute("SELECT slot, block FROM rounds WHERE id = ?", (round_id,)).fetchone()
            if planned["slot"] is not None:  # the slot is done with its round: never judged again
                self.close_slot(planned["slot"], planned["block"], "judged", outcome.new_king, round_id=round_id)

    def _record_evaluation(self, db: sqlite3.Connection, round_id: int, e: Evaluation) -> None:
        v, m = e.verdict, e.result
        db.execute(
            "INSERT INTO evaluations(round_id, hotkey, commit_block, status, state, prompt_kl, prompt_tokens,"
            " mean_kl, ci_lo, ci_hi, p_value, reason, error, suspicious, onpolicy)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                round_id,
                *key_cols(v.key),
                m.status,
                v.state,
                dumps([real(x, "kl") for x in m.prompt_kl]),
                dumps([int(t) for t in m.prompt_tokens]),
                real(e.mean_kl, "mean_kl"),
                real(e.ci_lo, "ci_lo"),
                real(e.ci_hi, "ci_hi"),
                real(v.p_value, "p_value"),
                v.reason,
                m.error,
                int(v.suspicious),
                dumps([o.model_dump(mode="json") for o in m.onpolicy]),
            ),
        )
        if m.content_hash:
            self.add_hash(v.key, "content", m.content_hash)
        if m.fingerprint:
            db.execute(
                "INSERT OR REPLACE INTO fingerprints(hotkey, commit_block, vector, round_id) VALUES (?,?,?,?)",
                (*key_cols(v.key), dumps([real(x, "fingerprint") for x in m.fingerprint]), round_id),
            )
        db.execute(
            "UPDATE submissions SET status = ?, status_detail = ?, last_kl = ?, updated = ?"
            " WHERE hotkey = ? AND commit_block = ?",
            (v.submission_status, v.status_detail, real(v.last_kl, "last_kl"), self._clock(), *key_cols(v.key)),
        )

    def set_king(
        self, key: SubmissionId | None, block: int, round_id: int | None, kl: float | None, reason: str
    ) -> None:
        """Crown ``key`` (or clear the throne with None) and append to the king's history."""
        with self.transaction() as db:
            db.execute("DELETE FROM king WHERE id = 1")
            if key is not None:
                db.execute(
                    "INSERT INTO king(id, hotkey, commit_block, since_block, round_id, kl) VALUES (1,?,?,?,?,?)",
                    (*key_cols(key), block, round_id, real(kl, "king kl")),
                )
            db.execute(
                "INSERT INTO king_history(hotkey, commit_block, from_block, round_id, kl, reason, at)"
                " VALUES (?,?,?,?,?,?,?)",
                (
                    key.hotkey if key else None,
                    key.commit_block if key else None,
                    block,
                    round_id,
                    real(kl, "king kl"),
                    reason,
                    self._clock(),
                ),
            )
