"""Slot planning, submission intake, weights cadence and strikes: table-driven, pure."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from eval.rules import ContestRules
from eval.schemas import SubmissionId as S
from validator.contest import (
    Candidate,
    commitment_disqualifications,
    coronation_pool,
    king_changes,
    king_vanished,
    new_submissions,
    plan_slot,
    slot_challengers,
    strike_missing_repo,
    weights_due,
    weights_for,
    withdrawn_submissions,
)

REV = "b" * 40
SLOT = 7  # the slot planned in these tests; candidates sit in it unless told otherwise
RULES = ContestRules(max_challengers_per_round=4, max_queued_per_coldkey=2, coronation_candidates=2)


@dataclass(frozen=True)
class C:  # chain commitment
    hotkey: str
    block: int
    text: str


@dataclass(frozen=True)
class N:  # neuron
    uid: int
    hotkey: str
    coldkey: str


def good(repo: str = "org/m") -> str:
    return '{"model":"' + repo + '","revision":"' + REV + '"}'


def cand(
    hk: str, block: int, status: str = "admitted", coldkey: str | None = None, kl=None, registered=True, slot=SLOT
):
    return Candidate(hk, block, f"org/{hk}", REV, coldkey or f"cold-{hk}", status, kl, registered, slot)


# --- new_submissions -------------------------------------------------------


def test_new_commitment_is_pending_with_chain_fields():
    out = new_submissions([C("hkA", 10, good())], set(), [N(3, "hkA", "ckA")])
    assert len(out) == 1
    s = out[0]
    assert (s.key, s.uid, s.coldkey, s.status, s.repo, s.revision) == (S("hkA", 10), 3, "ckA", "pending", "org/m", REV)


def test_spoofed_block_key_is_invalid_and_chain_block_is_kept():
    """LESSONS 2: a "block" in the text neither overrides the chain block nor passes."""
    text = '{"block":1,"model":"org/m","revision":"' + REV + '"}'
    (s,) = new_submissions([C("hkA", 500, text)], set(), [N(0, "hkA", "ck")])
    assert s.commit_block == 500 and s.status == "invalid" and "unknown keys" in (s.reason or "")


def test_a_malformed_commitment_is_disqualified_at_its_own_block_and_a_good_one_is_not():
    text = '{"block":1,"model":"org/m","revision":"' + REV + '"}'
    subs = new_submissions([C("hkA", 500, text), C("hkB", 501, good())], set(), [N(0, "hkA", "ck"), N(1, "hkB", "ck")])
    (dq,) = commitment_disqualifications(subs)
    assert (dq.key, dq.reason, dq.check) == (S("hkA", 500), "INVALID", "commitment")
    assert "unknown keys" in dq.detail


def test_known_submission_is_not_recorded_again():
    assert new_submissions([C("hkA", 10, good())], {S("hkA", 10)}, [N(0, "hkA", "ck")]) == []


def test_recommit_is_a_new_submission_and_withdraws_the_one_it_replaced():
    """The chain keeps only the newest commitment: that one is the hotkey's submission, for everyone."""
    (s,) = new_submissions([C("hkA", 20, good("org/new"))], {S("hkA", 10)}, [N(0, "hkA", "ck")])
    assert s.key == S("hkA", 20) and s.status == "pending" and s.repo == "org/new"
    assert withdrawn_submissions([C("hkA", 20, good("org/new"))], [S("hkA", 10), S("hkB", 5)]) == {S("hkA", 10): 20}


def test_recommit_seen_once_is_not_recorded_twice():
    assert new_submissions([C("hkA", 20, good())], {S("hkA", 10), S("hkA", 20)}, [N(0, "hkA", "ck")]) == []
    assert withdrawn_submissions([C("hkA", 20, good())], [S("hkA", 20)]) == {}


def test_nothing_is_withdrawn_without_a_newer_commitment_on_chain():
    """A hotkey missing from a read (sealed, filtered) or showing an older block withdraws nothing."""
    assert withdrawn_submissions([], [S("hkA", 10)]) == {}
    assert withdrawn_submissions([C("hkA", 5, good())], [S("hkA", 10)]) == {}


def test_validator_that_started_late_records_what_one_that_watched_ends_up_with():
    """Same chain state, different histories: the submission set is the chain's, not the watcher's."""
    neurons = [N(0, "hkA", "c"), N(1, "hkB", "c")]
    first = [C("hkA", 10, good("org/old")), C("hkB", 12, good("org/b"))]
    now = [C("hkA", 30, good("org/new")), C("hkB", 12, good("org/b"))]
    watcher = {s.key: s.repo for s in new_submissions(first, set(), neurons)}
    gone = withdrawn_submissions(now, list(watcher))
    watcher.update({s.key: s.repo for s in new_submissions(now, set(watcher), neurons)})
    live_watcher = {k: repo for k, repo in watcher.items() if k not in gone}
    late = {s.key: s.repo for s in new_submissions(now, set(), neurons)}
    assert live_watcher == late == {S("hkA", 30): "org/new", S("hkB", 12): "org/b"}


