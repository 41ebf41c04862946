"""The validator store's schema: ordered migrations applied under ``PRAGMA user_version``.

Append new migrations; never edit one that has shipped. Every table about a
submission is keyed by ``(hotkey, commit_block)``, never by uid (LESSONS 17).
Integrity SHAs and weight/content hashes live in separate tables (LESSONS 5).
"""

from __future__ import annotations

import sqlite3

SUBMISSION_STATUSES = ("pending", "admitted", "evaluated", "invalid", "removed", "disqualified", "ignored")
DQ_REASONS = ("COPY", "FUNCTIONAL_COPY", "REMOVED", "INVALID", "KL_TOO_HIGH")
ROUND_STATES = ("planned", "dispatched", "done", "failed")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ",".join(f"'{v}'" for v in values) + ")"


_SUB_FK = "FOREIGN KEY (hotkey, commit_block) REFERENCES submissions(hotkey, commit_block)"

MIGRATION_1 = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE submissions (
    hotkey TEXT NOT NULL,
    commit_block INTEGER NOT NULL CHECK (commit_block >= 0),
    uid_at_sight INTEGER,
    coldkey TEXT,
    repo TEXT,
    revision TEXT,
    raw_text TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN {_in(SUBMISSION_STATUSES)}),
    status_detail TEXT,
    last_kl REAL,
    strikes INTEGER NOT NULL DEFAULT 0,
    first_seen REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (hotkey, commit_block)
);
CREATE INDEX submissions_status ON submissions(status, commit_block);

CREATE TABLE admissions (
    hotkey TEXT NOT NULL, commit_block INTEGER NOT NULL,
    result TEXT NOT NULL CHECK (result IN ('admitted', 'rejected', 'transient')),
    params INTEGER, metadata_hash TEXT, check_name TEXT, detail TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, next_retry_block INTEGER, updated REAL NOT NULL,
    PRIMARY KEY (hotkey, commit_block), {_SUB_FK}
);

CREATE TABLE hashes (
    hotkey TEXT NOT NULL, commit_block INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('metadata', 'content')),
    value TEXT NOT NULL,
    PRIMARY KEY (hotkey, commit_block, kind), {_SUB_FK}
);
CREATE INDEX hashes_value ON hashes(kind, value);

CREATE TABLE integrity (
    hotkey TEXT NOT NULL, commit_block INTEGER NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY (hotkey, commit_block, path), {_SUB_FK}
);

CREATE TABLE rounds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('challenge', 'first', 'coronation')),
    block INTEGER NOT NULL, block_hash TEXT NOT NULL,
    prompt_sha256s TEXT NOT NULL, rules TEXT NOT NULL, rules_digest TEXT NOT NULL,
    teacher_repo TEXT NOT NULL, teacher_revision TEXT,
    models TEXT NOT NULL,
    king_hotkey TEXT, king_block INTEGER,
    pod TEXT, job_id TEXT UNIQUE,
    state TEXT NOT NULL CHECK (state IN {_in(ROUND_STATES)}),
    started REAL NOT NULL, finished REAL,
    decision TEXT, p_value REAL, new_king_hotkey TEXT, new_king_block INTEGER, error TEXT
);
CREATE INDEX rounds_state ON rounds(state);

CREATE TABLE fingerprints (
    hotkey TEXT NOT NULL, commit_block INTEGER NOT NULL, vector TEXT NOT NULL,
    round_id INTEGER REFERENCES rounds(id),
    PRIMARY KEY (hotkey, commit_block), {_SUB_FK}
);

CREATE TABLE evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    hotkey TEXT NOT NULL, commit_block INTEGER NOT NULL,
    status TEXT NOT NULL, state TEXT NOT NULL,
    prompt_kl TEXT NOT NULL, prompt_tokens TEXT NOT NULL,
    mean_kl REAL, ci_lo REAL, ci_hi REAL, p_value REAL,
    reason TEXT, error TEXT, suspicious INTEGER NOT NULL DEFAULT 0,
    UNIQUE (round_id, hotkey, commit_block), {_SUB_FK}
);
CREATE INDEX evaluations_sub ON evaluations(hotkey, commit_block);

CREATE TABLE disqualifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hotkey TEXT NOT NULL, commit_block INTEGER NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN {_in(DQ_REASONS)}),
    check_name TEXT NOT NULL, detail TEXT NOT NULL, evidence TEXT NOT NULL,
    block INTEGER NOT NULL, round_id INTEGER REFERENCES rounds(id), at REAL NOT NULL,
    UNIQUE (hotkey, commit_block, reason), {_SUB_FK}
);

CREATE TABLE king (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    hotkey TEXT NOT NULL, commit_block INTEGER NOT NULL,
    since_block INTEGER NOT NULL, round_id INTEGER REFERENCES rounds(id), kl REAL,
    {_SUB_FK}
);

