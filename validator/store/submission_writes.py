"""Writes about submissions: new ones, withdrawals, statuses, strikes, admission attempts, hashes, DQs.

Every status written here is the one the caller decided (``validator.contest``,
``validator.admit``, ``validator.verdicts``); the store derives none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eval.schemas import SubmissionId
from validator.contest import NewSubmission
from validator.disqualify import Disqualification
from validator.store.connection import Connection, StoreError, dumps, key_cols


class SubmissionWrites(Connection):
    def add_submissions(self, subs: Sequence[NewSubmission], disqualified: Sequence[Disqualification] = ()) -> int:
        """Record new submissions and the disqualifications the domain decided for them, in one transaction.

        Known keys are left untouched. ``disqualified`` comes from ``contest.commitment_disqualifications``:
        the store writes what it is given and derives nothing from a status.
        """
        now = self._clock()
        with self.transaction() as db:
            n = 0
            for s in subs:
                cur = db.execute(
                    "INSERT OR IGNORE INTO submissions(hotkey, commit_block, uid_at_sight, coldkey, repo, revision,"
                    " raw_text, status, status_detail, first_seen, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        s.hotkey,
                        s.commit_block,
                        s.uid,
                        s.coldkey,
                        s.repo,
                        s.revision,
                        s.raw_text,
                        s.status,
                        s.reason,
                        now,
                        now,
                    ),
                )
                n += cur.rowcount
            for dq in disqualified:  # block: a commitment is judged at the block it was made
                self.add_disqualification(dq.key, dq.reason, dq.check, dq.detail, dq.evidence, dq.commit_block)
            return n

    def withdraw_submissions(self, replaced: dict[SubmissionId, int]) -> int:
        """Mark live submissions whose hotkey committed again as withdrawn (status ``ignored``), in one go.

        ``replaced`` maps each key to the block of the commitment that replaced it. A withdrawn king
        vanishes like a removed one; final verdicts are not touched (``contest.LIVE_STATUSES``).
        """
        with self.transaction() as db:
            n = 0
            for key, new_block in replaced.items():
                cur = db.execute(
                    "UPDATE submissions SET status = 'ignored', status_detail = ?, updated = ?"
                    " WHERE hotkey = ? AND commit_block = ? AND status IN ('pending', 'admitted',"
                    " 'evaluated')",
                    (f"withdrawn: replaced by the commitment at block {new_block}", self._clock(), *key_cols(key)),
                )
                n += cur.rowcount
            return n

    def set_status(self, key: SubmissionId, status: str, detail: str | None = None) -> None:
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE submissions SET status = ?, status_detail = ?, updated = ?"
                " WHERE hotkey = ? AND commit_block = ?",
                (status, detail, self._clock(), *key_cols(key)),
            )
            if cur.rowcount != 1:
                raise StoreError(f"no submission {key}")

    def set_strikes(self, key: SubmissionId, strikes: int) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE submissions SET strikes = ? WHERE hotkey = ? AND commit_block = ?", (strikes, *key_cols(key))
            )

    def record_admission(
        self,
        key: SubmissionId,
        result: str,
        status: str,
        *,
        status_detail: str | None = None,
        params: int | None = None,
        metadata_hash: str | None = None,
        check: str | None = None,
        detail: str | None = None,
        next_retry_block: int | None = None,
    ) -> None:
        """Record an admission attempt and the submission's ``status`` after it, as decided by the caller
        (``validator.admit.admission_status``): the attempt counter grows with each call."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO admissions(hotkey, commit_block, result, params, metadata_hash, check_name, detail,"
                " attempts, next_retry_block, updated) VALUES (?,?,?,?,?,?,?,1,?,?) ON CONFLICT(hotkey, commit_block)"
                " DO UPDATE SET result=excluded.result, params=excluded.params, metadata_hash=excluded.metadata_hash,"
                " check_name=excluded.check_name, detail=excluded.detail, attempts=attempts+1,"
                " next_retry_block=excluded.next_retry_block, updated=excluded.updated",
                (*key_cols(key), result, params, metadata_hash, check, detail, next_retry_block, self._clock()),
            )
            if metadata_hash:
                self.add_hash(key, "metadata", metadata_hash)
            self.set_status(key, status, status_detail)

    def add_hash(self, key: SubmissionId, kind: str, value: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO hashes(hotkey, commit_block, kind, value) VALUES (?,?,?,?)",
                (*key_cols(key), kind, value),
            )

    def add_integrity(self, key: SubmissionId, files: dict[str, str]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO integrity(hotkey, commit_block, path, sha256) VALUES (?,?,?,?)",
                [(*key_cols(key), p, h) for p, h in sorted(files.items())],
            )

    def add_disqualification(
        self,
        key: SubmissionId,
        reason: str,
        check: str,
        detail: str,
        evidence: dict[str, Any],
        block: int,
        round_id: int | None = None,
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO disqualifications(hotkey, commit_block, reason, check_name, detail, evidence,"
                " block, round_id, at) VALUES (?,?,?,?,?,?,?,?,?)",
                (*key_cols(key), reason, check, detail, dumps(evidence), block, round_id, self._clock()),
            )
