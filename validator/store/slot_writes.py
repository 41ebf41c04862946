"""Writes about the shared schedule: each submission's slot, and one record per slot processed.

The slots themselves are decided by ``validator.schedule`` (a pure function of the chain); the
consensus king and vtrust by ``validator.consensus``. The store keeps what they said, so a restart
continues from the first slot not yet done and never judges a slot twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eval.schemas import SubmissionId
from validator.store.connection import Connection, StoreError, key_cols, real
from validator.store.schema import SLOT_STATES


class SlotWrites(Connection):
    def assign_slots(self, slots: Mapping[SubmissionId, int]) -> None:
        """Record each submission's slot (its place in the schedule, or where this validator deferred it)."""
        with self.transaction() as db:
            for key, slot in slots.items():
                db.execute(
                    "UPDATE submissions SET slot = ?, updated = ? WHERE hotkey = ? AND commit_block = ?",
                    (int(slot), self._clock(), *key_cols(key)),
                )

    def open_slot(self, slot: int, start_block: int, **cols: Any) -> None:
        """Start (or re-start) a slot's record as ``open``; a slot already done is never reopened."""
        with self.transaction() as db:
            row = db.execute("SELECT state FROM slots WHERE slot = ?", (slot,)).fetchone()
            if row is not None and row["state"] != "open":
                raise StoreError(f"slot {slot} is already {row['state']}")
            if row is None:
                db.execute(
                    "INSERT INTO slots(slot, start_block, state, updated) VALUES (?,?,'open',?)",
                    (slot, start_block, self._clock()),
                )
            self._update_slot(db, slot, **cols)

    def close_slot(self, slot: int, start_block: int, state: str, king: SubmissionId | None, **cols: Any) -> None:
        """End a slot as ``empty`` or ``judged`` with the king after it (one row per slot, written once)."""
        if state not in SLOT_STATES or state == "open":
            raise StoreError(f"a slot closes as empty or judged, not {state!r}")
        with self.transaction() as db:
            row = db.execute("SELECT state FROM slots WHERE slot = ?", (slot,)).fetchone()
            if row is not None and row["state"] != "open":
                raise StoreError(f"slot {slot} is already {row['state']}")
            if row is None:
                db.execute(
                    "INSERT INTO slots(slot, start_block, state, updated) VALUES (?,?,?,?)",
                    (slot, start_block, state, self._clock()),
                )
            self._update_slot(
                db,
                slot,
                state=state,
                king_hotkey=king.hotkey if king else None,
                king_block=king.commit_block if king else None,
                **cols,
            )

    def observe_consensus(
        self,
        slot: int,
        consensus: SubmissionId | None,
        agree: bool | None,
        vtrust: float | None,
        block: int,
        *,
        streak: int = 0,
        king: SubmissionId | None = None,
    ) -> None:
        """What the chain's weights said while ``slot`` was the newest done: the consensus king, vtrust, and
        ``streak``, the slots in a row (this one included) whose king differed from the consensus king.

        ``king`` (when given) replaces the slot's king: the validator re-anchored on the consensus here.
        """
        cols: dict[str, Any] = {
            "consensus_hotkey": consensus.hotkey if consensus else None,
            "consensus_block": consensus.commit_block if consensus else None,
            "agree": None if agree is None else int(agree),
            "streak": int(streak),
            "vtrust": real(vtrust, "vtrust"),
            "observed_block": block,
        }
        if king is not None:
            cols.update(king_hotkey=king.hotkey, king_block=king.commit_block, anchor="consensus", anchor_block=block)
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM slots WHERE slot = ?", (slot,)).fetchone() is None:
                raise StoreError(f"no record of slot {slot}")
            self._update_slot(db, slot, **cols)

    def _update_slot(self, db: Any, slot: int, **cols: Any) -> None:
        if not cols:
            return
        sets = ", ".join(f"{c} = ?" for c in [*cols, "updated"])
        db.execute(f"UPDATE slots SET {sets} WHERE slot = ?", (*cols.values(), self._clock(), slot))
