"""A btauth/1 seen-nonce store that survives a pod restart (SQLite in the pod's workdir).

``bittensor.http_auth.verify`` takes any object with ``check_and_store(hotkey, nonce_ns) -> bool``
and an optional ``retention``. The SDK default keeps nonces in memory, so a request captured in the
last freshness window could be replayed once after a restart (a replayed DELETE cancels a job).
Here each accepted (hotkey, nonce) pair is committed to disk before the request is acted on.

Size is bounded two ways: entries expire ``retention`` seconds after their nonce's own timestamp
(wall clock, so expiry survives restarts; anything older is already stale to ``verify``), and past
``max_entries`` the oldest nonces are evicted while a *floor* (the newest evicted nonce) is kept:
any nonce at or below the floor is refused, so eviction never reopens a replay.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

DEFAULT_MAX_ENTRIES = 100_000


class SqliteNonceStore:
    """Durable ``http_auth.NonceStore``: ``check_and_store`` is True once per (hotkey, nonce), ever."""

    def __init__(
        self,
        path: Path,
        retention: float = 60.0,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.retention = retention  # read by http_auth.verify to check it covers the freshness window
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seen"
            " (hotkey TEXT NOT NULL, nonce INTEGER NOT NULL, PRIMARY KEY (hotkey, nonce))"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS seen_nonce ON seen (nonce)")
        self._db.execute("CREATE TABLE IF NOT EXISTS floor (id INTEGER PRIMARY KEY CHECK (id = 1), nonce INTEGER)")
        self._db.execute("INSERT OR IGNORE INTO floor (id, nonce) VALUES (1, -1)")

    def check_and_store(self, hotkey_ss58: str, nonce_ns: int) -> bool:
        cutoff = int((self._clock() - self.retention) * 1e9)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM seen WHERE nonce < ?", (cutoff,))
                (floor,) = db.execute("SELECT nonce FROM floor WHERE id = 1").fetchone()
                if nonce_ns <= floor:
                    db.execute("COMMIT")
                    return False
                inserted = db.execute(
                    "INSERT OR IGNORE INTO seen (hotkey, nonce) VALUES (?, ?)", (hotkey_ss58, nonce_ns)
                ).rowcount
                self._evict_over_cap(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return inserted == 1

    def _evict_over_cap(self, db: sqlite3.Connection) -> None:
        (count,) = db.execute("SELECT COUNT(*) FROM seen").fetchone()
        excess = count - self.max_entries
        if excess <= 0:
            return
        row = db.execute("SELECT nonce FROM seen ORDER BY nonce LIMIT 1 OFFSET ?", (excess - 1,)).fetchone()
        newest_evicted = int(row[0])
        db.execute("DELETE FROM seen WHERE nonce <= ?", (newest_evicted,))
        db.execute("UPDATE floor SET nonce = MAX(nonce, ?) WHERE id = 1", (newest_evicted,))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM seen").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
