"""The chain's consensus king and Yuma-style vtrust, from weight rows and neurons (pure; LESSONS 17, 31)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from eval.schemas import SubmissionId as S
from validator.consensus import consensus_king, disagreement_streak, support, yuma_vtrust


@dataclass(frozen=True)
class N:
    uid: int
    hotkey: str
    stake: float = 0.0
    validator_permit: bool = False
    last_update: int = 100
    registered_at: int = 0


VALIDATORS = [N(0, "v0", 40.0, True), N(1, "v1", 35.0, True), N(2, "v2", 25.0, True)]
MINERS = [N(3, "a"), N(4, "b"), N(5, "c")]
NEURONS = VALIDATORS + MINERS
LIVE = {"a": S("a", 10), "b": S("b", 20), "c": S("c", 30)}


def test_the_stake_weighted_top_miner_is_the_consensus_king():
    rows = {0: {3: 1.0}, 1: {4: 1.0}, 2: {4: 1.0}}  # 40% a, 60% b
    assert consensus_king(NEURONS, rows, LIVE) == S("b", 20)
    assert support(NEURONS, rows) == pytest.approx({3: 0.4, 4: 0.6})


def test_a_validator_reads_the_others_consensus_not_its_own():
    rows = {0: {3: 1.0}, 1: {4: 1.0}, 2: {4: 1.0}}
    assert consensus_king(NEURONS, rows, LIVE, exclude="v1") == S("a", 10)  # 40 vs 25 without v1's own row


def test_ties_go_to_the_most_senior_submission():
    rows = {0: {4: 1.0}, 1: {3: 1.0}}
    neurons = [N(0, "v0", 10.0, True), N(1, "v1", 10.0, True), *MINERS]
    assert consensus_king(neurons, rows, LIVE) == S("a", 10)


def test_no_weights_or_weights_on_no_live_submission_mean_no_consensus():
    assert consensus_king(NEURONS, {}, LIVE) is None
    assert consensus_king(NEURONS, {0: {5: 1.0}, 1: {5: 1.0}}, {"a": S("a", 10)}) is None


def test_unpermitted_hotkeys_weights_do_not_count():
    rows = {0: {3: 1.0}, 4: {5: 1.0}}  # uid 4 is a miner without a permit
    assert consensus_king(NEURONS, rows, LIVE) == S("a", 10)


def test_weights_set_before_a_uid_was_recycled_are_masked():
    """LESSONS 17: v0 and v1 weighted uid 4's previous owner; the newcomer registered after inherits nothing."""
    recycled = [*VALIDATORS, N(3, "a"), N(4, "newcomer", registered_at=150), N(5, "c")]
    rows = {0: {4: 1.0}, 1: {4: 1.0}, 2: {3: 1.0}}
    assert consensus_king(recycled, rows, {**LIVE, "newcomer": S("newcomer", 160)}) == S("a", 10)


def test_equal_weight_when_no_validator_has_stake():
    neurons = [N(0, "v0", 0.0, True), N(1, "v1", 0.0, True), N(2, "v2", 0.0, True), *MINERS]
    assert consensus_king(neurons, {0: {3: 1.0}, 1: {4: 1.0}, 2: {4: 1.0}}, LIVE) == S("b", 20)


def test_vtrust_is_one_with_the_majority_and_zero_in_a_winner_take_all_minority():
    rows = {0: {3: 1.0}, 1: {4: 1.0}, 2: {4: 1.0}}  # b has 60% of the stake
    assert yuma_vtrust(NEURONS, rows, "v1") == pytest.approx(1.0)
    assert yuma_vtrust(NEURONS, rows, "v2") == pytest.approx(1.0)
    assert yuma_vtrust(NEURONS, rows, "v0") == pytest.approx(0.0)


def test_vtrust_clips_each_weight_to_the_stake_weighted_median():
    rows = {0: {3: 0.5, 4: 0.5}, 1: {4: 1.0}, 2: {4: 1.0}}  # consensus on b is 1.0 (60% hold 1.0), on a 0.0
    assert yuma_vtrust(NEURONS, rows, "v0") == pytest.approx(0.5)


def test_vtrust_is_unknown_without_weights_or_permit():
    assert yuma_vtrust(NEURONS, {0: {3: 1.0}}, "v1") is None
    assert yuma_vtrust(NEURONS, {0: {3: 1.0}}, "a") is None
    assert yuma_vtrust(NEURONS, {0: {3: 1.0}}, "nobody") is None


@pytest.mark.parametrize(
    ("agreements", "streak"),
    [
        ([], 0),
        ([True, False, False], 2),
        ([False, True], 0),
        ([False, None, False], 2),  # a slot without consensus neither breaks nor extends the run
        ([False, False, False, False], 4),
    ],
)
def test_disagreement_streak_counts_the_newest_run(agreements, streak):
    assert disagreement_streak(agreements) == streak
