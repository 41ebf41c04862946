"""The validator's state: one SQLite file in WAL mode, written by the loop, read by the API.

Why SQLite + WAL: one writer and many readers (the API) without a server, and a
crash never leaves half a round behind - each round is recorded in one
``BEGIN IMMEDIATE`` transaction. Floats are checked at write (NaN/inf refused,
LESSONS 26) and JSON columns hold only plain lists/dicts written here.
Read queries for the API live in ``validator.store.reads`` (inherited).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eval.errors import KlhillError
from eval.rules import ContestRules
from eval.schemas import EvalResult, SubmissionId
from validator.contest import NewSubmission
from validator.store.reads import StoreReads
from validator.store.schema import WEIGHT_STATES, migrate
from validator.verdicts import Evaluation, RoundOutcome

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


def _cols(key: SubmissionId) -> tuple[str, int]:
    """A submission id as the two key columns every table keys by."""
    return (key.hotkey, key.commit_block)


def dumps(value: Any) -> str:
    """Compact JSON for JSON columns; NaN/inf are refused."""
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except ValueError as exc:
        raise StoreError(f"value not storable as JSON: {exc}") from exc


class Store(StoreReads):
    """One connection to the store. Use ``Store.open`` (writer) or ``Store.open_readonly`` (API)."""

    def __init__(self, conn: sqlite3.Connection, readonly: bool, clock: Callable[[], float] = time.time):
        self._db = conn
        self.readonly = readonly
        self._clock = clock
        self._depth = 0

    @classmethod
    def open(cls, path: str | Path = DEFAULT_PATH, *, clock: Callable[[], float] = time.time) -> Store:
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
    def open_readonly(cls, path: str | Path = DEFAULT_PATH) -> Store:
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

    # --- meta --------------------------------------------------------------
    def set_meta(self, **values: str | int | float) -> None:
        with self.transaction() as db:
            for k, v in values.items():
                db.execute(
                    "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (k, dumps(v)),
                )

    # --- submissions and admission -------------------------------------------
    def add_submissions(self, subs: Sequence[NewSubmission]) -> int:
        """Record new submissions (from ``contest.new_submissions``); known keys are left untouched."""
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
                if s.status == "invalid":
                    self.add_disqualification(s.key, "INVALID", "commitment", s.reason or "", {}, s.commit_block)
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
                    (f"withdrawn: replaced by the commitment at block {new_block}", self._clock(), *_cols(key)),
                )
                n += cur.rowcount
            return n

    def set_status(self, key: SubmissionId, status: str, detail: str | None = None) -> None:
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE submissions SET status = ?, status_detail = ?, updated = ?"
                " WHERE hotkey = ? AND commit_block = ?",
                (status, detail, self._clock(), *_cols(key)),
            )
            if cur.rowcount != 1:
                raise StoreError(f"no submission {key}")

    def set_strikes(self, key: SubmissionId, strikes: int) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE submissions SET strikes = ? WHERE hotkey = ? AND commit_block = ?", (strikes, *_cols(key))
            )

    def record_admission(
        self,
        key: SubmissionId,
        result: str,
        *,
        params: int | None = None,
        metadata_hash: str | None = None,
        check: str | None = None,
        detail: str | None = None,
        next_retry_block: int | None = None,
    ) -> None:
        """Record an admission attempt: 'admitted' / 'rejected' are final, 'transient' retries later."""
        status = {"admitted": "admitted", "rejected": "invalid", "transient": "pending"}[result]
        with self.transaction() as db:
            db.execute(
                "INSERT INTO admissions(hotkey, commit_block, result, params, metadata_hash, check_name, detail,"
                " attempts, next_retry_block, updated) VALUES (?,?,?,?,?,?,?,1,?,?) ON CONFLICT(hotkey, commit_block)"
                " DO UPDATE SET result=excluded.result, params=excluded.params, metadata_hash=excluded.metadata_hash,"
                " check_name=excluded.check_name, detail=excluded.detail, attempts=attempts+1,"
                " next_retry_block=excluded.next_retry_block, updated=excluded.updated",
                (*_cols(key), result, params, metadata_hash, check, detail, next_retry_block, self._clock()),
            )
            if metadata_hash:
                self.add_hash(key, "metadata", metadata_hash)
            self.set_status(key, status, detail if result != "admitted" else None)

    def add_hash(self, key: SubmissionId, kind: str, value: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO hashes(hotkey, commit_block, kind, value) VALUES (?,?,?,?)",
                (*_cols(key), kind, value),
            )

    def add_integrity(self, key: SubmissionId, files: dict[str, str]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO integrity(hotkey, commit_block, path, sha256) VALUES (?,?,?,?)",
                [(*_cols(key), p, h) for p, h in sorted(files.items())],
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
                (*_cols(key), reason, check, detail, dumps(evidence), block, round_id, self._clock()),
            )

    # --- rounds --------------------------------------------------------------
    def create_round(
        self,
        kind: str,
        block: int,
        block_hash: str,
        prompt_sha256s: Sequence[str],
        rules: ContestRules,
        models: Sequence[SubmissionId],
        king: SubmissionId | None = None,
        *,
        teacher_revision: str | None = None,
        pod: str | None = None,
        job_id: str | None = None,
    ) -> int:
        """Record a planned round (state 'planned') with everything needed to audit it."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO rounds(kind, block, block_hash, prompt_sha256s, rules, rules_digest, teacher_repo,"
                " teacher_revision, models, king_hotkey, king_block, pod, job_id, state, started)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'planned',?)",
                (
                    kind,
                    block,
                    block_hash,
                    dumps(list(prompt_sha256s)),
                    rules.to_json(),
                    rules.digest(),
                    rules.teacher_repo,
                    teacher_revision or rules.teacher_revision,
                    dumps([list(_cols(k)) for k in models]),
                    king.hotkey if king else None,
                    king.commit_block if king else None,
                    pod,
                    job_id,
                    self._clock(),
                ),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def mark_dispatched(self, round_id: int, pod: str, job_id: str) -> None:
        self._round_transition(round_id, ("planned", "dispatched"), "dispatched", pod=pod, job_id=job_id)

    def fail_round(self, round_id: int, error: str) -> None:
        """A round that cannot complete (pod down, garbage result): nobody is judged by it."""
        self._round_transition(
            round_id, ("planned", "dispatched"), "failed", error=error[:2000], finished=self._clock()
        )

    def _round_transition(self, round_id: int, allowed: tuple[str, ...], state: str, **cols: Any) -> None:
        with self.transaction() as db:
            row = db.execute("SELECT state FROM rounds WHERE id = ?", (round_id,)).fetchone()
            if row is None or row["state"] not in allowed:
                raise StoreError(f"round {round_id} is {row['state'] if row else 'missing'}, expected {allowed}")
            sets = ", ".join(f"{c} = ?" for c in ["state", *cols])
            db.execute(f"UPDATE rounds SET {sets} WHERE id = ?", (state, *cols.values(), round_id))

    def record_round_result(self, round_id: int, outcome: RoundOutcome, result: EvalResult, block: int) -> None:
        """Record a finished round in one transaction: evaluations, hashes, fingerprints, DQs,
        submission states, king change and the round's decision. A round is recorded once.

        Everything written is decided by ``validator.verdicts`` (states, statuses, KL intervals);
        ``result`` supplies only the teacher revision the pod actually scored with.
        """
        with self.transaction() as db:
            self._round_transition(
                round_id,
                ("planned", "dispatched"),
                "done",
                finished=self._clock(),
                decision=outcome.reason,
                p_value=real(outcome.p_value, "p_value"),
                new_king_hotkey=outcome.new_king.hotkey if outcome.new_king else None,
                new_king_block=outcome.new_king.commit_block if outcome.new_king else None,
            )
            # an unpinned teacher: the audit record keeps the revision the pod actually scored with
            db.execute(
                "UPDATE rounds SET teacher_revision = ? WHERE id = ? AND teacher_revision IS NULL",
                (result.teacher.revision, round_id),
            )
            for e in outcome.evaluations:
                self._record_evaluation(db, round_id, e)
            for dq in outcome.dqs:
                self.add_disqualification(dq.key, dq.reason, dq.check, dq.detail, dq.evidence, block, round_id)
            if outcome.king_changed or outcome.new_king != self._king_key():
                self.set_king(outcome.new_king, block, round_id, outcome.new_king_kl, outcome.reason)

    def _record_evaluation(self, db: sqlite3.Connection, round_id: int, e: Evaluation) -> None:
        v, m = e.verdict, e.result
        db.execute(
            "INSERT INTO evaluations(round_id, hotkey, commit_block, status, state, prompt_kl, prompt_tokens,"
            " mean_kl, ci_lo, ci_hi, p_value, reason, error, suspicious, onpolicy)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                round_id,
                *_cols(v.key),
                m.status,
                v.state,
                dumps([real(x, "kl") for x in m.prompt_kl]),
                dumps([int(t) for t in m.prompt_tokens]),
                real(e.mean_kl, "mean_kl"),
                real(e.ci_lo, "ci_lo"),
                real(e.ci_hi, "ci_hi"),
                real(v.p_value, "p_value"),
                v.reason,
                m.error,
                int(v.suspicious),
                dumps([o.model_dump(mode="json") for o in m.onpolicy]),
            ),
        )
        if m.content_hash:
            self.add_hash(v.key, "content", m.content_hash)
        if m.fingerprint:
            db.execute(
                "INSERT OR REPLACE INTO fingerprints(hotkey, commit_block, vector, round_id) VALUES (?,?,?,?)",
                (*_cols(v.key), dumps([real(x, "fingerprint") for x in m.fingerprint]), round_id),
            )
        db.execute(
            "UPDATE submissions SET status = ?, status_detail = ?, last_kl = ?, updated = ?"
            " WHERE hotkey = ? AND commit_block = ?",
            (v.submission_status, v.status_detail, real(v.last_kl, "last_kl"), self._clock(), *_cols(v.key)),
        )

    # --- king, weights, metagraph, progress ---------------------------------------
    def _king_key(self) -> SubmissionId | None:
        row = self._db.execute("SELECT hotkey, commit_block FROM king WHERE id = 1").fetchone()
        return SubmissionId(row["hotkey"], row["commit_block"]) if row else None

    def set_king(
        self, key: SubmissionId | None, block: int, round_id: int | None, kl: float | None, reason: str
    ) -> None:
        """Crown ``key`` (or clear the throne with None) and append to the king's history."""
        with self.transaction() as db:
            db.execute("DELETE FROM king WHERE id = 1")
            if key is not None:
                db.execute(
                    "INSERT INTO king(id, hotkey, commit_block, since_block, round_id, kl) VALUES (1,?,?,?,?,?)",
                    (*_cols(key), block, round_id, real(kl, "king kl")),
                )
            db.execute(
                "INSERT INTO king_history(hotkey, commit_block, from_block, round_id, kl, reason, at)"
                " VALUES (?,?,?,?,?,?,?)",
                (
                    key.hotkey if key else None,
                    key.commit_block if key else None,
                    block,
                    round_id,
                    real(kl, "king kl"),
                    reason,
                    self._clock(),
                ),
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
