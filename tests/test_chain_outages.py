"""Chain outages at every chain step of an epoch, through the real adapter and the loop.

The validator runs on ``SubtensorChain`` over a stand-in SDK client that answers from a SimChain
(tests/subtensor_fakes.py). At each step (block number, neurons, commitments, block hash, set
weights, confirm) it meets each failure the SDK can really raise there: a node error turned into
``bt.ChainError`` by the SDK's own translator, the 429 ``RpcPolicyError``, a lost connection
(``bt.RpcConnectionError``, ``ConnectionResetError``) and a timeout (``asyncio.TimeoutError``, which
is the built-in ``TimeoutError`` on the Python versions we support; the 3.10 class is tested in
tests/test_chain_subtensor.py).
Each time the step must end with a logged, typed reason and the loop must go on; once the chain
is back, the contest ends exactly where an undisturbed one does: nothing disqualified, nothing
lost, nothing evaluated twice.
"""

from __future__ import annotations

import logging

import bittensor as bt
import pytest
from bittensor._transport.errors import SubstrateRequestException
from bittensor.result import chain_error_from_substrate_request
from fixtures_contest import FakePod, make_validator, seed
from subtensor_fakes import SimClient

from validator.chain.subtensor import SubtensorChain

STEPS = {  # step -> the SDK call it makes first in an epoch
    "block number": "block",
    "neurons": "metagraph",
    "commitments": "commitments",
    "block hash": "block_hash",
    "set weights": "execute",
    "confirm": "query:Weights",
}


def _node_error() -> Exception:
    payload = {"error": {"code": -32603, "message": "Internal error", "data": "the node is syncing"}}
    return chain_error_from_substrate_request(SubstrateRequestException(payload))


FAILURES = {  # name -> (exception factory, raises in a row (reads retry a lost connection once), typed reason)
    "node error": (_node_error, 1, "ChainError"),
    "rate limited": (
        lambda: bt.RpcPolicyError("RPC endpoint rate limited this source (HTTP 429)", status_code=429, retry_after="1"),
        1,
        "ChainThrottled",
    ),
    "connection lost": (
        lambda: bt.RpcConnectionError("RPC request failed after exhausting endpoint retries"),
        2,
        "ChainUnavailable",
    ),
    "socket reset": (lambda: ConnectionResetError(104, "Connection reset by peer"), 2, "ChainUnavailable"),
    "timeout": (lambda: TimeoutError("asyncio.wait_for gave up"), 1, "ChainUnavailable"),  # asyncio's, on 3.11+
}


def _state(store) -> tuple:
    king = store.current_king()
    evals = store._db.execute("SELECT hotkey, commit_block, COUNT(*) FROM evaluations GROUP BY 1, 2").fetchall()
    statuses = store._db.execute("SELECT status FROM submissions").fetchall()
    return (
        king.hotkey if king else None,
        sorted(tuple(e) for e in evals),
        sorted(s[0] for s in statuses),
        store.last_weights(confirmed=True) is not None,
        store.disqualifications(),
    )


@pytest.mark.parametrize("failure", list(FAILURES))
@pytest.mark.parametrize("step", list(STEPS))
def test_an_outage_at_any_step_ends_that_step_and_the_loop_goes_on(world, caplog, step, failure):
    seed(world, ("m1", "alice/m1"))
    faults: dict[str, list[BaseException]] = {}
    calls: list[str] = []
    chain = SubtensorChain(
        "local", 1, world.wallet, timeout=2.0, client_factory=lambda n: SimClient(world.sim, faults=faults, calls=calls)
    )
    v = make_validator(world, FakePod({"alice/m1": 0.5}), chain=chain, weights_retry_blocks=2)
    make, times, typed = FAILURES[failure]
    faults[STEPS[step]] = [make() for _ in range(1 if step == "set weights" else times)]  # writes are never resent
    caplog.set_level(logging.WARNING)
    try:
        code = v.run(once=True)  # the faulted epoch: it may abort, it must not raise
        assert faults[STEPS[step]] == []  # the fault was met where it was meant to be
        aborted = step in ("block number", "neurons", "commitments", "block hash")
        assert code == (1 if aborted else 0)
        words = "rejected" if (step, failure) == ("set weights", "node error") else typed
        assert any(words in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING), caplog.text
        if failure == "rate limited":
            assert calls.count(STEPS[step]) == 1  # the 429 is not answered by asking again at once
        assert v.store.disqualifications() == []
        for _ in range(6):  # the chain is back: the contest settles as if nothing happened
            world.sim.advance(3)
            assert v.run(once=True) == 0
        assert _state(v.store) == (
            world.miners["m1"],
            [(world.miners["m1"], world.sim.commitments()[world.miners["m1"]].block, 1)],
            ["evaluated"],
            True,
            [],
        )
    finally:
        chain.close()
        v.store.close()


def test_a_lost_answer_to_a_write_that_landed_is_not_a_failure(world):
    """The extrinsic went in, the websocket died before the answer: settled by reading LastUpdate, not resent."""
    seed(world, ("m1", "alice/m1"))
    calls: list[str] = []
    lose = {"execute"}
    chain = SubtensorChain(
        "local",
        1,
        world.wallet,
        timeout=2.0,
        client_factory=lambda n: SimClient(world.sim, lose_answer=lose, calls=calls),
    )
    v = make_validator(world, FakePod({"alice/m1": 0.5}), chain=chain)
    try:
        assert v.epoch().weights == "set" and calls.count("execute") == 1
        assert v.store.last_weights(confirmed=True).message.endswith("(the answer was lost, but LastUpdate moved).")
    finally:
        chain.close()
        v.store.close()
