"""Read-only queries the loop runs on the store: intake, admission, planning, ownership, weights.

All return typed rows (``validator.store.rows``), submission ids or contest types;
``meta`` alone is a free-form dict. Kept apart from the API's queries
(``validator.store.api_reads``) so what the loop depends on is visible at a glance.
JSON columns are decoded here, so callers never see raw JSON text.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from eval.schemas import SubmissionId
from validator.contest import Candidate
from validator.store import rows as r
from validator.store.rows import build


def submission_id(row: sqlite3.Row | dict[str, Any]) -> SubmissionId:
    """The one place a row's key columns become a submission id."""
    return SubmissionId(row["hotkey"], row["commit_block"])


_CLAIMING = "JOIN submissions USING (hotkey, commit_block) WHERE submissions.status != 'ignored'"


class LoopReads:
    """The loop's queries (and the row decoding the API's queries share)."""

    _db: sqlite3.Connection

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return list(self._db.execute(sql, args))

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._db.execute(sql, args).fetchone()
        return row

    @staticmethod
    def _round_row(row: sqlite3.Row) -> r.RoundRow:
        return build(
            r.RoundRow,
            row,
            prompt_sha256s=json.loads(row["prompt_sha256s"]),
            rules=json.loads(row["rules"]),
            models=[SubmissionId(h, b) for h, b in json.loads(row["models"])],
        )

    @staticmethod
    def _weights_row(row: sqlite3.Row | None) -> r.WeightsRow | None:
        if row is None:
            return None
        return build(
            r.WeightsRow,
            row,
            uids=json.loads(row["uids"]),
            weights=json.loads(row["weights"]),
            success=bool(row["success"]),
            confirmed=None if row["confirmed"] is None else bool(row["confirmed"]),
        )

    def integrity_ok(self) -> bool:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def meta(self) -> dict[str, Any]:
        """Free-form key/value settings the loop records (network, netuid, last epoch block, hub health)."""
        return {row["key"]: json.loads(row["value"]) for row in self._all("SELECT key, value FROM meta")}

    def known_keys(self) -> set[SubmissionId]:
        return {submission_id(row) for row in self._db.execute("SELECT hotkey, commit_block FROM submissions")}

    def round_count(self) -> int:
        """Rounds ever created, in any state (the loop numbers job attempts by it)."""
        return int(self._db.execute("SELECT COUNT(*) FROM rounds").fetchone()[0])

    def strikes(self, key: SubmissionId) -> int:
        """Missing-repo strikes of one submission (0 when unknown)."""
        row = self._db.execute(
            "SELECT strikes FROM submissions WHERE hotkey = ? AND commit_block = ?", (key.hotkey, key.commit_block)
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def candidates(self, registered_hotkeys: Iterable[str]) -> list[Candidate]:
        """Every submission with a model, as the planner sees it (``registered`` from the current neurons)."""
        reg = set(registered_hotkeys)
        rows = self._db.execute(
            "SELECT hotkey, commit_block, repo, revision, coldkey, status, last_kl, slot FROM submissions"
            " WHERE repo IS NOT NULL ORDER BY commit_block, hotkey"
        )
        return [
            Candidate(
                row["hotkey"],
                row["commit_block"],
                row["repo"],
                row["revision"],
                row["coldkey"] or "",
                row["status"],
                row["last_kl"],
                row["hotkey"] in reg,
                row["slot"],
            )
            for row in rows
        ]

    def pending_admissions(self, block: int) -> list[r.PendingAdmission]:
        """Submissions waiting for admission whose retry time (if any) has come."""
        rows = self._all(
            "SELECT s.*, a.attempts, a.next_retry_block FROM submissions s LEFT JOIN admissions a"
            " USING (hotkey, commit_block) WHERE s.status = 'pending'"
            " AND (a.next_retry_block IS NULL OR a.next_retry_block <= ?) ORDER BY s.commit_block, s.hotkey",
            (block,),
        )
        return [build(r.PendingAdmission, row) for row in rows]

    def live_keys(self) -> list[SubmissionId]:
        """Submissions that still count and a re-commit would withdraw (``contest.LIVE_STATUSES``)."""
        rows = self._db.execute(
            "SELECT hotkey, commit_block FROM submissions WHERE status IN ('pending', 'admitted', 'evaluated')"
        )
        return [submission_id(row) for row in rows]

    # Ownership (LESSONS 1-5) is claimed only by submissions that still count: a withdrawn one
    # (status 'ignored') is gone from the chain, so a validator starting now could not know it.
    def known_content_hashes(self) -> list[tuple[SubmissionId, str]]:
        rows = self._db.execute(f"SELECT hotkey, commit_block, value FROM hashes {_CLAIMING} AND kind = 'content'")
        return [(submission_id(row), row["value"]) for row in rows]

    def metadata_hash_owner(self, value: str) -> SubmissionId | None:
        holders = self.metadata_hash_holders(value)
        return holders[0] if holders else None

    def metadata_hash_holders(self, value: str) -> list[SubmissionId]:
        """Every submission that counts, recorded with this metadata hash, earliest commit first."""
        rows = self._db.execute(
            f"SELECT hotkey, commit_block FROM hashes {_CLAIMING} AND kind = 'metadata'"
            " AND value = ? ORDER BY commit_block, hotkey",
            (value,),
        )
        return [submission_id(row) for row in rows]

    def known_fingerprints(self) -> list[tuple[SubmissionId, list[float]]]:
        rows = self._db.execute(f"SELECT hotkey, commit_block, vector FROM fingerprints {_CLAIMING}")
        return [(submission_id(row), json.loads(row["vector"])) for row in rows]

    def current_king(self) -> r.KingRow | None:
        row = self._one(
            "SELECT k.*, s.repo, s.revision, s.uid_at_sight FROM king k JOIN submissions s"
            " USING (hotkey, commit_block) WHERE k.id = 1"
        )
        return build(r.KingRow, row) if row else None

    def interrupted_rounds(self) -> list[r.RoundRow]:
        """Rounds planned or dispatched but never finished: resume (same job id) or fail and re-plan."""
        rows = self._all("SELECT * FROM rounds WHERE state IN ('planned', 'dispatched') ORDER BY id")
        return [self._round_row(row) for row in rows]

    def last_weights(self, successful: bool = True, *, confirmed: bool = False) -> r.WeightsRow | None:
        """The latest weight submission: any, accepted (``successful``), or seen on chain (``confirmed``)."""
        where = "WHERE confirmed = 1" if confirmed else "WHERE success = 1" if successful else ""
        return self._weights_row(self._one(f"SELECT * FROM weight_submissions {where} ORDER BY id DESC LIMIT 1"))

    def pending_weights(self) -> r.WeightsRow | None:
        """The accepted submission still waiting to show on chain (a commit before its reveal), if any."""
        return self._weights_row(
            self._one(
                "SELECT * FROM weight_submissions WHERE success = 1 AND confirmed IS NULL ORDER BY id DESC LIMIT 1"
            )
        )

    # The shared schedule (validator.schedule, validator.slots).
    def schedule_entries(self) -> list[r.ScheduleEntry]:
        """Submissions the schedule places: every parsed commitment still on the chain (not withdrawn)."""
        rows = self._all(
            "SELECT hotkey, commit_block, COALESCE(coldkey, hotkey) AS coldkey, slot FROM submissions"
            " WHERE repo IS NOT NULL AND status != 'ignored' ORDER BY commit_block, hotkey"
        )
        return [build(r.ScheduleEntry, row) for row in rows]

    @staticmethod
    def _slot_row(row: sqlite3.Row) -> r.SlotRow:
        return build(r.SlotRow, row, agree=None if row["agree"] is None else bool(row["agree"]))

    def slot_record(self, slot: int) -> r.SlotRow | None:
        row = self._one("SELECT * FROM slots WHERE slot = ?", (slot,))
        return self._slot_row(row) if row else None

    def latest_slots(self, limit: int = 1) -> list[r.SlotRow]:
        """The newest slot records, newest first."""
        return [self._slot_row(row) for row in self._all("SELECT * FROM slots ORDER BY slot DESC LIMIT ?", (limit,))]

    def live_submissions(self) -> dict[str, SubmissionId]:
        """Each hotkey's live submission (``contest.LIVE_STATUSES``): what a consensus king may be."""
        rows = self._db.execute(
            "SELECT hotkey, commit_block FROM submissions WHERE status IN ('pending', 'admitted', 'evaluated')"
        )
        return {row["hotkey"]: submission_id(row) for row in rows}
