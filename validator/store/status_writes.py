"""Writes about the validator's own state: meta settings, weight submissions, metagraph snapshots, progress.

Kept apart from the contest writes: these are what the loop reports for the API
and for its own restarts, not verdicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from validator.store.connection import Connection, StoreError, dumps, real
from validator.store.schema import WEIGHT_STATES


class StatusWrites(Connection):
    def set_meta(self, **values: str | int | float) -> None:
        with self.transaction() as db:
            for k, v in values.items():
                db.execute(
                    "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (k, dumps(v)),
                )

    def record_weights(
        self,
        block: int,
        uids: Sequence[int],
        weights: Sequence[float],
        success: bool,
        message: str = "",
        confirmed: bool | None = None,
        *,
        state: str | None = None,
        reveal_block: int | None = None,
    ) -> int:
        """Record one weight submission; an accepted one supersedes any earlier one still unconfirmed.

        ``state`` defaults to ``set`` for an accepted submission and ``failed`` otherwise
        (``validator.store.schema.WEIGHT_STATES``).
        """
        if len(uids) != len(weights):
            raise StoreError("uids and weights differ in length")
        state = state or ("set" if success else "failed")
        if state not in WEIGHT_STATES:
            raise StoreError(f"unknown weights state {state!r}")
        with self.transaction() as db:
            if success:
                db.execute(
                    "UPDATE weight_submissions SET state = 'superseded', confirmed = 0"
                    " WHERE success = 1 AND confirmed IS NULL"
                )
            cur = db.execute(
                "INSERT INTO weight_submissions(block, uids, weights, success, message, confirmed, at, state,"
                " reveal_block) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    block,
                    dumps([int(u) for u in uids]),
                    dumps([real(w, "weight") for w in weights]),
                    int(success),
                    message[:2000],
                    None if confirmed is None else int(confirmed),
                    self._clock(),
                    state,
                    reveal_block,
                ),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def confirm_weights(self, weights_id: int, confirmed: bool, state: str | None = None) -> None:
        """Settle a submission: seen on chain (``confirmed``) or given up on; ``state`` moves with it."""
        if state is not None and state not in WEIGHT_STATES:
            raise StoreError(f"unknown weights state {state!r}")
        with self.transaction() as db:
            db.execute(
                "UPDATE weight_submissions SET confirmed = ?, state = COALESCE(?, state) WHERE id = ?",
                (int(confirmed), state, weights_id),
            )

    def save_metagraph(self, block: int, neurons: Sequence[dict[str, Any]], keep: int = 100) -> None:
        """Snapshot neurons (plain dicts) for the API; only the latest ``keep`` snapshots are kept."""
        for n in neurons:
            for k, v in n.items():
                if isinstance(v, float):
                    real(v, f"neuron {k}")
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO metagraph(block, neurons, at) VALUES (?,?,?)",
                (block, dumps(list(neurons)), self._clock()),
            )
            db.execute(
                "DELETE FROM metagraph WHERE block NOT IN (SELECT block FROM metagraph ORDER BY block DESC LIMIT ?)",
                (keep,),
            )

    def set_progress(self, data: dict[str, Any] | None) -> None:
        """Live round progress (one row, overwritten); None clears it."""
        with self.transaction() as db:
            if data is None:
                db.execute("DELETE FROM progress")
            else:
                db.execute(
                    "INSERT OR REPLACE INTO progress(id, data, updated) VALUES (1, ?, ?)", (dumps(data), self._clock())
                )
