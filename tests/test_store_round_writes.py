"""Round writes: one transaction per round, recorded once, the values and the throne change as given."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest
from store_fixtures import BH, RULES, admitted, eres, first_round, mres, open_store

from validator.contest import Candidate, RoundPlan
from validator.store.database import StoreError
from validator.verdicts import interpret_result


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


def test_a_challenge_round_keeps_the_guards_audit_record(store):
    """Per guarded prompt, the king's and a KL winner's own text and the teacher's view of it."""
    _, (a, b) = first_round(store)
    (c,) = admitted(store, ("carl", 7))
    king = Candidate(a.hotkey, a.commit_block, a.repo, a.revision, a.coldkey, "evaluated")
    rid = store.create_round("challenge", 20, BH, ["e" * 64] * 4, RULES, [a.key, c.key], job_id="job-2")
    result = eres(mres(a, [0.5, 0.6, 0.5, 0.4]), mres(c, [0.1, 0.12, 0.11, 0.1]), king=king)
    out = interpret_result(RoundPlan("challenge", king, (c,)), result, RULES)
    store.record_round_result(rid, out, result, 21, king_changed=out.king_changed)
    ev = {e.hotkey: e for e in store.round(rid).evaluations}
    assert [o["text"] for o in ev[a.hotkey].onpolicy] == [f"own text {i} \u2026" for i in range(4)]
    assert ev[c.hotkey].onpolicy[0] == {
        "tokens": 5,
        "teacher_nll": 0.6,
        "reverse_kl": 0.2,
        "repetition": 0.0,
        "text": "own text 0 \u2026",
    }


def test_round_is_recorded_once_and_evaluations_are_unique(store):
    """No evaluation is counted twice: the round state machine and UNIQUE(round, hotkey, block)."""
    rid, (a, b) = first_round(store)
    out = interpret_result(RoundPlan("first", None, (a, b)), eres(mres(a, [0.5] * 4), mres(b, [0.9] * 4)), RULES)
    with pytest.raises(StoreError, match="done"):
        store.record_round_result(
            rid, out, eres(mres(a, [0.5] * 4), mres(b, [0.9] * 4)), 13, king_changed=out.king_changed
        )
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
        store.record_round_result(rid, out, result, 12, king_changed=out.king_changed)
    assert store.round(rid).evaluations == [] and store.disqualifications() == []
    assert store.current_king() is None and store.known_content_hashes() == []
    assert [r.id for r in store.interrupted_rounds()] == [rid]
    assert {c.status for c in store.candidates([a.hotkey, b.hotkey])} == {"admitted"}
    monkeypatch.undo()
    store.record_round_result(rid, out, result, 12, king_changed=out.king_changed)  # the re-run records it exactly once
    assert store.interrupted_rounds() == [] and len(store.disqualifications()) == 1


def test_failed_round_judges_nobody(store):
    (a,) = admitted(store, ("alice", 5))
    rid = store.create_round("first", 10, BH, ["e" * 64] * 4, RULES, [a.key])
    store.fail_round(rid, "pod down")
    assert store.round(rid).state == "failed" and store.interrupted_rounds() == []
    with pytest.raises(StoreError):
        store.mark_dispatched(rid, "p", "j")


def test_the_store_writes_the_values_it_is_given(store):
    """The KL interval, status and last KL come from ``validator.verdicts``; the store derives none of them."""

    a, b = admitted(store, ("alice", 5), ("bob", 6))
    rid = store.create_round("first", 10, BH, ["e" * 64] * 4, RULES, [a.key, b.key], job_id="job-1")
    result = eres(mres(a, [0.5, 0.6, 0.5, 0.4]), mres(b, [0.9, 0.8, 0.9, 1.0]))
    out = interpret_result(RoundPlan("first", None, (a, b)), result, RULES)
    e = out.evaluations[1]
    given = dataclasses.replace(e, mean_kl=0.875, ci_lo=0.25, ci_hi=1.5)
    verdict = dataclasses.replace(e.verdict, state="model_error", reason="given")
    out = dataclasses.replace(out, evaluations=(out.evaluations[0], dataclasses.replace(given, verdict=verdict)))
    store.record_round_result(rid, out, result, 12, king_changed=out.king_changed)
    ev = {x.hotkey: x for x in store.round(rid).evaluations}
    assert (ev[b.hotkey].mean_kl, ev[b.hotkey].ci_lo, ev[b.hotkey].ci_hi) == (0.875, 0.25, 1.5)
    assert ev[b.hotkey].state == "model_error" and ev[b.hotkey].reason == "given"
    row = store.submission(b.hotkey)[0]
    assert (row.status, row.status_detail, row.last_kl) == ("evaluated", "given", None)


def test_the_throne_is_written_only_when_the_caller_says_so(store):
    """The store never compares kings itself: ``king_changed`` (``validator.contest.king_changes``) decides."""
    a, b = admitted(store, ("alice", 5), ("bob", 6))
    result = eres(mres(a, [0.5, 0.6, 0.5, 0.4]), mres(b, [0.9, 0.8, 0.9, 1.0]))
    out = interpret_result(RoundPlan("first", None, (a, b)), result, RULES)
    assert out.new_king == a.key and store.current_king() is None
    rid = store.create_round("first", 10, BH, ["e" * 64] * 4, RULES, [a.key, b.key], job_id="job-1")
    store.record_round_result(rid, out, result, 12, king_changed=False)
    assert store.current_king() is None and store.king_history() == []
    assert store.round(rid).new_king_hotkey == a.hotkey  # the round's decision is recorded all the same
    store.set_king(a.key, 12, rid, 0.5, "crowned")
    rid2 = store.create_round("first", 20, BH, ["e" * 64] * 4, RULES, [a.key, b.key], job_id="job-2")
    store.record_round_result(rid2, dataclasses.replace(out, evaluations=()), result, 22, king_changed=True)
    assert store.current_king().round_id == rid2  # same king, rewritten because the caller said so
    assert [(h.round_id, h.reason) for h in store.king_history()] == [(rid, "crowned"), (rid2, out.reason)]
