"""Many validators, one contest: four honest validators on one SimChain set the same weights after every slot.

Each validator has its own wallet, stake, permit, store and in-process pod, and runs as a real
``python -m validator run`` process. Their heads are staggered inside each slot; the marginal challenger's
verdict depends on the seed (its KL gain over strong sits next to epsilon); one validator is SIGKILLed in the
middle of a round and restarted; one misses a slot and catches up; one joins with an empty store while the
king is strong and marginal (lower KL than strong, inside the margin) is around: a validator seeding from its
own head or crowning from its own empty history would split from the others here (LESSONS 31).
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from scripts.demo import (
    DEMO_RULES,
    ROOT,
    Demo,
    Entry,
    _spawn,
    chain,
    child_env,
    miner_commit,
    publish,
    reset,
    stop,
    to_next_slot,
    validator_argv,
    wallets,
)
from scripts.demo_cast import Recipe, build_cast
from scripts.demo_report import chain_weights, slot_records

RECIPE = Recipe(rules=dict(DEMO_RULES))  # the demo's cast, cached under state/test-cast
CAST = (
    Entry("strong", "strong", "alice/strong", 1, via_chain=True),
    Entry("weak", "weak", "bob/weak", 1, via_chain=True),
    Entry("marginal", "marginal", "heidi/marginal", 2, via_chain=True),
    Entry("better", "better", "grace/better", 3, via_chain=True),
)
A, B, C, D = "validator", "validator-2", "validator-3", "validator-4"


@pytest.fixture(scope="module")
def cast_dirs() -> dict[str, Path]:
    return build_cast(RECIPE, ROOT / "state" / "test-cast", lambda _m: None, sorted({e.model for e in CAST}))


def _once(d: Demo, name: str) -> None:
    """One ``validator run --once`` with its in-process pod; the chain moves one block after it."""
    argv = [sys.executable, *validator_argv(d, "--once", name=name, local_pod=True)]
    out = subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{name}: {out.stdout[-2000:]}{out.stderr[-3000:]}"
    d.sim.advance(1)


def _commit(d: Demo, epoch: int) -> int:
    for e in (e for e in d.cast if e.epoch == epoch):
        miner_commit(d, e)
    return to_next_slot(d)


def _rounds(d: Demo, name: str, where: str = "1") -> list[tuple]:
    with closing(sqlite3.connect(f"file:{d.db_of(name)}?mode=ro", uri=True)) as conn:
        return conn.execute(f"SELECT id, slot, state, block, block_hash FROM rounds WHERE {where}").fetchall()


def _kings(d: Demo, names: list[str]) -> dict[str, dict[int, str | None]]:
    return {n: {r["slot"]: r["king_hotkey"] for r in slot_records(d, n) if r["state"] != "open"} for n in names}


def _agree(d: Demo, names: list[str], slot: int) -> str:
    """All ``names`` crowned one king after ``slot`` and the chain holds one weight vector for them; returns it."""
    kings = _kings(d, names)
    after = {n: kings[n].get(slot) for n in names}
    assert len(set(after.values())) == 1 and None not in after.values(), after
    weights = {n: chain_weights(d, n) for n in names}
    assert len({repr(w) for w in weights.values()}) == 1 and weights[names[0]] is not None, weights
    king = next(iter(after.values()))
    assert king is not None
    return king


def _gain(d: Demo, name: str, slot: int, challenger: str, king: str) -> float:
    """The challenger's relative KL gain over the king in ``name``'s round of ``slot``."""
    with closing(sqlite3.connect(f"file:{d.db_of(name)}?mode=ro", uri=True)) as conn:
        kl = dict(
            conn.execute(
                "SELECT e.hotkey, e.mean_kl FROM evaluations e JOIN rounds r ON r.id = e.round_id WHERE r.slot = ?",
                (slot,),
            ).fetchall()
        )
    return 1 - kl[challenger] / kl[king]


def _kill_mid_round(d: Demo, name: str) -> None:
    """Run ``name``'s loop until its round is on the pod, then SIGKILL it (no cleanup, no final write)."""
    d.procs[name] = _spawn(d, name, validator_argv(d, name=name, local_pod=True))
    deadline = time.monotonic() + 300
    while not (d.db_of(name).exists() and _rounds(d, name, "state = 'dispatched'")):
        assert d.procs[name].poll() is None, (d.state / "logs" / f"{name}.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the round never started"
        time.sleep(0.05)
    stop(d, name, signal.SIGKILL)  # the job is on its in-process pod now


@pytest.mark.slow
def test_four_validators_set_the_same_weights_after_every_slot(tmp_path, cast_dirs):
    d = Demo(tmp_path / "demo", RECIPE, cast=CAST, validators=4, log=lambda _m: None, dirs=dict(cast_dirs))
    d.overrides = {"epsilon": 0.07}  # marginal's gain over strong moves across 7% from one seed to the next
    d.state.mkdir(parents=True)
    reset(d)
    publish(d)
    wallets(d)
    chain(d)
    d.sim.set_finality_lag(1)  # seeds are read only once their block is final; heads run ahead of it
    try:
        # slot s1: strong and weak. A crowns with no history and no consensus; B and C adopt A's king and judge
        s1 = _commit(d, 1)
        d.sim.advance(1)
        for name in (A, B, C):
            _once(d, name)
        strong = _agree(d, [A, B, C], s1)
        assert strong == d.hotkeys["strong"]

        # slot s2: marginal challenges. B dies mid-round and resumes; C misses the slot; D joins with no store.
        # Marginal enters slot 4: on its seed marginal's KL gain over strong is 5.1%, short of epsilon (7%); on
        # slot 3's seed it would have been 8.1% and won (docs/benchmarks.md lists the gain per seed).
        d.sim.advance(5)
        s2 = _commit(d, 2)
        assert s2 == 4
        d.sim.advance(1)
        _once(d, A)
        _kill_mid_round(d, B)
        assert _rounds(d, B, "state = 'dispatched'"), "the kill came before the round started"
        _once(d, B)  # resumes the same job
        _once(d, D)
        king2 = _agree(d, [A, B, D], s2)
        assert king2 == strong, "marginal is inside the margin on this slot's seed: nobody may crown it"
        gain = _gain(d, A, s2, d.hotkeys["marginal"], strong)
        assert 0 < gain < d.overrides["epsilon"], gain  # a lower KL than strong, within the margin
        assert _kings(d, [C])[C].get(s2) is None  # C has not seen slot s2 yet

        # slot s3: better challenges. C catches up s2 then s3, everyone judges s3
        s3 = _commit(d, 3)
        d.sim.advance(1)
        for name in (A, B, C, D):
            _once(d, name)
        assert _agree(d, [A, B, C, D], s3) == d.hotkeys["better"]
        assert _kings(d, [C])[C][s2] == strong  # caught up with the others' king of slot s2

        # every round of a slot is seeded by the final hash of the slot's first block, for everyone
        rules = d.rules
        for name in (A, B, C, D):
            done = _rounds(d, name, "state = 'done'")
            assert len({r[1] for r in done}) == len(done), f"{name} judged a slot twice"
            for _, slot, _, block, block_hash in done:
                assert block == slot * rules["round_interval_blocks"] and block_hash == d.sim.block_hash(block)
        seeds = {name: {r[1]: r[4] for r in _rounds(d, name, "state = 'done'")} for name in (A, B, C, D)}
        assert seeds[A][s2] == seeds[B][s2] == seeds[C][s2] == seeds[D][s2]
        with closing(sqlite3.connect(f"file:{d.db_of(D)}?mode=ro", uri=True)) as conn:
            reasons = [r[0] for r in conn.execute("SELECT reason FROM king_history ORDER BY id")]
        assert reasons[0].startswith("adopted the chain's consensus king")
    finally:
        for name in list(d.procs):
            stop(d, name)
        d.sim.close()
