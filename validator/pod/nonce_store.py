"""A btauth/1 seen-nonce store that survives a pod restart (SQLite in the pod's workdir).

``bittensor.http_auth.verify`` takes any object with ``check_and_store(hotkey, nonce_ns) -> bool``
and an optional ``retention``. The SDK default keeps nonces in memory, so a request captured in the
last freshness window could be replayed once after a restart (a replayed DELETE cancels a job).
Here each accepted (hotkey, nonce) pair is committed to disk before the request is acted on.

Size is bounded two ways: entries expire ``retention`` seconds after their nonce's own timestamp
(wall clock, so expiry survives restarts; anything older is already stale to ``verify``), and past
``max_entries`` the oldest nonces are evicted while a *floor* (the newest evicted nonce) is kept:
any nonce at or below the floor is refused, so eviction never reopens a replay.

Creation floor. btauth/1 nonces are the signer's ``time.time_ns()``, so a store that starts without
history can still refuse everything signed before it existed: the floor of a new store is its
creation time. For a brand-new workdir (no file) that costs nothing - no request was ever accepted
there, and a client whose clock lags is refused only for the lag's length after first start - and it
keeps one rule for every fresh store. When the file exists but its state is lost (unreadable,
corrupt, truncated to nothing, a directory in its place), the floor is creation time *plus*
``future_skew``: ``verify`` accepts nonces up to ``allowed_skew`` seconds ahead of the pod's clock,
so the lost history may hold nonces that are still "in the future" at restart. The cost is that the
first ``future_skew`` seconds after such a reset refuse every request (clients retry with a fresh
nonce); the gain is that no request signed before the reset is ever accepted again.

Recovery instead of a crash loop. A file SQLite cannot open or use (or that fails ``quick_check``)
is renamed aside with its ``-wal``/``-shm`` files to ``<name>.corrupt-<UTC stamp>`` (nothing is
deleted, so it can be inspected), a warning names it, and a fresh store starts with the floor above.
Errors that are not about the file - another process holding the lock, a full disk, no memory - and
a workdir where the file can be neither created nor renamed raise :class:`NonceStoreError` with the
path and cause: the pod must not serve without replay protection, so those stop it loudly.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from eval.errors import InfraError

log = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES = 100_000
# SQLite error names that say nothing about the file's contents: renaming it aside would not help
_NOT_THE_FILE = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_NOMEM", "SQLITE_INTERRUPT"})


class NonceStoreError(InfraError):
    """The seen-nonce store can neither be used nor replaced; the pod must not serve without it."""


def creation_floor_ns(now_s: float, state_lost: bool, future_skew_s: float) -> int:
    """The floor of a fresh store: refuse every nonce signed before it (and, after a loss, up to the skew ahead).

    Floors are inclusive, so this is one below the first accepted nonce: a nonce equal to the creation time is new.
    """
    return int((now_s + (future_skew_s if state_lost else 0.0)) * 1e9) - 1


def resettable(exc: sqlite3.Error) -> bool:
    """True when the error is about the file itself (garbage, truncation, not openable), not a busy/full system."""
    return getattr(exc, "sqlite_errorname", None) not in _NOT_THE_FILE


class SqliteNonceStore:
    """Durable ``http_auth.NonceStore``: ``check_and_store`` is True once per (hotkey, nonce), ever."""

    def __init__(
        self,
        path: Path,
        retention: float = 60.0,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
        future_skew: float = 0.0,
        busy_timeout: float = 5.0,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if future_skew < 0:
            raise ValueError("future_skew must be >= 0")
        self.retention = retention  # read by http_auth.verify to check it covers the freshness window
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self.moved_aside: Path | None = None  # where an unusable file went, for logs and tests
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NonceStoreError(f"nonce store {path}: cannot create its directory: {exc}") from exc
        existed = path.exists() or path.is_symlink()
        try:
            self._db = _open(path, busy_timeout)
        except sqlite3.Error as exc:
            if not existed or not resettable(exc):
                raise NonceStoreError(f"nonce store {path} cannot be opened: {_describe(exc)}") from exc
            self.moved_aside = _move_aside(path, self._clock())
            log.warning(
                "nonce store %s was unusable (%s); moved it to %s and started a fresh store that refuses every "
                "request signed before now + %gs",
                path,
                _describe(exc),
                self.moved_aside,
                future_skew,
            )
            try:
                self._db = _open(path, busy_timeout)
            except sqlite3.Error as again:
                raise NonceStoreError(f"fresh nonce store {path} cannot be opened: {_describe(again)}") from again
        state_lost = existed  # a file was there but held no floor row, or was moved aside just now
        floor = creation_floor_ns(self._clock(), state_lost, future_skew)
        created = self._db.execute("INSERT OR IGNORE INTO floor (id, nonce) VALUES (1, ?)", (floor,)).rowcount == 1
        if created and existed and self.moved_aside is None:
            log.warning(
                "nonce store %s held no nonce state; refusing every request signed before now + %gs", path, future_skew
            )

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

    def floor_ns(self) -> int:
        """Every nonce at or below this is refused (creation floor, raised by evictions)."""
        with self._lock:
            return int(self._db.execute("SELECT nonce FROM floor WHERE id = 1").fetchone()[0])

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM seen").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _open(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """Open, create the schema and prove the file is whole and writable, or raise ``sqlite3.Error``."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=busy_timeout)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        (check,) = db.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
        db.execute(
            "CREATE TABLE IF NOT EXISTS seen"
            " (hotkey TEXT NOT NULL, nonce INTEGER NOT NULL, PRIMARY KEY (hotkey, nonce))"
        )
        db.execute("CREATE INDEX IF NOT EXISTS seen_nonce ON seen (nonce)")
        db.execute("CREATE TABLE IF NOT EXISTS floor (id INTEGER PRIMARY KEY CHECK (id = 1), nonce INTEGER)")
        db.execute("BEGIN IMMEDIATE")  # a read-only file or a foreign schema fails here, not on the first request
        try:
            db.execute("SELECT hotkey, nonce FROM seen LIMIT 1").fetchall()
            db.execute("SELECT nonce FROM floor WHERE id = 1").fetchall()
        finally:
            db.execute("ROLLBACK")
    except BaseException:
        db.close()
        raise
    return db


def _move_aside(path: Path, now_s: float) -> Path:
    """Rename the file (and its -wal/-shm) to a free ``.corrupt-<stamp>`` name; nothing is deleted."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_s))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists() or target.is_symlink():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        path.rename(target)  # first: if this fails nothing has moved
        for suffix in ("-wal", "-shm"):  # a stale WAL next to the fresh file would be replayed into it
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(target.with_name(target.name + suffix))
    except OSError as exc:
        raise NonceStoreError(f"nonce store {path} is unusable and cannot be moved aside: {exc}") from exc
    return target


def _describe(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{name}: {exc}" if name else str(exc)
