"""Ownership of hashes: earliest commit owns, deterministic ties, the king is not exempt."""

from __future__ import annotations

import random

import pytest

from eval.ownership import OwnedSubmission as S
from eval.ownership import assign_ownership, copies


def test_earliest_commit_owns_and_later_are_copies():
    subs = [S("b:20", "b", 20, "m1", "c1"), S("a:10", "a", 10, "m1", "c1"), S("c:30", "c", 30, "m2", "c2")]
    assert assign_ownership(subs) == {"a:10": "a:10", "b:20": "a:10", "c:30": "c:30"}
    assert copies(subs) == {"b:20": "a:10"}


def test_resharded_copy_matched_by_content_hash_only():
    subs = [S("a:1", "a", 1, "m1", "c1"), S("b:2", "b", 2, "m-other", "c1")]
    assert copies(subs) == {"b:2": "a:1"}


def test_metadata_only_before_download():
    subs = [S("a:1", "a", 1, "m1", None), S("b:2", "b", 2, "m1", None), S("c:3", "c", 3, None, None)]
    assert copies(subs) == {"b:2": "a:1"}


def test_same_block_tie_goes_to_smallest_hotkey_in_any_input_order():
    subs = [S("zz:5", "zz", 5, "m", None), S("aa:5", "aa", 5, "m", None), S("mm:5", "mm", 5, "m", None)]
    for _ in range(10):
        random.shuffle(subs)
        assert copies(subs) == {"zz:5": "aa:5", "mm:5": "aa:5"}


def test_transitive_chain_points_at_root_owner():
    subs = [S("a:1", "a", 1, "m1", "c1"), S("b:2", "b", 2, "m1", "c2"), S("c:3", "c", 3, "m3", "c2")]
    assert copies(subs) == {"b:2": "a:1", "c:3": "a:1"}


def test_king_is_not_exempt():
    # The current king committed later than an earlier owner of the same weights: it is a COPY.
    king = S("king:50", "king", 50, "m", "c")
    owner = S("early:40", "early", 40, "m2", "c")
    assert copies([king, owner]) == {"king:50": "early:40"}


def test_same_hotkey_new_commit_is_keyed_separately():
    # LESSONS 1/17: identity is (hotkey, commit_block); a re-commit of the same weights is a copy of the first.
    subs = [S("h:1", "h", 1, "m", None), S("h:9", "h", 9, "m", None)]
    assert copies(subs) == {"h:9": "h:1"}


def test_duplicate_keys_rejected():
    with pytest.raises(ValueError):
        assign_ownership([S("a:1", "a", 1), S("a:1", "a", 1)])


def test_owner_order_is_the_validators_seniority_order():
    # One seniority rule across the tree: the validator's COPY verdicts order eval.schemas.SubmissionId.
    from eval.schemas import SubmissionId

    rng = random.Random(5)
    for _ in range(50):
        subs = [S(f"{h}:{b}", h, b, "m", None) for h, b in {(rng.choice("abcde"), rng.randint(1, 4)) for _ in range(6)}]
        owner = min(subs, key=lambda s: SubmissionId(s.hotkey, s.commit_block))
        assert set(assign_ownership(subs).values()) == {owner.key}
