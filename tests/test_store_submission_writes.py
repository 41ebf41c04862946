"""Submission writes: identity by (hotkey, commit_block), admission attempts, withdrawals, the status given."""

from __future__ import annotations

import sqlite3

import pytest
from store_fixtures import admitted, hk, open_store, sub

from eval.schemas import SubmissionId
from validator.admit import record_attempt
from validator.contest import NewSubmission, commitment_disqualifications


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


def test_recycled_uid_new_hotkey_inherits_nothing(store):
    """LESSONS 17: old hotkey on uid 3 is disqualified; a new hotkey on uid 3 starts clean."""
    store.add_submissions([sub("old", 5, uid=3)])
    store.add_disqualification(SubmissionId(hk("old"), 5), "COPY", "content_hash", "copy", {"copy_of": "x"}, 9)
    store.add_submissions([sub("new", 50, uid=3)])
    new = store.submission(hk("new"))[0]
    assert new.status == "pending" and new.disqualifications == [] and new.evaluations == []
    assert new.last_kl is None


def test_invalid_commitment_is_recorded_with_dq(store):
    subs = [NewSubmission(hk("x"), 4, 1, "ck", "garbage", "invalid", reason="not JSON")]
    store.add_submissions(subs, commitment_disqualifications(subs))
    (dq,) = store.disqualifications()
    assert (dq.reason, dq.check, dq.detail, dq.block) == ("INVALID", "commitment", "not JSON", 4)


def test_the_store_derives_no_disqualification_from_a_status(store):
    """The domain decides disqualifications; an invalid status alone writes none."""
    store.add_submissions([NewSubmission(hk("x"), 4, 1, "ck", "garbage", "invalid", reason="not JSON")])
    assert store.disqualifications() == []
    assert store.submission(hk("x"))[0].status == "invalid"


def test_transient_admission_retries_later_then_final(store):
    store.add_submissions([sub("alice", 5)])
    key = SubmissionId(hk("alice"), 5)
    record_attempt(store, key, "transient", detail="HTTP 503", next_retry_block=20)
    assert store.pending_admissions(10) == []
    (p,) = store.pending_admissions(20)
    assert p.attempts == 1
    record_attempt(store, key, "rejected", check="params", detail="too big")
    assert store.submission(hk("alice"))[0].status == "invalid"
    assert store.submission(hk("alice"))[0].admission.attempts == 2
    assert store.metadata_hash_owner("none") is None


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


def test_an_admission_attempt_writes_the_status_it_is_given(store):
    """The store derives no status from the attempt: ``validator.admit.admission_status`` decides it."""
    store.add_submissions([sub("alice", 5), sub("bob", 6)])
    alice, bob = SubmissionId(hk("alice"), 5), SubmissionId(hk("bob"), 6)
    store.record_admission(alice, "rejected", "pending", status_detail="held for review", check="params", detail="big")
    store.record_admission(bob, "admitted", "invalid", status_detail="told so", params=10, metadata_hash="m-bob")
    a, b = store.submission(hk("alice"))[0], store.submission(hk("bob"))[0]
    assert (a.status, a.status_detail, a.admission.result, a.admission.detail) == (
        "pending",
        "held for review",
        "rejected",
        "big",
    )
    assert (b.status, b.status_detail, b.admission.result, b.hashes) == (
        "invalid",
        "told so",
        "admitted",
        {"metadata": "m-bob"},
    )
    with pytest.raises(sqlite3.IntegrityError):  # no submission, no attempt: nothing half-written
        store.record_admission(SubmissionId(hk("nobody"), 1), "admitted", "admitted")
    assert [c.hotkey for c in store.commitments()] == [hk("alice"), hk("bob")]
