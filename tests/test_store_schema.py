"""Migrations as an operator meets them: from empty, to a later version, from v1 files; all or nothing."""

from __future__ import annotations

import sqlite3

import pytest
from store_fixtures import BH, RULES, admitted, hk, open_store

from eval.schemas import SubmissionId
from validator.store.database import Store
from validator.store.schema import SCHEMA_VERSION, SchemaError


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


def test_database_migrates_to_a_later_version_and_a_failed_step_rolls_back(tmp_path, monkeypatch):
    """The upgrade path an operator takes: a file with data, opened by code with one more migration."""
    import validator.store.schema as schema

    path = tmp_path / "v.db"
    s = Store.open(path)
    admitted(s, ("alice", 5))
    s.close()
    current = schema.MIGRATIONS
    n = len(current)
    broken = "ALTER TABLE submissions ADD COLUMN note TEXT; INSERT INTO no_such_table VALUES (1)"
    monkeypatch.setattr(schema, "MIGRATIONS", (*current, broken))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", n + 1)
    with pytest.raises(SchemaError, match=f"v{n + 1}"):
        Store.open(path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == n  # nothing half-applied
    assert "note" not in [r[1] for r in raw.execute("PRAGMA table_info(submissions)")]
    raw.close()
    monkeypatch.setattr(schema, "MIGRATIONS", (*current, "ALTER TABLE submissions ADD COLUMN note TEXT"))
    s2 = Store.open(path)
    assert s2._db.execute("PRAGMA user_version").fetchone()[0] == n + 1
    assert [tuple(r) for r in s2._db.execute("SELECT note FROM submissions")] == [(None,)]
    assert [c.key for c in s2.candidates([hk("alice")])] == [SubmissionId(hk("alice"), 5)] and s2.integrity_ok()
    s2.close()


def test_a_migration_is_sql_not_text_split_on_semicolons(tmp_path, monkeypatch):
    """A trigger body and a string literal hold ';': SQLite's parser, not str.split, decides what a statement is."""
    import validator.store.schema as schema

    v2 = """
    CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL DEFAULT 'a; b');
    CREATE TRIGGER notes_stamp AFTER INSERT ON notes BEGIN
        UPDATE notes SET text = text || '; stamped' WHERE id = NEW.id;
    END;
    INSERT INTO notes(id) VALUES (1);
    """
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, v2))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(schema.MIGRATIONS))
    s = Store.open(tmp_path / "v.db")
    assert s._db.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
    assert s._db.execute("SELECT text FROM notes").fetchone()[0] == "a; b; stamped"
    s.close()


def test_a_failing_migration_script_leaves_nothing_behind(tmp_path, monkeypatch):
    import validator.store.schema as schema

    bad = "CREATE TABLE half (x TEXT DEFAULT ';'); CREATE INDEX half_x ON half(x); SELECT * FROM no_such_table;"
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, bad))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(schema.MIGRATIONS))
    with pytest.raises(SchemaError, match="no_such_table"):
        Store.open(tmp_path / "v.db")
    raw = sqlite3.connect(tmp_path / "v.db")
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS) - 1
    assert raw.execute("SELECT name FROM sqlite_master WHERE name LIKE 'half%'").fetchall() == []
    raw.close()


def test_v1_rounds_gain_an_empty_onpolicy_record(tmp_path, monkeypatch):
    """A store written before the on-policy guard keeps its rounds; their evaluations read back with no values."""
    import validator.store.schema as schema

    path = tmp_path / "v1.db"
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 1)
    old = Store.open(path, clock=lambda: 1000.0)
    a, b = admitted(old, ("alice", 5), ("bob", 6))
    rid = old._db.execute(  # as a v1 store wrote it: no slot column yet
        "INSERT INTO rounds(kind, block, block_hash, prompt_sha256s, rules, rules_digest, teacher_repo, models,"
        " job_id, state, started) VALUES ('first', 10, ?, '[]', ?, ?, ?, ?, 'job-1', 'planned', 1000.0)",
        (BH, RULES.to_json(), RULES.digest(), RULES.teacher_repo, f'[["{a.hotkey}", 5], ["{b.hotkey}", 6]]'),
    ).lastrowid
    old._db.execute(
        "INSERT INTO evaluations(round_id, hotkey, commit_block, status, state, prompt_kl, prompt_tokens)"
        " VALUES (?, ?, 5, 'ok', 'won', '[0.5]', '[7]')",
        (rid, a.hotkey),
    )
    old.close()
    monkeypatch.undo()
    new = Store.open(path)
    assert new._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 2
    (ev,) = new.round(rid).evaluations
    assert ev.onpolicy == [] and ev.prompt_kl == [0.5]
    new.close()


def test_v1_weights_and_old_rule_recommits_migrate(tmp_path):
    """v1 rows get a state; re-commits recorded as 'ignored' under the first-counts rule are dropped, to be re-read."""
    import validator.store.schema as schema

    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    raw.executescript(schema.MIGRATION_1 + "; PRAGMA user_version = 1;")
    raw.execute(
        "INSERT INTO submissions(hotkey, commit_block, raw_text, status, first_seen, updated)"
        " VALUES ('hk', 20, 'x', 'ignored', 0, 0)"
    )
    for ok in (1, 0):
        raw.execute(
            "INSERT INTO weight_submissions(block, uids, weights, success, confirmed, at)"
            " VALUES (?, '[1]', '[1.0]', ?, ?, 0)",
            (10 + ok, ok, ok or None),
        )
    raw.commit()
    raw.close()
    s = Store.open(path)
    rows = s._db.execute("SELECT block, state, reveal_block FROM weight_submissions ORDER BY block").fetchall()
    assert [tuple(r) for r in rows] == [(10, "failed", None), (11, "set", 11)]
    assert s.known_keys() == set() and s.pending_weights() is None
    s.close()
