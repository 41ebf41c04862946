"""End to end: the demo's cast through the real processes (miner CLI, pod over HTTP, validator, API).

Both of the demo's epochs run: the first crowns strong among a loser, copies and an inadmissible repo;
in the second, better dethrones it, marginal (better by less than epsilon) does not, and the looper (better
than strong on KL, but its own greedy text loops) is stopped by the on-policy guard.

The models are built once and cached (keyed by the recipe hash) under
``state/test-cast``; each test gets a fresh chain, hub, store and wallets.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.demo import (
    DEMO_RULES,
    Demo,
    Entry,
    _spawn,
    _wait_http,
    chain,
    contest,
    miner_commit,
    publish,
    reset,
    start_api,
    start_pod,
    start_pods,
    stop,
    to_next_slot,
    validator_argv,
    wallets,
)
from scripts.demo_cast import Recipe, build_cast
from scripts.demo_report import api_get, chain_weights, check_outcome, check_outcomes

ROOT = Path(__file__).resolve().parents[1]

# The demo's own recipe and rules: the same cast, committed in the same order on a SimChain with the same seed,
# so the same rounds as `scripts/demo.sh --once` (marginal: lower KL than strong by less than epsilon at a
# fingerprint distance above the functional-copy threshold; looper: lower KL than strong, its own text loops).
RULES: dict[str, Any] = dict(DEMO_RULES)
RECIPE = Recipe(rules=RULES)
# The demo's first epoch: strong is king, the rest lose or are disqualified
EPOCH1 = (
    Entry("strong", "strong", "alice/strong", 1, outcome="king"),
    Entry("weak", "weak", "bob/weak", 1, outcome="loses"),
    Entry("copy", "strong", "carol/strong-copy", 1, outcome="COPY:metadata_hash"),
    Entry("resharded", "resharded", "dave/resharded", 1, outcome="COPY:content_hash"),
    Entry("perturbed", "perturbed", "erin/perturbed", 1, outcome="FUNCTIONAL_COPY"),
    Entry("invalid", "invalid", "frank/with-code", 1, via_chain=True, outcome="INVALID"),
)
# ...and its second: a better student dethrones strong, one better by less than epsilon does not
CAST = (
    replace(EPOCH1[0], outcome="dethroned"),
    *EPOCH1[1:],
    Entry("better", "better", "grace/better", 2, outcome="king"),
    Entry("marginal", "marginal", "heidi/marginal", 2, outcome="marginal"),
    Entry("looper", "looper", "ivan/looper", 2, outcome="guarded"),
)
DQS = {"copy": "COPY", "resharded": "COPY", "perturbed": "FUNCTIONAL_COPY", "invalid": "INVALID"}


@pytest.fixture(scope="session")
def cast_dirs() -> dict[str, Path]:
    names = sorted({e.model for e in CAST})
    return build_cast(RECIPE, ROOT / "state" / "test-cast", lambda _m: None, names)


def _demo(tmp_path: Path, dirs: dict[str, Path], cast: tuple[Entry, ...], validators: int = 2) -> Demo:
    d = Demo(tmp_path / "demo", RECIPE, cast=cast, validators=validators, log=lambda _m: None, dirs=dict(dirs))
    d.state.mkdir(parents=True)
    reset(d)
    publish(d)
    wallets(d)
    chain(d)
    return d


def _assert_outcome(d: Demo, king: str) -> None:
    """The contest's outcome, read through the API, and the weights read from the chain, as the demo checks them."""
    scores = api_get(d, "/api/scores")
    failed, report = check_outcomes(d, scores, api_get(d, "/api/disqualifications"))
    assert failed == 0, "\n".join(report)
    dqs = {q["hotkey"]: q["reason"] for q in api_get(d, "/api/disqualifications")["items"]}
    assert dqs == {d.hotkeys[name]: reason for name, reason in DQS.items()}
    assert scores["king"]["hotkey"] == d.hotkeys[king]


def _assert_store_intact(d: Demo) -> None:
    with sqlite3.connect(f"file:{d.db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        dup = conn.execute(
            "SELECT e.hotkey, e.commit_block, COUNT(*) FROM evaluations e JOIN rounds r ON r.id = e.round_id "
            "WHERE r.state = 'done' AND NOT (e.hotkey IS r.king_hotkey AND e.commit_block IS r.king_block) "
            "GROUP BY e.hotkey, e.commit_block HAVING COUNT(*) > 1"
        ).fetchall()
        assert dup == [], f"challenged more than once: {dup}"  # the king of a round is re-scored in it, by design


@pytest.mark.slow
def test_contest_settles(tmp_path, cast_dirs):
    """Two epochs of the demo's cast: strong is crowned among copies and losers, then better dethrones it."""
    d = _demo(tmp_path, cast_dirs, CAST)
    try:
        start_pods(d)
        contest(d)  # per epoch: miner.py commit subprocesses, then `python -m validator run --once` per validator
        start_api(d)
        _assert_outcome(d, "better")
        names = {hk: name for name, hk in d.hotkeys.items()}
        changes = api_get(d, "/api/history")["changes"]
        assert [names.get(c["hotkey"]) for c in changes] == ["strong", "better"], changes  # crowned, then dethroned
        assert changes[1]["round_id"] > changes[0]["round_id"]
        _assert_store_intact(d)
    finally:
        for name in list(d.procs):
            stop(d, name)
        d.sim.close()