def test_withdrawn_king_vanishes():
    assert king_vanished(cand("K", 1, "ignored", kl=0.5))


def test_recycled_uid_new_hotkey_is_a_fresh_submission():
    """LESSONS 17: uid 7 belonged to hkOld; hkNew on uid 7 is new, keyed by its own hotkey."""
    out = new_submissions([C("hkNew", 30, good())], {S("hkOld", 10)}, [N(7, "hkNew", "ck2")])
    assert [(s.key, s.status, s.uid) for s in out] == [(S("hkNew", 30), "pending", 7)]


def test_unregistered_hotkeys_are_skipped_and_output_is_fifo():
    commits = [C("hkB", 12, good()), C("hkZ", 5, good()), C("hkA", 12, good()), C("gone", 1, good())]
    neurons = [N(0, "hkA", "c"), N(1, "hkB", "c"), N(2, "hkZ", "c")]
    assert [s.key for s in new_submissions(commits, set(), neurons)] == [S("hkZ", 5), S("hkA", 12), S("hkB", 12)]


def test_two_commitments_same_hotkey_in_one_sync_the_newest_counts():
    commits = [C("hkA", 20, good("org/late")), C("hkA", 10, good("org/early"))]
    (s,) = new_submissions(commits, set(), [N(0, "hkA", "c")])
    assert s.key == S("hkA", 20) and s.repo == "org/late"


# --- plan_slot ---------------------------------------------------------------


def test_no_challengers_in_the_slot_means_no_job():
    king = cand("K", 1, "evaluated", kl=0.5)
    later = cand("n", 2, slot=SLOT + 1)  # placed in the next slot: not this one's business
    plan = plan_slot(SLOT, king, [king, cand("L", 2, "evaluated", kl=0.6), later], RULES)
    assert plan.kind == "none" and plan.challengers == () and plan.king == king


def test_challenge_takes_the_slots_challengers_in_seniority_order():
    king = cand("K", 1, "evaluated", kl=0.5)
    pool = [cand("e", 9), cand("d", 3), cand("c", 3), cand("x", 2, "pending"), cand("y", 1, slot=SLOT - 1)]
    plan = plan_slot(SLOT, king, [king, *pool], RULES)
    assert plan.kind == "challenge"
    assert [c.key for c in plan.challengers] == [S("c", 3), S("d", 3), S("e", 9)]
    assert plan.models[0] == king


def test_evaluated_submissions_never_challenge_again():
    """LESSONS 18 / 6: one evaluation per submission, ever."""
    king = cand("K", 1, "evaluated", kl=0.5)
    done = [cand(h, i + 2, s) for i, (h, s) in enumerate([("a", "evaluated"), ("b", "disqualified"), ("c", "invalid")])]
    assert plan_slot(SLOT, king, [king, *done], RULES).kind == "none"


def test_unregistered_admitted_submission_is_not_judged():
    king = cand("K", 1, "evaluated", kl=0.5)
    assert slot_challengers(SLOT, [king, cand("a", 2, registered=False)]) == []
    assert plan_slot(SLOT, king, [king, cand("a", 2, registered=False)], RULES).kind == "none"


def test_first_round_takes_the_slots_candidates_together():
    pool = [cand("a", 5), cand("b", 3)]
    plan = plan_slot(SLOT, None, pool, RULES)
    assert plan.kind == "first" and plan.king is None
    assert [c.key for c in plan.challengers] == [S("b", 3), S("a", 5)]


def test_no_king_no_challengers_is_none_unless_the_validator_must_crown():
    older = cand("s", 2, "evaluated", kl=0.4, slot=SLOT - 3)
    assert plan_slot(SLOT, None, [cand("x", 1, "pending"), older], RULES).kind == "none"
    plan = plan_slot(SLOT, None, [older], RULES, crown=True)  # anchored with no consensus king on chain
    assert plan.kind == "coronation" and [c.key for c in plan.challengers] == [S("s", 2)]


