"""SimChain: an embedded chain in one SQLite file, so the contest runs anywhere.

It is the chain the demo and the tests run on, shared between processes (the miner CLI
commits while the validator reads): WAL mode, a busy timeout and short ``BEGIN IMMEDIATE``
transactions. Rules mirror subtensor where the contest depends on them:

- Time: block ``n`` is the one in progress ``n * block_time`` seconds after a genesis time
  stored in the DB. ``advance(n)`` moves every process's clock forward by shifting genesis.
  ``block_time``, ``genesis``, ``max_uids`` and ``seed`` passed to the constructor apply only
  when the file is created; an existing file's stored values win, so every process agrees.
- Hashes: a deterministic chain from a seed stored at creation (random, or fixed with
  ``seed=...`` so an embedded run can be reproduced exactly):
  ``hash_0 = sha256(seed || be64(0))``, ``hash_n = sha256(hash_{n-1} || be64(n))``.
  Unpredictable before the seed is known, identical for every reader afterwards.
- Finality: the head block is still in progress (commitments land in it), so the newest final
  block is the one before it, less a lag stored in the DB (0 unless
  ``set_finality_lag`` says otherwise; subtensor's is usually 2-3 blocks, more when finality
  stalls). ``final_block_hash`` answers only at or below it, as round seeds need.
- Registration: at most ``max_uids`` neurons; when full, the lowest-stake non-validator
  (oldest on ties) is deregistered and its uid RECYCLED for the newcomer (LESSONS 17).
- Commitments: one per hotkey per netuid, at most 128 bytes; a second raises
  ``AlreadyCommitted`` unless ``replace=True``, which overwrites the text and the block as a
  re-commit does on subtensor. They stay in storage after deregistration, as on subtensor.
- Weights (``validator.chain.sim_weights``): a direct set, or a timelocked commit revealed
  ``reveal_blocks`` later when commit-reveal is on; registration, permit, stake floor and a
  rate limit in blocks. Refusals return a failed ``WeightsReceipt`` (the SDK returns a failed
  ``ExtrinsicResult`` the same way). Incentive is the stake-weighted mean of the permitted
  validators' normalised weight vectors, ignoring weights set before the target uid was
  (re)registered; emission is incentive times the per-tempo emission stored in ``meta``.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from validator.chain.port import (
    AlreadyCommitted,
    BlockRef,
    ChainError,
    Commitment,
    Neuron,
    NotRegistered,
    check_commitment_text,
)
from validator.chain.sim_admin import SimChainAdmin
from validator.chain.sim_weights import SimChainWeights

SIM_NETWORK = "sim"  # the --network value that selects this chain (validator and miner.py commit alike)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS neurons (
    netuid INTEGER NOT NULL, uid INTEGER NOT NULL, hotkey TEXT NOT NULL, coldkey TEXT NOT NULL,
    stake REAL NOT NULL DEFAULT 0, validator_permit INTEGER NOT NULL DEFAULT 0,
    registered_at INTEGER NOT NULL, last_update INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (netuid, uid), UNIQUE (netuid, hotkey));
CREATE TABLE IF NOT EXISTS commitments (
    netuid INTEGER NOT NULL, hotkey TEXT NOT NULL, block INTEGER NOT NULL, text TEXT NOT NULL,
    PRIMARY KEY (netuid, hotkey));
CREATE TABLE IF NOT EXISTS weights (
    netuid INTEGER NOT NULL, hotkey TEXT NOT NULL, block INTEGER NOT NULL,
    uids TEXT NOT NULL, weights TEXT NOT NULL, PRIMARY KEY (netuid, hotkey));
CREATE TABLE IF NOT EXISTS weight_commits (
    netuid INTEGER NOT NULL, hotkey TEXT NOT NULL, commit_block INTEGER NOT NULL, reveal_block INTEGER NOT NULL,
    uids TEXT NOT NULL, weights TEXT NOT NULL);
"""

_DEFAULTS = {
    "max_uids": "256",
    "weights_rate_limit": "100",
    "emission_per_tempo": "1.0",
    "commit_reveal": "0",
    "reveal_blocks": "10",
    "fail_reveals": "0",
    "min_stake": "0.0",
    "finality_lag": "0",
}
_CHECKPOINT = 1024


