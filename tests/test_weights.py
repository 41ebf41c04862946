"""The weights step through the loop on a SimChain: direct sets, commit then reveal, failed reveals, standing."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fixtures_contest import FakePod, make_validator, seed

from validator.chain.port import Neuron
from validator.weights import standing_refusal


class CountingChain:
    """The SimChain, counting set_weights calls (each one an extrinsic on subtensor)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.sent = inner, 0

    def set_weights(self, uids: list[int], weights: list[float]) -> Any:
        self.sent += 1
        return self.inner.set_weights(uids, weights)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _rows(store) -> list[tuple]:
    return [
        tuple(r)
        for r in store._db.execute("SELECT state, confirmed, block, reveal_block FROM weight_submissions ORDER BY id")
    ]


@pytest.fixture
def contest(world):
    seed(world, ("m1", "alice/m1"), ("m2", "bob/m2"))
    v = make_validator(world, FakePod({"alice/m1": 0.4, "bob/m2": 0.8}), weights_interval=1000)
    v.chain = CountingChain(world.sim)
    return world, v


def test_direct_set_is_confirmed_from_the_weights_the_chain_holds(contest):
    world, v = contest
    assert v.epoch().weights == "set"
    (row,) = _rows(v.store)
    assert row[:2] == ("set", 1) and v.chain.sent == 1


def test_commit_then_reveal_nothing_resent_while_waiting(contest, caplog):
    world, v = contest
    world.sim.set_commit_reveal(True, reveal_blocks=20)
    caplog.set_level(logging.INFO)
    assert v.epoch().weights == "committed"
    block = world.sim.block_number()
    assert _rows(v.store) == [("committed", None, block, block + 20)]
    assert "reveal expected by block" in caplog.text
    for _ in range(3):  # past the rate limit (5), before the reveal: read, never re-sent
        world.sim.advance(6)
        assert v.epoch().weights == "awaiting_reveal"
    assert v.chain.sent == 1 and v.store.last_weights(confirmed=True) is None
    world.sim.advance(3)
    assert v.epoch().weights == "revealed"
    assert _rows(v.store) == [("revealed", 1, block, block + 20)]
    world.sim.advance(6)
    assert v.epoch().weights == "not_due" and v.chain.sent == 1


def test_a_reveal_that_never_came_is_noticed_and_weights_are_committed_again(contest, caplog):
    world, v = contest
    world.sim.set_commit_reveal(True, reveal_blocks=10)
    world.sim.fail_next_reveals(1)  # subtensor drops a failed reveal without a word
    assert v.epoch().weights == "committed"
    world.sim.advance(6)
    assert v.epoch().weights == "awaiting_reveal"
    world.sim.advance(6)
    caplog.set_level(logging.ERROR)
    assert v.epoch().weights == "committed"  # missed, noticed, and due again at once (nothing confirmed yet)
    assert "never showed on chain" in caplog.text
    assert [r[:2] for r in _rows(v.store)] == [("unconfirmed", 0), ("committed", None)] and v.chain.sent == 2
    world.sim.advance(10)
    assert v.epoch().weights == "revealed" and v.store.last_weights(confirmed=True).state == "revealed"


def test_a_new_king_while_a_commit_waits_supersedes_it(contest):
    world, v = contest
    world.sim.set_commit_reveal(True, reveal_blocks=30)
    assert v.epoch().weights == "committed"
    seed(world, ("m3", "carol/m3"))
    v.rounds.pod.kl["carol/m3"] = 0.1
    world.sim.advance(6)
    report = v.epoch()
    assert report.round_state == "done" and report.weights == "committed" and v.chain.sent == 2
    assert [r[0] for r in _rows(v.store)] == ["superseded", "committed"]
    world.sim.advance(30)
    assert v.epoch().weights == "revealed"
    king_uid = next(n.uid for n in world.sim.neurons() if n.hotkey == world.miners["m3"])
    assert world.sim.weights_of(world.validator_hotkey) == {king_uid: 1.0}


@pytest.mark.parametrize("commit_reveal", [False, True])
@pytest.mark.parametrize("lack", ["permit", "stake"])
def test_no_permit_or_stake_sends_nothing_and_says_why(contest, caplog, commit_reveal, lack):
    """A commit would be accepted without either and its reveal dropped: check first, sign nothing."""
    world, v = contest
    world.sim.set_commit_reveal(commit_reveal)
    if lack == "permit":
        world.sim.set_validator_permit(world.validator_hotkey, False)
    else:
        world.sim.set_min_stake(5000.0)
    caplog.set_level(logging.WARNING)
    assert v.epoch().weights == "skipped"
    reason = "no_permit" if lack == "permit" else "low_stake"
    assert v.chain.sent == 0 and world.sim.last_weights_block(world.validator_hotkey) is None
    row = v.store.last_weights(successful=False)
    assert row.state == "failed" and row.message.startswith(reason) and reason in caplog.text
    world.sim.advance(1)
    assert v.epoch().weights == "retry_later" and v.chain.sent == 0


def test_standing_refusal_is_pure():
    me = Neuron(
        uid=3, hotkey="v", coldkey="c", stake=10.0, validator_permit=True, incentive=0.0, emission=0.0, last_update=0
    )
    assert standing_refusal(me, 10.0) is None
    assert standing_refusal(None, 0.0)[0] == "not_registered"
    assert standing_refusal(Neuron(**{**me.__dict__, "validator_permit": False}), 0.0)[0] == "no_permit"
    assert standing_refusal(me, 10.5)[0] == "low_stake"
