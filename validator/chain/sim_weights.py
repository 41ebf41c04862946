"""SimChain's weights: a direct set, or subtensor's two steps (a timelocked commit, a later reveal).

Subtensor runs commit-reveal by default: ``SetWeights`` sends an encrypted commit, which the chain
accepts without looking at the validator permit or stake (it cannot read the weights) and which
moves ``LastUpdate`` at once; some blocks later the chain decrypts and applies it, and a reveal
that fails (no permit or stake by then, bad payload, drand late) is dropped without a word.
SimChain models exactly that, so the loop's tests meet the same two steps:

- ``set_commit_reveal(True, reveal_blocks=N)`` (admin) switches the subnet to commit-reveal;
  a commit made at block ``b`` is applied by the first read at or after block ``b + N``.
- ``fail_next_reveals(k)`` (admin) makes the next ``k`` reveals fail silently, as subtensor's do.
- A reveal also fails when the signer has lost its permit or its stake is below ``min_stake``.

Direct sets (commit-reveal off, the default for an embedded chain) refuse a missing permit or
too little stake with a failed receipt, as the chain's ``set_weights`` extrinsic does.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from validator.chain.port import ChainError, WeightsReceipt, normalized_weights


class SimChainWeights:
    """Mixin for ``SimChain``: weight writes, the reveal step and the weight reads."""

    netuid: int

    if TYPE_CHECKING:

        def _write(self) -> AbstractContextManager[sqlite3.Cursor]: ...

        def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple]: ...

        def _number(self) -> int: ...

        def _meta(self, key: str) -> str: ...

        def _signer(self) -> str: ...

    # -- reads --------------------------------------------------------------------------------

    def weights_of(self, hotkey: str) -> dict[int, float] | None:
        self._reveal_due()
        if not self._read("SELECT 1 FROM neurons WHERE netuid = ? AND hotkey = ?", (self.netuid, hotkey)):
            return None
        rows = self._read("SELECT uids, weights FROM weights WHERE netuid = ? AND hotkey = ?", (self.netuid, hotkey))
        if not rows:
            return {}
        return normalized_weights(json.loads(rows[0][0]), json.loads(rows[0][1]))

    def weight_rows(self) -> dict[int, dict[int, float]]:
        self._reveal_due()
        rows = self._read(
            "SELECT n.uid, w.uids, w.weights FROM weights w JOIN neurons n"
            " ON n.netuid = w.netuid AND n.hotkey = w.hotkey WHERE w.netuid = ?",
            (self.netuid,),
        )
        out = {int(uid): normalized_weights(json.loads(u), json.loads(w)) for uid, u, w in rows}
        return {uid: row for uid, row in out.items() if row}

    def weights_min_stake(self) -> float:
        return float(self._meta("min_stake"))

    # -- the signed write ---------------------------------------------------------------------

    def set_weights(self, uids: list[int], weights: list[float]) -> WeightsReceipt:
        """Set the signer's weights directly, or commit them when the subnet runs commit-reveal."""
        hotkey = self._signer()
        if len(uids) != len(weights) or not uids or len(set(uids)) != len(uids):
            raise ChainError(f"uids and weights must be equal-length, non-empty and unique; got {uids} / {weights}.")
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ChainError(f"Weights must be finite, non-negative and not all zero; got {weights}.")
        self._reveal_due()
        block = self._number()
        vector = (json.dumps(list(map(int, uids))), json.dumps(list(map(float, weights))))
        with self._write() as cur:
            row = cur.execute(
                "SELECT validator_permit, last_update, stake FROM neurons WHERE netuid = ? AND hotkey = ?",
                (self.netuid, hotkey),
            ).fetchone()
            if row is None:
                return WeightsReceipt(
                    False, f"Hotkey {hotkey} is not registered on netuid {self.netuid}.", None, "not_registered"
                )
            commit_reveal = _meta(cur, "commit_reveal") == "1"
            if not commit_reveal:  # a plain set is checked at once; a commit only when it is revealed
                refusal = _standing_refusal(cur, hotkey, self.netuid, bool(row[0]), float(row[2]))
                if refusal is not None:
                    return refusal
            limit, last = int(_meta(cur, "weights_rate_limit")), int(row[1])
            if last > 0 and block - last < limit:
                return WeightsReceipt(
                    False,
                    f"Weights were set {block - last} blocks ago; the rate limit is {limit} blocks.",
                    None,
                    "rate_limited",
                )
            known = {r[0] for r in cur.execute("SELECT uid FROM neurons WHERE netuid = ?", (self.netuid,))}
            unknown = sorted(set(uids) - known)
            if unknown:
                return WeightsReceipt(
                    False, f"Uids {unknown} are not registered on netuid {self.netuid}.", None, "rejected"
                )
            sql = "UPDATE neurons SET last_update = ? WHERE netuid = ? AND hotkey = ?"
            cur.execute(sql, (block, self.netuid, hotkey))
            if commit_reveal:
                reveal = block + int(_meta(cur, "reveal_blocks"))
                cur.execute(
                    "INSERT INTO weight_commits (netuid, hotkey, commit_block, reveal_block, uids, weights) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (self.netuid, hotkey, block, reveal, *vector),
                )
                return WeightsReceipt(
                    True,
                    f"Weights committed at block {block}; revealed at block {reveal}.",
                    block,
                    committed=True,
                    reveal_by=reveal,
                )
            _apply(cur, self.netuid, hotkey, block, *vector)
        return WeightsReceipt(True, f"Weights set at block {block}.", block, reveal_by=block)

    # -- the reveal step ----------------------------------------------------------------------

    def _reveal_due(self) -> None:
        """Apply (or silently drop) every commit whose reveal block has come, oldest first."""
        block = self._number()
        due = "SELECT 1 FROM weight_commits WHERE netuid = ? AND reveal_block <= ? LIMIT 1"
        if not self._read(due, (self.netuid, block)):
            return
        with self._write() as cur:
            for rowid, hotkey, commit_block, uids, weights in list(_due(cur, self.netuid, block)):
                cur.execute("DELETE FROM weight_commits WHERE rowid = ?", (rowid,))
                if _consume_failure(cur):
                    continue
                row = cur.execute(
                    "SELECT validator_permit, stake FROM neurons WHERE netuid = ? AND hotkey = ?", (self.netuid, hotkey)
                ).fetchone()
                if row is None or _standing_refusal(cur, hotkey, self.netuid, bool(row[0]), float(row[1])):
                    continue  # subtensor drops such a reveal without an event the validator would see
                _apply(cur, self.netuid, hotkey, commit_block, uids, weights)


