"""The SQLite store: migrations, WAL, read-only access, atomic rounds, identity by (hotkey, commit_block)."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from eval.rules import ContestRules
from eval.schemas import EvalResult, ModelRef, ModelResult, OnPolicyPrompt, SubmissionId, TeacherInfo
from scripts.pod_fixtures import trim_onpolicy
from validator.contest import Candidate, NewSubmission, RoundPlan
from validator.store.database import Store, StoreError
from validator.store.schema import SCHEMA_VERSION, SchemaError
from validator.verdicts import interpret_result

REV = "d" * 40
BH = "0x" + "2" * 64
RULES = ContestRules(prompts_per_round=4, early_stop_min_prompts=2)


def hk(name: str) -> str:
    return (name.replace("l", "L") + "5" * 48)[:48]


def sub(name: str, block: int, uid: int = 0, status: str = "pending") -> NewSubmission:
    return NewSubmission(
        hk(name),
        block,
        uid,
        f"ck-{name}",
        '{"model":"org/' + name + '"}',
        status,  # type: ignore[arg-type]
        f"org/{name}",
        REV,
    )


def cand(name: str, block: int, status: str = "admitted") -> Candidate:
    return Candidate(hk(name), block, f"org/{name}", REV, f"ck-{name}", status)


def mres(c: Candidate, kls: list[float], content_hash: str | None = None) -> ModelResult:
    sid = SubmissionId(hotkey=c.hotkey, commit_block=c.commit_block)
    ref = ModelRef(repo=c.repo, revision=c.revision, submission=sid)
    own = [
        OnPolicyPrompt(tokens=5, teacher_nll=0.5 + kls[0], reverse_kl=0.2, repetition=0.0, text=f"own text {i} \u2026")
        for i in range(RULES.guarded_prompts(len(kls)))
    ]
    return ModelResult(
        ref=ref,
        status="ok",
        prompt_kl=kls,
        prompt_tokens=[7] * len(kls),
        content_hash=content_hash,
        fingerprint=[kls[0], 0.25],
        onpolicy=own,
    )


def eres(*models: ModelResult, king: Candidate | None = None) -> EvalResult:
    """A result as a pod returns it: the guard's values only for the king and its KL winners."""
    teacher = TeacherInfo(repo="org/teacher", continuation_tokens=[7] * 4)
    kept = trim_onpolicy(list(models), f"{king.hotkey}:{king.commit_block}" if king is not None else None, RULES, 4)
    return EvalResult(job_id="job-1", block_hash=BH, teacher=teacher, models=kept)


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "state" / "validator.db", clock=lambda: 1000.0)
    yield s
    s.close()


def admitted(store: Store, *names_blocks: tuple[str, int]) -> list[Candidate]:
    store.add_submissions([sub(n, b, uid=i) for i, (n, b) in enumerate(names_blocks)])
    for n, b in names_blocks:
        store.record_admission(SubmissionId(hk(n), b), "admitted", params=1000, metadata_hash=f"m-{n}")
    return [cand(n, b) for n, b in names_blocks]


def first_round(store: Store) -> tuple[int, list[Candidate]]:
    a, b = admitted(store, ("alice", 5), ("bob", 6))
    plan = RoundPlan("first", None, (a, b))
    rid = store.create_round("first", 10, BH, ["e" * 64] * 4, RULES, [a.key, b.key], job_id="job-1")
    result = eres(mres(a, [0.5, 0.6, 0.5, 0.4], "a" * 64), mres(b, [0.9, 0.8, 0.9, 1.0]))
    out = interpret_result(plan, result, RULES)
    store.record_round_result(rid, out, result, 12)
    return rid, [a, b]


def test_a_challenge_round_keeps_the_guards_audit_record(store):
    """Per guarded prompt, the king's and a KL winner's own text and the teacher's view of it."""
    _, (a, b) = first_round(store)
    (c,) = admitted(store, ("carl", 7))
    king = Candidate(a.hotkey, a.commit_block, a.repo, a.revision, a.coldkey, "evaluated")
    rid = store.create_round("challenge", 20, BH, ["e" * 64] * 4, RULES, [a.key, c.key], job_id="job-2")
    result = eres(mres(a, [0.5, 0.6, 0.5, 0.4]), mres(c, [0.1, 0.12, 0.11, 0.1]), king=king)
    store.record_round_result(rid, interpret_result(RoundPlan("challenge", king, (c,)), result, RULES), result, 21)
    ev = {e.hotkey: e for e in store.round(rid).evaluations}
    assert [o["text"] for o in ev[a.hotkey].onpolicy] == [f"own text {i} \u2026" for i in range(4)]
    assert ev[c.hotkey].onpolicy[0] == {
        "tokens": 5,
        "teacher_nll": 0.6,
        "reverse_kl": 0.2,
        "repetition": 0.0,
        "text": "own text 0 \u2026",
    }