@pytest.mark.parametrize("status, registered", [("removed", True), ("disqualified", True), ("evaluated", False)])
def test_vanished_king_triggers_a_coronation_of_the_newest_live_submissions(status, registered):
    """LESSONS 20 / 14 / 31: a vanished king is replaced by a same-prompt decision over a pool every validator
    computes alike: the newest live submissions, never this validator's old scores."""
    king = cand("K", 1, status, kl=0.01, registered=registered)
    old = [cand("s1", 2, "evaluated", kl=0.9, slot=1), cand("s2", 3, "evaluated", kl=0.3, slot=2)]
    old.append(cand("s3", 4, "evaluated", kl=0.4, slot=3))
    dq = cand("dq", 5, "disqualified", kl=0.0, slot=4)
    new = cand("n", 9)
    future = cand("f", 99, slot=SLOT + 1)
    plan = plan_slot(SLOT, king, [king, *old, dq, new, future], RULES)  # coronation_candidates = 2
    assert plan.kind == "coronation" and plan.king is None and plan.vanished_king == S("K", 1)
    assert [c.key for c in plan.challengers] == [S("s3", 4), S("n", 9)]
    assert plan.reevaluated == (S("s3", 4),)


def test_coronation_pool_caps_each_coldkey():
    """LESSONS 6: a swarm of one coldkey fills no coronation."""
    swarm = [cand(f"s{i}", 10 + i, coldkey="whale") for i in range(5)]
    pool = coronation_pool(
        SLOT, [cand("h", 2, coldkey="honest"), *swarm], RULES.model_copy(update={"coronation_candidates": 4})
    )
    assert [c.key for c in pool] == [S("h", 2), S("s3", 13), S("s4", 14)]


def test_live_king_with_stale_better_scores_is_still_king():
    """LESSONS 14: an old, lower KL from another prompt set never replaces the stored king."""
    king = cand("K", 1, "evaluated", kl=0.5)
    stale = cand("old", 2, "evaluated", kl=0.0)
    plan = plan_slot(SLOT, king, [king, stale, cand("n", 3)], RULES)
    assert plan.kind == "challenge" and plan.king == king
    assert [c.key for c in plan.challengers] == [S("n", 3)]


def test_coronation_with_nobody_left_is_none():
    plan = plan_slot(SLOT, cand("K", 1, "removed", kl=0.1), [], RULES)
    assert plan.kind == "none" and plan.vanished_king == S("K", 1)


# --- weights ---------------------------------------------------------------


@pytest.mark.parametrize(
    "last, head, changed, due",
    [
        (None, 100, False, True),  # never set
        (100, 150, True, False),  # king changed but inside the rate limit (LESSONS 23)
        (100, 200, True, True),  # changed, rate limit passed
        (100, 200, False, False),  # unchanged, interval not reached
        (100, 460, False, True),  # unchanged, interval reached
        (100, 100, False, False),  # same block: a tight loop sets nothing
    ],
)
def test_weights_due(last, head, changed, due):
    assert weights_due(last, head, changed, interval=360, rate_limit=100) is due


def test_weights_for_king_one_others_zero():
    neurons = [N(2, "b", "c"), N(0, "K", "c"), N(1, "a", "c")]
    assert weights_for(S("K", 5), neurons) == ([0, 1, 2], [1.0, 0.0, 0.0])


def test_weights_for_no_king_or_deregistered_king_sets_nothing():
    assert weights_for(None, [N(0, "a", "c")]) is None
    assert weights_for(S("K", 5), [N(0, "new-owner-of-uid", "c")]) is None


# --- strikes ---------------------------------------------------------------


def test_missing_repo_strikes_then_removed():
    """LESSONS 19: a ghost repo loses its slot after bounded strikes."""
    s = 0
    results = []
    for _ in range(3):
        r = strike_missing_repo(s, 3, "missing")
        s = r.strikes
        results.append(r.removed)
    assert results == [False, False, True]


def test_transient_errors_never_count():
    """LESSONS 21: 100 outages in a row remove nobody."""
    s = 2
    for _ in range(100):
        r = strike_missing_repo(s, 3, "transient")
        assert not r.removed
        s = r.strikes
    assert s == 2


def test_ok_resets_strikes_and_bad_max_refused():
    assert strike_missing_repo(2, 3, "ok").strikes == 0
    with pytest.raises(ValueError):
        strike_missing_repo(0, 0, "missing")


@pytest.mark.parametrize(
    ("before", "new", "stored", "changed"),
    [
        (S("a", 1), S("a", 1), S("a", 1), False),  # defended: the throne stays as it is
        (S("a", 1), S("b", 2), S("a", 1), True),  # dethroned
        (None, S("b", 2), None, True),  # first crowning
        (None, None, None, False),  # nobody eligible, nobody on the throne
        (S("a", 1), None, S("a", 1), True),  # the king failed and nobody is left
        (S("a", 1), S("a", 1), None, True),  # the throne was cleared since planning: the round's king returns
        (S("a", 1), S("a", 1), S("c", 3), True),  # someone else sits there now: the round's answer stands
    ],
)
def test_king_changes_when_the_round_moved_the_crown_or_the_stored_king_differs(before, new, stored, changed):
    assert king_changes(before, new, stored) is changed
