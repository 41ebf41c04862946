"""End to end: a reduced demo cast through the real processes (miner CLI, pod over HTTP, validator, API).

The models are built once and cached (keyed by the recipe hash) under
``state/test-cast``; each test gets a fresh chain, hub, store and wallets.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from demo import (  # noqa: E402
    NETUID,
    Demo,
    Entry,
    _spawn,
    _wait_http,
    api_get,
    chain,
    contest,
    miner_commit,
    publish,
    reset,
    start_api,
    start_pod,
    stop,
    validator_argv,
    wallets,
)
from demo_cast import Recipe, build_cast  # noqa: E402

pytestmark = pytest.mark.slow

RULES: dict[str, Any] = {
    "teacher_repo": "demo/teacher", "vocab_size": 512, "prompts_per_round": 8, "max_new_tokens": 12,
    "max_prompt_tokens": 64, "max_kl": 20.0, "epsilon": 0.1, "prompt_min_chars": 40, "prompt_max_chars": 400,
    "early_stop_min_prompts": 4, "max_challengers_per_round": 8, "max_queued_per_coldkey": 8,
}  # fmt: skip
RECIPE = Recipe(teacher_steps=30, strong_steps=30, weak_steps=2, prompts=32, rules=RULES)
CAST = (
    Entry("strong", "strong", "alice/strong", 1),
    Entry("weak", "weak", "bob/weak", 1),
    Entry("copy", "strong", "carol/strong-copy", 1),
    Entry("invalid", "invalid", "frank/with-code", 1, via_chain=True),
)


@pytest.fixture(scope="session")
def cast_dirs() -> dict[str, Path]:
    return build_cast(RECIPE, ROOT / "state" / "test-cast", lambda _m: None, ["strong", "weak", "invalid"])


def _demo(tmp_path: Path, dirs: dict[str, Path]) -> Demo:
    d = Demo(tmp_path / "demo", RECIPE, cast=CAST, log=lambda _m: None, dirs=dict(dirs))
    d.state.mkdir(parents=True)
    reset(d)
    publish(d)
    wallets(d)
    chain(d)
    return d


def _chain_weights(d: Demo) -> tuple[list[int], list[float]] | None:
    with sqlite3.connect(f"file:{d.sim_db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT uids, weights FROM weights WHERE netuid = ? AND hotkey = ?",
                           (NETUID, d.hotkeys["validator"])).fetchone()  # fmt: skip
    return (json.loads(row[0]), json.loads(row[1])) if row else None


def _uid(d: Demo, name: str) -> int:
    return next(n.uid for n in d.sim.neurons() if n.hotkey == d.hotkeys[name])


def _assert_outcome(d: Demo) -> None:
    """The contest's outcome, read through the API, and the weights read from the chain."""
    scores = api_get(d, "/api/scores")
    assert scores["king"] is not None and scores["king"]["hotkey"] == d.hotkeys["strong"], scores["king"]
    by_hotkey = {s["hotkey"]: s for s in scores["evaluations"]}
    assert by_hotkey[d.hotkeys["weak"]]["mean_kl"] > by_hotkey[d.hotkeys["strong"]]["mean_kl"]
    dqs = {q["hotkey"]: q for q in api_get(d, "/api/disqualifications")["items"]}
    assert dqs[d.hotkeys["copy"]]["reason"] == "COPY"
    assert dqs[d.hotkeys["copy"]]["evidence"]["copy_of"]["hotkey"] == d.hotkeys["strong"]
    assert dqs[d.hotkeys["invalid"]]["reason"] == "INVALID"
    assert set(dqs) == {d.hotkeys["copy"], d.hotkeys["invalid"]}
    uids, weights = _chain_weights(d) or ([], [])
    assert dict(zip(uids, weights, strict=True)).get(_uid(d, "strong")) == 1.0 and sum(weights) == 1.0


def _assert_store_intact(d: Demo) -> None:
    with sqlite3.connect(f"file:{d.db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        dup = conn.execute(
            "SELECT e.hotkey, e.commit_block, COUNT(*) FROM evaluations e JOIN rounds r ON r.id = e.round_id "
            "WHERE r.state = 'done' GROUP BY e.hotkey, e.commit_block HAVING COUNT(*) > 1"
        ).fetchall()
        assert dup == [], f"evaluated more than once: {dup}"


def test_contest_settles(tmp_path, cast_dirs):
    d = _demo(tmp_path, cast_dirs)
    try:
        start_pod(d)
        contest(d)  # miner.py commit subprocesses, then one `python -m validator run --once`
        start_api(d)
        _assert_outcome(d)
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
    return bool(king) and king["hotkey"] == d.hotkeys["strong"] and _chain_weights(d) is not None


def test_kill_and_settle(tmp_path, cast_dirs):
    """SIGKILL the validator loop and the pod at random moments; the contest settles the same way."""
    rng = random.Random(8)
    d = _demo(tmp_path, cast_dirs)
    port = 0
    try:
        start_pod(d)
        port = int(d.pod_url.rsplit(":", 1)[1])
        for e in CAST:
            miner_commit(d, e)
        d.procs["validator"] = _spawn(d, "validator", validator_argv(d))
        for victim in ("validator", "pod", "validator", "pod", "validator"):
            time.sleep(rng.uniform(0.5, 6.0))
            d.sim.advance(1)
            stop(d, victim, signal.SIGKILL)
            if victim == "pod":
                start_pod(d, port)
            else:
                d.procs["validator"] = _spawn(d, "validator", validator_argv(d))
        start_api(d)
        deadline = time.monotonic() + 180
        while not _settled(d):
            assert time.monotonic() < deadline, (d.state / "logs" / "validator.log").read_text()[-3000:]
            assert d.procs["validator"].poll() is None, "validator exited"
            d.sim.advance(1)
            time.sleep(1.0)
        stop(d, "validator", signal.SIGTERM)
        _assert_outcome(d)
        _assert_store_intact(d)
    finally:
        for name in list(d.procs):
            stop(d, name)
        d.sim.close()


def test_wait_http_reports_a_dead_process(tmp_path):
    """The driver's readiness wait fails fast with a clear message when the service died."""
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(RuntimeError, match="exited with status 3"):
        _wait_http("http://127.0.0.1:9/health", proc, "the pod service", timeout=5)