def derive_incentives(
    vectors: list[tuple[int, list[int], list[float], float]], registered_at: dict[int, int]
) -> dict[int, float]:
    """Incentive per uid from validators' ``(block, uids, weights, stake)`` vectors; sums to 1 or is empty.

    Each vector is normalised; an entry for a uid registered after the vector was set is dropped
    (it scored the uid's previous owner). Validators count by stake (all equal when no stake).
    """
    total_stake = sum(max(s, 0.0) for *_, s in vectors)
    scores: dict[int, float] = {}
    for block, uids, weights, stake in vectors:
        live = [(u, w) for u, w in zip(uids, weights, strict=True) if u in registered_at and registered_at[u] <= block]
        norm = sum(w for _, w in live)
        if norm <= 0:
            continue
        share = max(stake, 0.0) / total_stake if total_stake > 0 else 1.0 / len(vectors)
        for uid, weight in live:
            scores[uid] = scores.get(uid, 0.0) + share * weight / norm
    total = sum(scores.values())
    return {uid: score / total for uid, score in scores.items()} if total > 0 else {}


class SimChain(SimChainWeights, SimChainAdmin):
    """An embedded chain bound to one netuid and (optionally) one signing hotkey.

    Admin operations (``advance``, ``register``, ``deregister``, ``set_stake``, ``set_validator_permit``,
    ``set_weights_rate_limit``, ``set_commit_reveal``, ``fail_next_reveals``, ``set_min_stake``,
    ``set_finality_lag``) come from ``validator.chain.sim_admin.SimChainAdmin``; weights from
    ``validator.chain.sim_weights``.
    """

    def __init__(
        self,
        path: Path,
        netuid: int = 1,
        *,
        block_time: float = 12.0,
        hotkey: str | None = None,
        genesis: float | None = None,
        max_uids: int = 256,
        weights_rate_limit: int = 100,
        seed: bytes | None = None,
    ) -> None:
        if block_time <= 0:
            raise ValueError(f"block_time must be > 0, got {block_time}")
        if seed is not None and not seed:
            raise ValueError("seed must be non-empty bytes (or None for a random one)")
        self.path = Path(path)
        self.netuid = netuid
        self.hotkey = hotkey
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout = 30000")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        with self._write() as cur:
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    cur.execute(statement)
            initial = dict(_DEFAULTS)
            initial.update(
                block_time=repr(float(block_time)),
                genesis=repr(time.time() if genesis is None else float(genesis)),
                seed=secrets.token_hex(32) if seed is None else seed.hex(),
                max_uids=str(max_uids),
                weights_rate_limit=str(weights_rate_limit),
            )
            cur.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", initial.items())
        self._block_time = float(self._meta("block_time"))
        self._seed = bytes.fromhex(self._meta("seed"))
        self._checkpoints: dict[int, bytes] = {}

    # -- plumbing -----------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        """A short write transaction, taken eagerly so concurrent writers queue instead of deadlocking."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _meta(self, key: str) -> str:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        if not rows:
            raise ChainError(f"SimChain database {self.path} has no meta key {key!r}; it is not a SimChain file.")
        return str(rows[0][0])

    def _set_meta(self, key: str, value: str) -> None:
        with self._write() as cur:
            cur.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _signer(self) -> str:
        if self.hotkey is None:
            raise ChainError("This SimChain handle has no hotkey; open it with hotkey=... to sign.")
        return self.hotkey

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- time and hashes ----------------------------------------------------------------------

    def _number(self) -> int:
        elapsed = time.time() - float(self._meta("genesis"))
        return max(0, math.floor(elapsed / self._block_time))

    def head(self) -> BlockRef:
        number = self._number()
        return BlockRef(number=number, hash=self._hash(number))

    def block_number(self) -> int:
        return self._number()

    def block_hash(self, number: int) -> str:
        if number < 0 or number > self._number():
            raise ChainError(f"Block {number} does not exist yet on this SimChain (head is {self._number()}).")
        return self._hash(number)

    def finalized_block_number(self) -> int:
        """The newest sealed block (the head is still in progress: it takes commitments) minus the finality
        lag (``set_finality_lag``; 0 unless set, subtensor's is ~2 blocks)."""
        return max(0, self._number() - 1 - int(self._meta("finality_lag")))

    def final_block_hash(self, number: int) -> str | None:
        if number < 0:
            raise ChainError(f"Block {number} does not exist.")
        return self._hash(number) if number <= self.finalized_block_number() else None

    def _hash(self, number: int) -> str:
        """hash_n = sha256(hash_{n-1} || be64(n)); walked from the nearest cached checkpoint."""
        base = (number // _CHECKPOINT) * _CHECKPOINT
        start = max((k for k in self._checkpoints if k <= base), default=-1)
        digest = self._checkpoints.get(start, self._seed)
        for n in range(start + 1, number + 1):
            digest = hashlib.sha256(digest + n.to_bytes(8, "big")).digest()
            if n % _CHECKPOINT == 0:
                self._checkpoints[n] = digest
        return "0x" + digest.hex()

    # -- reads --------------------------------------------------------------------------------

    def neurons(self) -> list[Neuron]:
        self._reveal_due()
        rows = self._read(
            "SELECT uid, hotkey, coldkey, stake, validator_permit, registered_at, last_update "
            "FROM neurons WHERE netuid = ? ORDER BY uid",
            (self.netuid,),
        )
        vectors = self._read(
            "SELECT w.hotkey, w.block, w.uids, w.weights, n.stake FROM weights w JOIN neurons n "
            "ON n.netuid = w.netuid AND n.hotkey = w.hotkey WHERE w.netuid = ? AND n.validator_permit = 1",
            (self.netuid,),
        )
        incentive = derive_incentives(
            [(int(b), json.loads(u), json.loads(w), float(s)) for _, b, u, w, s in vectors],
            {int(r[0]): int(r[5]) for r in rows},
        )
        per_tempo = float(self._meta("emission_per_tempo"))
        return [
            Neuron(
                uid=int(uid),
                hotkey=hk,
                coldkey=ck,
                stake=float(stake),
                validator_permit=bool(permit),
                incentive=incentive.get(int(uid), 0.0),
                emission=incentive.get(int(uid), 0.0) * per_tempo,
                last_update=int(last),
                registered_at=int(registered),
            )
            for uid, hk, ck, stake, permit, registered, last in rows
        ]

    def commitments(self) -> dict[str, Commitment]:
        rows = self._read("SELECT hotkey, block, text FROM commitments WHERE netuid = ?", (self.netuid,))
        return {hk: Commitment(hotkey=hk, block=int(block), text=text) for hk, block, text in rows}

    def weights_rate_limit(self) -> int:
        return int(self._meta("weights_rate_limit"))

    def last_weights_block(self, hotkey: str) -> int | None:
        rows = self._read("SELECT last_update FROM neurons WHERE netuid = ? AND hotkey = ?", (self.netuid, hotkey))
        return int(rows[0][0]) if rows and rows[0][0] > 0 else None

    def is_registered(self, hotkey: str) -> bool:
        return bool(self._read("SELECT 1 FROM neurons WHERE netuid = ? AND hotkey = ?", (self.netuid, hotkey)))

    # -- signed writes ------------------------------------------------------------------------

    def commit(self, text: str, *, replace: bool = False) -> int:
        """Record the signer's commitment at the current block and return that block.

        An existing one is kept (``AlreadyCommitted``) unless ``replace``, which overwrites it.
        """
        hotkey = self._signer()
        check_commitment_text(text)
        block = self._number()
        with self._write() as cur:
            if (
                cur.execute("SELECT 1 FROM neurons WHERE netuid = ? AND hotkey = ?", (self.netuid, hotkey)).fetchone()
                is None
            ):
                raise NotRegistered(f"Hotkey {hotkey} is not registered on netuid {self.netuid}; register first.")
            prior = cur.execute(
                "SELECT block FROM commitments WHERE netuid = ? AND hotkey = ?", (self.netuid, hotkey)
            ).fetchone()
            if prior is not None and not replace:
                raise AlreadyCommitted(
                    f"Hotkey {hotkey} already committed on netuid {self.netuid} at block {prior[0]}; "
                    "a new commitment would replace it."
                )
            cur.execute(
                "INSERT OR REPLACE INTO commitments (netuid, hotkey, block, text) VALUES (?, ?, ?, ?)",
                (self.netuid, hotkey, block, text),
            )
        return block
