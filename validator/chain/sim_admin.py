"""SimChain's admin operations: what a subnet owner or the chain itself does, not a signed call.

Time (``advance``), registration with uid recycling (LESSONS 17), deregistration, stake,
validator permits, the weights rate limit, the stake floor for weights and commit-reveal
(``set_commit_reveal``, ``fail_next_reveals``: see ``validator.chain.sim_weights``). They live
apart from ``validator.chain.sim`` so that module keeps to the chain port (reads and the two
signed writes); ``SimChain`` inherits them, so ``SimChain(...).register(...)`` and friends are
unchanged for every caller.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from validator.chain.port import BlockRef, ChainError, NotRegistered


class SimChainAdmin:
    """Mixin for ``SimChain``: needs its write transaction, block clock, netuid and meta table."""

    netuid: int
    _block_time: float

    if TYPE_CHECKING:

        def _write(self) -> AbstractContextManager[sqlite3.Cursor]: ...

        def _number(self) -> int: ...

        def _set_meta(self, key: str, value: str) -> None: ...

        def head(self) -> BlockRef: ...

    def advance(self, blocks: int) -> BlockRef:
        """Admin: move the chain ``blocks`` blocks forward for every process sharing the file."""
        if blocks < 0:
            raise ValueError("SimChain time only moves forward")
        with self._write() as cur:
            genesis = float(cur.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()[0])
            cur.execute("UPDATE meta SET value = ? WHERE key = 'genesis'", (repr(genesis - blocks * self._block_time),))
        return self.head()

    def register(self, hotkey: str, coldkey: str, *, stake: float = 0.0, validator_permit: bool = False) -> int:
        """Admin: give ``hotkey`` a uid, recycling the weakest non-validator's uid when full."""
        block = self._number()
        with self._write() as cur:
            row = cur.execute(
                "SELECT uid FROM neurons WHERE netuid = ? AND hotkey = ?", (self.netuid, hotkey)
            ).fetchone()
            if row is not None:
                raise ChainError(f"Hotkey {hotkey} is already registered on netuid {self.netuid} as uid {row[0]}.")
            max_uids = int(cur.execute("SELECT value FROM meta WHERE key = 'max_uids'").fetchone()[0])
            used = {r[0] for r in cur.execute("SELECT uid FROM neurons WHERE netuid = ?", (self.netuid,))}
            free = [u for u in range(max_uids) if u not in used]
            if free:
                uid = free[0]
            else:
                victim = cur.execute(
                    "SELECT uid, hotkey FROM neurons WHERE netuid = ? AND validator_permit = 0 "
                    "ORDER BY stake ASC, registered_at ASC, uid ASC LIMIT 1",
                    (self.netuid,),
                ).fetchone()
                if victim is None:
                    raise ChainError(f"Netuid {self.netuid} is full of validators; no uid can be recycled.")
                uid = int(victim[0])
                self._drop(cur, victim[1])
            cur.execute(
                "INSERT INTO neurons (netuid, uid, hotkey, coldkey, stake, validator_permit, registered_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (self.netuid, uid, hotkey, coldkey, float(stake), int(validator_permit), block),
            )
        return uid

    def _drop(self, cur: sqlite3.Cursor, hotkey: str) -> None:
        cur.execute("DELETE FROM neurons WHERE netuid = ? AND hotkey = ?", (self.netuid, hotkey))
        cur.execute("DELETE FROM weights WHERE netuid = ? AND hotkey = ?", (self.netuid, hotkey))
        cur.execute("DELETE FROM weight_commits WHERE netuid = ? AND hotkey = ?", (self.netuid, hotkey))

    def deregister(self, hotkey: str) -> None:
        """Admin: free the hotkey's uid. Its commitment stays in storage, as on subtensor."""
        with self._write() as cur:
            if (
                cur.execute("SELECT 1 FROM neurons WHERE netuid = ? AND hotkey = ?", (self.netuid, hotkey)).fetchone()
                is None
            ):
                raise NotRegistered(f"Hotkey {hotkey} is not registered on netuid {self.netuid}.")
            self._drop(cur, hotkey)

    def _update_neuron(self, hotkey: str, column: str, value: object) -> None:
        with self._write() as cur:
            sql = f"UPDATE neurons SET {column} = ? WHERE netuid = ? AND hotkey = ?"
            cur.execute(sql, (value, self.netuid, hotkey))
            if cur.rowcount == 0:
                raise NotRegistered(f"Hotkey {hotkey} is not registered on netuid {self.netuid}.")

    def set_stake(self, hotkey: str, stake: float) -> None:
        self._update_neuron(hotkey, "stake", float(stake))

    def set_validator_permit(self, hotkey: str, permit: bool = True) -> None:
        self._update_neuron(hotkey, "validator_permit", int(permit))

    def set_weights_rate_limit(self, blocks: int) -> None:
        self._set_meta("weights_rate_limit", str(int(blocks)))

    def set_min_stake(self, stake: float) -> None:
        """Admin: the stake a hotkey needs for its weights to count (subtensor's ``StakeThreshold``)."""
        self._set_meta("min_stake", repr(float(stake)))

    def set_finality_lag(self, blocks: int) -> None:
        """Admin: blocks between the head and the finalized block (a stalled finality: a large lag)."""
        if blocks < 0:
            raise ValueError("the finality lag is >= 0 blocks")
        self._set_meta("finality_lag", str(int(blocks)))

    def set_commit_reveal(self, enabled: bool, reveal_blocks: int = 10) -> None:
        """Admin: switch commit-reveal weights on or off; a commit is revealed ``reveal_blocks`` later."""
        if reveal_blocks < 1:
            raise ValueError("reveal_blocks must be >= 1")
        self._set_meta("commit_reveal", "1" if enabled else "0")
        self._set_meta("reveal_blocks", str(int(reveal_blocks)))

    def fail_next_reveals(self, count: int = 1) -> None:
        """Admin: the next ``count`` reveals fail silently, as a failed automatic reveal does on subtensor."""
        self._set_meta("fail_reveals", str(max(0, int(count))))
