"""The loop's own queries on the store."""

from __future__ import annotations

import pytest
from store_fixtures import BH, RULES, admitted, hk, open_store

from eval.schemas import SubmissionId


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


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