def test_migrates_from_empty_wal_and_idempotent_reopen(tmp_path):
    path = tmp_path / "v.db"
    s = Store.open(path)
    assert s._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    s.set_meta(netuid=7, network="sim")
    s.close()
    s2 = Store.open(path)  # reopen: no migration re-run, data kept
    assert s2.meta() == {"netuid": 7, "network": "sim"} and s2.integrity_ok()
    s2._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    s2.close()
    with pytest.raises(SchemaError, match="newer"):
        Store.open(path)


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
    rid = old.create_round("first", 10, BH, ["e" * 64] * 4, RULES, [a.key, b.key], job_id="job-1")
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


def test_readonly_connection_refuses_writes(store, tmp_path):
    admitted(store, ("alice", 5))
    ro = Store.open_readonly(tmp_path / "state" / "validator.db")
    assert [c.hotkey for c in ro.commitments()] == [hk("alice")]
    with pytest.raises(sqlite3.OperationalError):
        ro._db.execute("DELETE FROM submissions")
    with pytest.raises(StoreError, match="read-only"):
        ro.set_progress({"phase": "x"})
    assert len(store.commitments()) == 1
    with pytest.raises(StoreError):
        Store.open_readonly(tmp_path / "missing.db")


def test_full_round_recorded_and_readable(store):
    rid, (a, b) = first_round(store)
    king = store.current_king()
    assert (king.hotkey, king.commit_block, king.repo) == (a.hotkey, 5, "org/alice")
    rnd = store.round(rid)
    assert rnd.state == "done" and rnd.block_hash == BH and rnd.rules["version"] == RULES.version
    assert rnd.rules_digest == RULES.digest() and rnd.models == [a.key, b.key]
    ev = {e.hotkey: e for e in rnd.evaluations}
    assert ev[a.hotkey].state == "won" and ev[a.hotkey].prompt_kl == [0.5, 0.6, 0.5, 0.4]
    assert ev[a.hotkey].ci_lo <= ev[a.hotkey].mean_kl <= ev[a.hotkey].ci_hi
    assert ev[a.hotkey].onpolicy == [] == ev[b.hotkey].onpolicy  # a first round has no king: no guard
    scores = store.scores()
    assert [e.hotkey for e in scores.evaluations] == [a.hotkey, b.hotkey]
    assert scores.evaluations[0].n_prompts == 4 and scores.last_round.id == rid
    assert {c.key: c.status for c in store.candidates([a.hotkey, b.hotkey])} == {a.key: "evaluated", b.key: "evaluated"}
    assert store.known_content_hashes() == [(a.key, "a" * 64)]
    assert sorted(store.known_fingerprints())[0][1] == [0.5, 0.25]
    assert [h.hotkey for h in store.king_history()] == [a.hotkey]
    assert store.rounds(page=1, per_page=500).per_page == 100
    assert store.submission(a.hotkey)[0].admission.params == 1000
    assert store.integrity_ok()


def test_round_is_recorded_once_and_evaluations_are_unique(store):
    """No evaluation is counted twice: the round state machine and UNIQUE(round, hotkey, block)."""
    rid, (a, b) = first_round(store)
    out = interpret_result(RoundPlan("first", None, (a, b)), eres(mres(a, [0.5] * 4), mres(b, [0.9] * 4)), RULES)
    with pytest.raises(StoreError, match="done"):
        store.record_round_result(rid, out, eres(mres(a, [0.5] * 4), mres(b, [0.9] * 4)), 13)
    with pytest.raises(sqlite3.IntegrityError):
        store._db.execute(
            "INSERT INTO evaluations(round_id, hotkey, commit_block, status, state, prompt_kl,"
            " prompt_tokens) VALUES (?,?,?,'ok','lost','[]','[]')",
            (rid, a.hotkey, a.commit_block),
        )
    assert len(store.round(rid).evaluations) == 2