def _meta(cur: sqlite3.Cursor, key: str) -> str:
    return str(cur.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])


def _standing_refusal(
    cur: sqlite3.Cursor, hotkey: str, netuid: int, permit: bool, stake: float
) -> WeightsReceipt | None:
    if not permit:
        return WeightsReceipt(False, f"Hotkey {hotkey} has no validator permit on netuid {netuid}.", None, "no_permit")
    floor = float(_meta(cur, "min_stake"))
    if stake < floor:
        return WeightsReceipt(
            False, f"Hotkey {hotkey} has {stake:g} stake on netuid {netuid}; weights need {floor:g}.", None, "low_stake"
        )
    return None


def _due(cur: sqlite3.Cursor, netuid: int, block: int) -> Iterator[tuple[int, str, int, str, str]]:
    yield from cur.execute(
        "SELECT rowid, hotkey, commit_block, uids, weights FROM weight_commits WHERE netuid = ? AND reveal_block <= ? "
        "ORDER BY reveal_block, commit_block, rowid",
        (netuid, block),
    )


def _consume_failure(cur: sqlite3.Cursor) -> bool:
    left = int(_meta(cur, "fail_reveals"))
    if left <= 0:
        return False
    cur.execute("UPDATE meta SET value = ? WHERE key = 'fail_reveals'", (str(left - 1),))
    return True


def _apply(cur: sqlite3.Cursor, netuid: int, hotkey: str, block: int, uids: str, weights: str) -> None:
    cur.execute(
        "INSERT OR REPLACE INTO weights (netuid, hotkey, block, uids, weights) VALUES (?, ?, ?, ?, ?)",
        (netuid, hotkey, block, uids, weights),
    )
