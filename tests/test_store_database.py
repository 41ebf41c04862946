"""The composed ``Store``: every writer and reader on one connection, a whole round written and read back."""

from __future__ import annotations

import pytest
from store_fixtures import BH, RULES, first_round, open_store


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


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