def test_crash_mid_round_records_nothing_and_round_is_interrupted(store, monkeypatch):
    a, b = admitted(store, ("alice", 5), ("bob", 6))
    rid = store.create_round("first", 10, BH, ["e" * 64] * 4, RULES, [a.key, b.key])
    store.mark_dispatched(rid, "http://pod", "job-1")
    result = eres(mres(a, [0.5] * 4), mres(b, [3.0] * 4))
    out = interpret_result(RoundPlan("first", None, (a, b)), result, RULES)
    assert out.dqs  # bob is KL_TOO_HIGH: the DQ write is the last step before the king

    def boom(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(store, "set_king", boom)
    with pytest.raises(RuntimeError):
        store.record_round_result(rid, out, result, 12)
    assert store.round(rid).evaluations == [] and store.disqualifications() == []
    assert store.current_king() is None and store.known_content_hashes() == []
    assert [r.id for r in store.interrupted_rounds()] == [rid]
    assert {c.status for c in store.candidates([a.hotkey, b.hotkey])} == {"admitted"}
    monkeypatch.undo()
    store.record_round_result(rid, out, result, 12)  # the re-run records it exactly once
    assert store.interrupted_rounds() == [] and len(store.disqualifications()) == 1


def test_recycled_uid_new_hotkey_inherits_nothing(store):
    """LESSONS 17: old hotkey on uid 3 is disqualified; a new hotkey on uid 3 starts clean."""
    store.add_submissions([sub("old", 5, uid=3)])
    store.add_disqualification(SubmissionId(hk("old"), 5), "COPY", "content_hash", "copy", {"copy_of": "x"}, 9)
    store.add_submissions([sub("new", 50, uid=3)])
    new = store.submission(hk("new"))[0]
    assert new.status == "pending" and new.disqualifications == [] and new.evaluations == []
    assert new.last_kl is None


def test_invalid_commitment_is_recorded_with_dq(store):
    store.add_submissions([NewSubmission(hk("x"), 4, 1, "ck", "garbage", "invalid", reason="not JSON")])
    (dq,) = store.disqualifications()
    assert (dq.reason, dq.check, dq.detail) == ("INVALID", "commitment", "not JSON")


def test_nan_and_inf_refused(store):
    """LESSONS 26: a non-finite number never reaches the store."""
    (a,) = admitted(store, ("alice", 5))
    with pytest.raises(StoreError):
        store.record_weights(10, [0, 1], [1.0, float("nan")], True)
    with pytest.raises(StoreError):
        store.set_king(a.key, 10, None, float("inf"), "x")
    with pytest.raises(StoreError):
        store.set_progress({"eta": float("nan")})
    with pytest.raises(StoreError):
        store.save_metagraph(10, [{"uid": 0, "stake": float("inf")}])
    assert store.last_weights() is None and store.current_king() is None


def test_json_round_trip_keeps_ints_ints(store):
    wid = store.record_weights(10, [0, 5, 17], [0.0, 1.0, 0.0], True, "ok")
    store.confirm_weights(wid, True)
    w = store.last_weights()
    assert w.uids == [0, 5, 17] and all(type(u) is int for u in w.uids) and w.confirmed is True
    store.save_metagraph(10, [{"uid": 3, "hotkey": "h", "stake": 1.5}])
    n = store.metagraph().neurons[0]
    assert type(n["uid"]) is int and n["stake"] == 1.5
    store.set_progress({"prompt": 3, "prompt_count": 40})
    assert store.progress().data == {"prompt": 3, "prompt_count": 40}
    rid, _ = first_round(store)
    assert all(type(t) is int for t in store.round(rid).evaluations[0].prompt_tokens)


def test_transient_admission_retries_later_then_final(store):
    store.add_submissions([sub("alice", 5)])
    key = SubmissionId(hk("alice"), 5)
    store.record_admission(key, "transient", detail="HTTP 503", next_retry_block=20)
    assert store.pending_admissions(10) == []
    (p,) = store.pending_admissions(20)
    assert p.attempts == 1
    store.record_admission(key, "rejected", check="params", detail="too big")
    assert store.submission(hk("alice"))[0].status == "invalid"
    assert store.submission(hk("alice"))[0].admission.attempts == 2
    assert store.metadata_hash_owner("none") is None


def test_failed_round_judges_nobody(store):
    (a,) = admitted(store, ("alice", 5))
    rid = store.create_round("first", 10, BH, ["e" * 64] * 4, RULES, [a.key])
    store.fail_round(rid, "pod down")
    assert store.round(rid).state == "failed" and store.interrupted_rounds() == []
    with pytest.raises(StoreError):
        store.mark_dispatched(rid, "p", "j")


def test_concurrent_reader_while_writer_writes(store, tmp_path):
    """WAL: the API's read-only connection reads consistently while the loop writes."""
    path = tmp_path / "state" / "validator.db"
    errors: list[BaseException] = []
    done = threading.Event()

    def reader():
        ro = Store.open_readonly(path)
        try:
            while not done.is_set():
                n = len(ro.commitments())
                ro.scores()
                assert n == len(ro.commitments()) or n >= 0
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test below
            errors.append(exc)
        finally:
            ro.close()

    t = threading.Thread(target=reader)
    t.start()
    for i in range(200):
        store.add_submissions([sub(f"m{i}", 100 + i, uid=i)])
        store.set_progress({"i": i})
    done.set()
    t.join(timeout=30)
    assert not errors and len(Store.open_readonly(path).commitments()) == 200


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


def test_withdrawn_submission_stops_counting_and_owning(store):
    (a,) = admitted(store, ("alice", 5))
    store.add_hash(a.key, "content", "c" * 64)
    assert store.live_keys() == [a.key] and store.metadata_hash_holders("m-alice") == [a.key]
    assert store.withdraw_submissions({a.key: 9, SubmissionId(hk("nobody"), 1): 9}) == 1
    row = store.submission(hk("alice"))[0]
    assert (row.status, row.status_detail) == ("ignored", "withdrawn: replaced by the commitment at block 9")
    assert store.live_keys() == [] and store.metadata_hash_holders("m-alice") == []
    assert store.metadata_hash_owner("m-alice") is None and store.known_content_hashes() == []
    assert store.withdraw_submissions({a.key: 12}) == 0  # already withdrawn: nothing moves


def test_weights_states_and_supersede(store):
    first = store.record_weights(10, [1], [1.0], True, "committed", state="committed", reveal_block=30)
    assert store.pending_weights().id == first
    second = store.record_weights(15, [2], [1.0], True, "committed", state="committed", reveal_block=35)
    rows = {r["id"]: (r["state"], r["confirmed"]) for r in store._db.execute("SELECT * FROM weight_submissions")}
    assert rows == {first: ("superseded", 0), second: ("committed", None)}
    store.confirm_weights(second, True, "revealed")
    assert store.pending_weights() is None and store.last_weights(confirmed=True).state == "revealed"
    with pytest.raises(StoreError):
        store.record_weights(16, [2], [1.0], True, state="maybe")


def test_the_store_writes_the_values_it_is_given(store):
    """The KL interval, status and last KL come from ``validator.verdicts``; the store derives none of them."""
    import dataclasses

    a, b = admitted(store, ("alice", 5), ("bob", 6))
    rid = store.create_round("first", 10, BH, ["e" * 64] * 4, RULES, [a.key, b.key], job_id="job-1")
    result = eres(mres(a, [0.5, 0.6, 0.5, 0.4]), mres(b, [0.9, 0.8, 0.9, 1.0]))
    out = interpret_result(RoundPlan("first", None, (a, b)), result, RULES)
    e = out.evaluations[1]
    given = dataclasses.replace(e, mean_kl=0.875, ci_lo=0.25, ci_hi=1.5)
    verdict = dataclasses.replace(e.verdict, state="model_error", reason="given")
    out = dataclasses.replace(out, evaluations=(out.evaluations[0], dataclasses.replace(given, verdict=verdict)))
    store.record_round_result(rid, out, result, 12)
    ev = {x.hotkey: x for x in store.round(rid).evaluations}
    assert (ev[b.hotkey].mean_kl, ev[b.hotkey].ci_lo, ev[b.hotkey].ci_hi) == (0.875, 0.25, 1.5)
    assert ev[b.hotkey].state == "model_error" and ev[b.hotkey].reason == "given"
    row = store.submission(b.hotkey)[0]
    assert (row.status, row.status_detail, row.last_kl) == ("evaluated", "given", None)


def test_loop_queries_count_rounds_and_read_one_submissions_strikes(store):
    assert store.round_count() == 0
    (a,) = admitted(store, ("alice", 5))
    assert store.strikes(a.key) == 0 and store.strikes(SubmissionId(hk("nobody"), 1)) == 0
    store.set_strikes(a.key, 2)
    assert store.strikes(a.key) == 2 and store.strikes(SubmissionId(a.hotkey, 6)) == 0
    for i in range(3):
        rid = store.create_round("first", 10 + i, BH, ["e" * 64] * 4, RULES, [a.key], job_id=f"job-{i}")
    store.fail_round(rid, "pod down")
    assert store.round_count() == 3 == store.rounds(1, 1).total  # failed and open rounds count too