CREATE TABLE king_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hotkey TEXT, commit_block INTEGER,
    from_block INTEGER NOT NULL, round_id INTEGER REFERENCES rounds(id), kl REAL, reason TEXT, at REAL NOT NULL
);

CREATE TABLE weight_submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    block INTEGER NOT NULL, uids TEXT NOT NULL, weights TEXT NOT NULL,
    success INTEGER NOT NULL, message TEXT, confirmed INTEGER, at REAL NOT NULL
);

CREATE TABLE metagraph (block INTEGER PRIMARY KEY, neurons TEXT NOT NULL, at REAL NOT NULL);

CREATE TABLE progress (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL, updated REAL NOT NULL);
"""

WEIGHT_STATES = ("failed", "set", "committed", "revealed", "unconfirmed", "superseded")
"""A weight submission's life: ``failed`` (refused or never sent); ``set`` (applied directly) and
``committed`` (a timelocked commit) wait for ``confirmed``; a commit that shows on chain becomes
``revealed``; one that never shows by its deadline ``unconfirmed``; one replaced by a newer commit
before it showed ``superseded``."""

MIGRATION_2 = """
ALTER TABLE weight_submissions ADD COLUMN state TEXT;
ALTER TABLE weight_submissions ADD COLUMN reveal_block INTEGER;
UPDATE weight_submissions SET state = CASE WHEN success = 0 THEN 'failed' ELSE 'set' END,
    reveal_block = CASE WHEN success = 0 THEN NULL ELSE block END;
DELETE FROM submissions WHERE status = 'ignored' AND repo IS NULL;
"""
"""Weights state (commit-reveal: committed, then revealed). The DELETE drops re-commits recorded
under the old "first commitment counts" rule, never parsed and owning nothing; under the current
rule (docs/decisions.md) the next sync records them again as the hotkey's live submission."""

# The on-policy guard's audit record: per guarded prompt, the model's own continuation (text, token
# count) and what the teacher made of it (JSON list of eval.schemas.OnPolicyPrompt).
MIGRATION_3 = """
ALTER TABLE evaluations ADD COLUMN onpolicy TEXT NOT NULL DEFAULT '[]';
"""

SLOT_STATES = ("open", "empty", "judged")
"""A slot's record: ``open`` (started or anchored, its round not done yet), ``empty`` (no challenger:
nothing ran), ``judged`` (its round is recorded)."""

# The shared schedule (validator/schedule.py): each submission's slot, each round's slot, and one
# record per slot this validator processed: its seed, its round, the king after it, and what the
# chain's consensus said about that king (``anchor``: 'consensus' when the king was adopted from
# the chain's weights here, 'none' when no consensus king existed and the slot crowned by coronation).
MIGRATION_4 = f"""
ALTER TABLE submissions ADD COLUMN slot INTEGER;
ALTER TABLE rounds ADD COLUMN slot INTEGER;
CREATE INDEX submissions_slot ON submissions(slot);
CREATE TABLE slots (
    slot INTEGER PRIMARY KEY CHECK (slot >= 0),
    start_block INTEGER NOT NULL,
    block_hash TEXT,
    state TEXT NOT NULL CHECK (state IN {_in(SLOT_STATES)}),
    round_id INTEGER REFERENCES rounds(id),
    king_hotkey TEXT, king_block INTEGER,
    anchor TEXT CHECK (anchor IN ('consensus', 'none')), anchor_block INTEGER,
    consensus_hotkey TEXT, consensus_block INTEGER, agree INTEGER, streak INTEGER, vtrust REAL,
    observed_block INTEGER,
    updated REAL NOT NULL
);
"""

MIGRATIONS: tuple[str, ...] = (MIGRATION_1, MIGRATION_2, MIGRATION_3, MIGRATION_4)
"""MIGRATIONS[i] takes the schema from user_version i to i + 1."""

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(RuntimeError):
    """The database is newer than this code, or a migration failed."""


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations, each in its own transaction; returns the final version.

    Each migration runs as one script through SQLite's own parser (``executescript``),
    wrapped in ``BEGIN IMMEDIATE`` ... ``COMMIT`` together with its ``user_version``
    bump: a ``;`` inside a string literal or a trigger body is SQL, not a statement
    break, and a migration that fails half-way leaves nothing behind.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaError(f"database schema v{version} is newer than this code (v{SCHEMA_VERSION})")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        try:
            script = MIGRATIONS[target - 1]
            conn.executescript(f"BEGIN IMMEDIATE;\n{script}\n;\nPRAGMA user_version = {target};\nCOMMIT;")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise SchemaError(f"migration to v{target} failed: {exc}") from exc
    return SCHEMA_VERSION
