"""The shared schedule: slot arithmetic and challenger placement, pure and table-driven (LESSONS 6, 31)."""

from __future__ import annotations

import random

import pytest

from eval.rules import ContestRules
from eval.schemas import SubmissionId as S
from validator.schedule import Entry, assign_slots, entry_slot, slot_of, slot_start

RULES = ContestRules(
    round_interval_blocks=100, commit_lag_blocks=20, max_challengers_per_round=3, max_queued_per_coldkey=2
)


def entry(hotkey: str, block: int, coldkey: str | None = None) -> Entry:
    return Entry(S(hotkey, block), coldkey or f"cold-{hotkey}")


@pytest.mark.parametrize(("block", "slot"), [(0, 0), (99, 0), (100, 1), (250, 2)])
def test_a_slot_covers_R_blocks_from_its_start(block, slot):
    assert slot_of(block, RULES) == slot
    assert slot_start(slot, RULES) <= block < slot_start(slot + 1, RULES)


@pytest.mark.parametrize(
    ("commit", "slot"),
    [
        (80, 1),  # 80 + 20 = 100: exactly on slot 1's start, which may judge it
        (81, 2),  # 101: one block late for slot 1
        (0, 1),  # 20 -> the first start at or after it is 100
        (180, 2),
        (199, 3),  # a commit inside slot 1 never enters slot 2 within L of its seed block
    ],
)
def test_a_commitment_enters_the_first_slot_starting_at_or_after_c_plus_L(commit, slot):
    assert entry_slot(commit, RULES) == slot
    assert slot_start(slot, RULES) >= commit + RULES.commit_lag_blocks
    assert slot_start(slot - 1, RULES) < commit + RULES.commit_lag_blocks


def test_nobody_can_commit_after_seeing_a_slots_seed_and_enter_it():
    """The seed is block s*R's hash; any commit at or after block s*R - L + 1 lands in a later slot."""
    for s in range(1, 6):
        seed_block = slot_start(s, RULES)
        for c in range(seed_block - RULES.commit_lag_blocks + 1, seed_block + 3 * RULES.round_interval_blocks):
            assert entry_slot(c, RULES) > s


def test_lag_zero_judges_a_commit_in_its_own_slot_start():
    rules = ContestRules(round_interval_blocks=1, commit_lag_blocks=0)
    assert [entry_slot(c, rules) for c in (0, 5, 9)] == [0, 5, 9]


def test_overflow_past_the_slot_cap_moves_to_the_next_slot_in_seniority_order():
    entries = [entry(f"m{i}", 10 + i) for i in range(7)]  # all enter slot 1
    slots = assign_slots(entries, RULES)
    assert [slots[e.key] for e in entries] == [1, 1, 1, 2, 2, 2, 3]


def test_ties_on_the_commit_block_go_by_hotkey():
    slots = assign_slots([entry("b", 10), entry("a", 10), entry("c", 10), entry("d", 10)], RULES)
    assert slots[S("d", 10)] == 2 and {slots[S(h, 10)] for h in "abc"} == {1}


def test_per_coldkey_cap_pushes_a_swarm_back_without_delaying_others():
    """LESSONS 6: ten hotkeys of one coldkey take two places per slot; an honest later commit keeps its slot."""
    swarm = [entry(f"s{i}", 10 + i, "whale") for i in range(10)]
    honest = entry("h", 50, "honest")
    slots = assign_slots([*swarm, honest], RULES)
    assert slots[honest.key] == 1
    assert [slots[e.key] for e in swarm] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_the_result_does_not_depend_on_the_order_entries_are_given():
    """Every validator computes the same slots from the same commitments, whatever order its reads return."""
    rng = random.Random(7)
    entries = [entry(f"m{i}", rng.randrange(0, 400), f"ck{rng.randrange(3)}") for i in range(40)]
    expected = assign_slots(entries, RULES)
    for _ in range(5):
        rng.shuffle(entries)
        assert assign_slots(entries, RULES) == expected


def test_a_later_commitment_never_moves_an_earlier_one():
    """Seniority: adding a newer commitment changes no older entry's slot (it queues behind)."""
    entries = [entry(f"m{i}", 10 + 3 * i) for i in range(6)]
    before = assign_slots(entries, RULES)
    after = assign_slots([*entries, entry("late", 40)], RULES)
    assert {k: after[k] for k in before} == before


def test_frozen_slots_stay_put_when_an_earlier_entry_leaves():
    """A re-commit withdraws a queued submission; slots already assigned do not shift into its place."""
    entries = [entry(f"m{i}", 10 + i) for i in range(5)]  # slots 1,1,1,2,2
    first = assign_slots(entries, RULES)
    remaining = entries[1:]  # m0 re-committed later: its old commitment is gone from the chain
    recomputed = assign_slots(remaining, RULES, frozen=first)
    assert {k: recomputed[k] for k in recomputed} == {e.key: first[e.key] for e in remaining}
    newcomer = entry("n", 12)  # a new entry fills the freed place in slot 1
    assert assign_slots([*remaining, newcomer], RULES, frozen=first)[newcomer.key] == 1


def test_a_hotkey_that_re_commits_is_a_new_entry_at_its_new_block():
    old, new = entry("a", 10), entry("a", 150)
    slots = assign_slots([new, entry("b", 11)], RULES, frozen=assign_slots([old, entry("b", 11)], RULES))
    assert slots == {S("a", 150): 2, S("b", 11): 1}


def test_a_deregistered_miners_entry_still_holds_its_place():
    """Placement reads commitments only: whether a hotkey is registered now moves nobody else's slot."""
    entries = [entry("gone", 10), *(entry(f"m{i}", 11 + i) for i in range(3))]
    assert assign_slots(entries, RULES)[S("m2", 13)] == 2


def test_negative_blocks_and_slots_are_refused():
    with pytest.raises(ValueError):
        slot_of(-1, RULES)
    with pytest.raises(ValueError):
        slot_start(-1, RULES)
    with pytest.raises(ValueError):
        entry_slot(-1, RULES)