def _settled(d: Demo) -> bool:
    try:
        scores = api_get(d, "/api/scores")
    except Exception:  # the API may be between polls of a store that does not exist yet
        return False
    king = scores.get("king")
    return bool(king) and king["hotkey"] == d.hotkeys["strong"] and chain_weights(d) is not None


def _pod_busy(d: Demo) -> bool:
    try:
        return bool(httpx.get(f"{d.pod_url}/health", timeout=2).json()["state"] == "busy")
    except (httpx.HTTPError, ValueError, KeyError):
        return False


def _wait_until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_kill_and_settle(tmp_path, cast_dirs):
    """SIGKILL the validator loop and the pod at random moments; the contest settles the same way.

    The first two kills (pod, then validator) wait until the pod is evaluating a job, then a random delay, so
    each dies mid-round at least once; the rest fall at random moments of any phase. The seed is printed.
    """
    seed = random.randrange(2**32)
    print(f"kill schedule seed {seed}")
    rng = random.Random(seed)
    d = _demo(tmp_path, cast_dirs, EPOCH1, validators=1)
    port = 0
    mid_round: list[str] = []
    try:
        start_pod(d)
        port = int(d.pod_url.rsplit(":", 1)[1])
        for e in EPOCH1:
            miner_commit(d, e)
        to_next_slot(d)  # the slot these commitments entered has begun: its round is due
        d.procs["validator"] = _spawn(d, "validator", validator_argv(d))
        for i, victim in enumerate(("pod", "validator", "validator", "pod", "validator")):
            if i < 2:  # a killed pod loses its job, so the restarted validator's resubmission makes it busy again
                assert _wait_until(lambda: _pod_busy(d), 120), f"the pod never got a job before killing the {victim}"
                time.sleep(rng.uniform(0.0, 0.8))
            else:
                time.sleep(rng.uniform(0.2, 5.0))
            if _pod_busy(d):
                mid_round.append(victim)
            d.sim.advance(1)
            stop(d, victim, signal.SIGKILL)
            if victim == "pod":
                start_pod(d, port)
            else:
                d.procs["validator"] = _spawn(d, "validator", validator_argv(d))
        assert {"validator", "pod"} <= set(mid_round), f"not both killed mid-round: {mid_round} (seed {seed})"
        start_api(d)
        deadline = time.monotonic() + 180
        while not _settled(d):
            assert time.monotonic() < deadline, (d.state / "logs" / "validator.log").read_text()[-3000:]
            assert d.procs["validator"].poll() is None, "validator exited"
            d.sim.advance(1)
            time.sleep(1.0)
        stop(d, "validator", signal.SIGTERM)
        _assert_outcome(d, "strong")
        _assert_store_intact(d)
    finally:
        for name in list(d.procs):
            stop(d, name)
        d.sim.close()


def test_check_outcome_reports_what_differs(tmp_path):
    """The demo's expectation check names the difference (a check that passes everything proves nothing)."""
    d = Demo(tmp_path, RECIPE, cast=EPOCH1, hotkeys={e.name: f"hk-{e.name}" for e in EPOCH1})
    ev = [
        {"hotkey": "hk-strong", "round_id": 1, "state": "won", "mean_kl": 0.04},
        {"hotkey": "hk-weak", "round_id": 1, "state": "lost", "mean_kl": 0.9},
    ]
    scores = {"king": {"hotkey": "hk-strong"}, "evaluations": ev}
    copy_dq = {"reason": "COPY", "check": "metadata_hash", "evidence": {"copy_of": {"hotkey": "hk-strong"}}}
    dqs = {"hk-copy": copy_dq, "hk-resharded": {**copy_dq, "check": "content_hash"}}
    entry = {e.name: e for e in EPOCH1}
    for name in ("strong", "weak", "copy", "resharded"):
        assert check_outcome(d, entry[name], scores, dqs, {}) is None, name
    # a re-shard caught only by the metadata hash, a copy attributed to the wrong original, a weak king,
    # an inadmissible model that was evaluated: each is reported
    wrong = {"hk-resharded": copy_dq, "hk-copy": {**copy_dq, "evidence": {"copy_of": {"hotkey": "hk-weak"}}}}
    assert "metadata_hash" in (check_outcome(d, entry["resharded"], scores, wrong, {}) or "")
    assert "not of strong" in (check_outcome(d, entry["copy"], scores, wrong, {}) or "")
    flipped = {"king": {"hotkey": "hk-weak"}, "evaluations": ev}
    assert "the king is hk-weak" in (check_outcome(d, entry["strong"], flipped, dqs, {}) or "")
    assert check_outcome(d, entry["weak"], {**scores, "evaluations": ev[::-1][:1]}, dqs, {}) is not None
    assert check_outcome(d, entry["invalid"], scores, dqs, {}) == "state not evaluated"
    # a looper the on-policy guard let through, or stopped without saying why, is reported
    looper = Entry("looper", "looper", "ivan/looper", 2, outcome="guarded")
    d.hotkeys["looper"] = "hk-looper"
    for state, reason in (("won", "challenger KL 0.02 beats king KL 0.04"), ("onpolicy_stopped", None)):
        row = {"hotkey": "hk-looper", "round_id": 2, "state": state, "mean_kl": 0.02, "reason": reason}
        assert check_outcome(d, looper, {**scores, "evaluations": [*ev, row]}, dqs, {}) == f"state {state}"


def test_wait_http_reports_a_dead_process(tmp_path):
    """The driver's readiness wait fails fast with a clear message when the service died."""
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(RuntimeError, match="exited with status 3"):
        _wait_http("http://127.0.0.1:9/health", proc, "the pod service", timeout=5)
