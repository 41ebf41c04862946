"""The store's connection: open (writer or read-only), the transaction, and the guards on written values.

Why SQLite + WAL: one writer and many readers (the API) without a server, and a
crash never leaves half a round behind - each round is recorded in one
``BEGIN IMMEDIATE`` transaction. Floats are checked at write (NaN/inf refused,
LESSONS 26) and JSON columns hold only plain lists/dicts written through ``dumps``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from eval.errors import KlhillError
from eval.schemas import SubmissionId
from validator.store.schema import migrate

DEFAULT_PATH = Path("state/validator.db")
BUSY_TIMEOUT_MS = 10_000


class StoreError(KlhillError):
    """A write was refused (bad value, wrong round state) or the store is unusable."""


def real(x: float | None, what: str) -> float | None:
    """Guard for REAL columns: None passes, NaN/inf never reach the store (LESSONS 26)."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        raise StoreError(f"{what} is not finite: {x!r}")
    return x


def key_cols(key: SubmissionId) -> tuple[str, int]:
    """A submission id as the two key columns every table keys by."""
    return (key.hotkey, key.commit_block)


def dumps(value: Any) -> str:
    """Compact JSON for JSON columns; NaN/inf are refused."""
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except ValueError as exc:
        raise StoreError(f"value not storable as JSON: {exc}") from exc


class Connection:
    """One SQLite connection and its transaction; the writer and reader mixins build on it."""

    def __init__(self, conn: sqlite3.Connection, readonly: bool, clock: Callable[[], float] = time.time):
        self._db = conn
        self.readonly = readonly
        self._clock = clock
        self._depth = 0

    @classmethod
    def open(cls, path: str | Path = DEFAULT_PATH, *, clock: Callable[[], float] = time.time) -> Self:
        """Open for writing: create the file, switch to WAL, apply migrations."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise StoreError(f"{path}: cannot switch to WAL mode")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
        return cls(conn, readonly=False, clock=clock)

    @classmethod
    def open_readonly(cls, path: str | Path = DEFAULT_PATH) -> Self:
        """Open read-only (``mode=ro``): every write through this connection fails."""
        path = Path(path).resolve()
        if not path.exists():
            raise StoreError(f"{path}: no such store")
        conn = sqlite3.connect(
            f"{path.as_uri()}?mode=ro",
            uri=True,
            isolation_level=None,
            timeout=BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only = ON")
        return cls(conn, readonly=True)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; any exception rolls everything back. Nests (outermost wins)."""
        if self.readonly:
            raise StoreError("store opened read-only")
        if self._depth:
            self._depth += 1
            try:
                yield self._db
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0
