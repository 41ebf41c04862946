"""Recording a finished round: the throne is written by the domain's answer, in the round's transaction."""

from __future__ import annotations

import dataclasses

import pytest
from store_fixtures import BH, RULES, admitted, eres, mres, open_store

from validator.contest import RoundPlan
from validator.rounds import record_outcome
from validator.verdicts import interpret_result


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


def test_record_outcome_rewrites_the_throne_only_when_the_stored_king_or_the_crown_moved(store):
    a, b = admitted(store, ("alice", 5), ("bob", 6))
    result = eres(mres(a, [0.5, 0.6, 0.5, 0.4]), mres(b, [0.9, 0.8, 0.9, 1.0]))
    out = interpret_result(RoundPlan("first", None, (a, b)), result, RULES)
    rid = store.create_round("first", 10, BH, ["e" * 64] * 4, RULES, [a.key, b.key], job_id="job-1")
    record_outcome(store, rid, out, result, 12)
    assert store.current_king().key == a.key and len(store.king_history()) == 1
    # a defence by the stored king (outcome says: no change) leaves the throne and its history alone
    defended = dataclasses.replace(out, kind="challenge", king_before=a.key, evaluations=(), dqs=())
    rid2 = store.create_round("challenge", 20, BH, ["e" * 64] * 4, RULES, [a.key, b.key], job_id="job-2")
    record_outcome(store, rid2, defended, result, 22)
    assert store.current_king().round_id == rid and len(store.king_history()) == 1
    # the throne was cleared since the round was planned: the round's king is written back
    store.set_king(None, 25, None, None, "cleared")
    rid3 = store.create_round("challenge", 30, BH, ["e" * 64] * 4, RULES, [a.key, b.key], job_id="job-3")
    record_outcome(store, rid3, defended, result, 32)
    assert store.current_king().round_id == rid3
    assert [h.reason for h in store.king_history()] == [out.reason, "cleared", out.reason]
