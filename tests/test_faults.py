"""Faults: pods that die, stall or lie; model-store outages; chain refusals; SIGKILL; identity games."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures_contest import FakePod, hotkey, make_validator, seed

from eval.errors import TransientError
from validator.chain.port import ChainError, WeightsReceipt
from validator.pod_errors import PodDown, PodTimeout

REPO = Path(__file__).resolve().parents[1]


def _evals(store) -> list[tuple]:
    return store._db.execute("SELECT round_id, hotkey, commit_block FROM evaluations").fetchall()


def _status(store, name: str, world) -> str:
    return store.submission(world.miners[name])[0].status


# --- pods -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["down", "slow", "wrong_job", "wrong_revision", "missing_model"])
def test_pod_fault_fails_the_round_and_judges_nobody(world, fault):
    seed(world, ("m1", "alice/m1"), ("m2", "bob/m2"))
    pod = FakePod({"alice/m1": 0.5})
    v = make_validator(world, pod, pod_deadline_s=0.2)
    if fault == "down":
        pod.fail = PodDown("connection refused")
    elif fault == "slow":
        pod.fail = PodTimeout("job missed its 0s deadline")
    elif fault == "wrong_job":
        pod.mutate = lambda r: r.model_copy(update={"job_id": "someone-else"})
    elif fault == "wrong_revision":
        pod.mutate = lambda r: r.model_copy(
            update={
                "models": [
                    m.model_copy(update={"ref": m.ref.model_copy(update={"revision": "0" * 40})}) for m in r.models
                ]
            }
        )
    else:
        pod.mutate = lambda r: r.model_copy(update={"models": r.models[:1]})
    report = v.epoch()
    assert report.round_state == "failed" and report.weights == "no_king"
    assert _evals(v.store) == [] and v.store.current_king() is None
    assert {_status(v.store, n, world) for n in ("m1", "m2")} == {"admitted"}
    assert v.store.rounds().items[0].state == "failed"
    pod.fail, pod.mutate = None, None
    world.sim.advance(1)
    report = v.epoch()  # retried next epoch with a fresh job
    assert report.round_state == "done" and report.weights == "set"
    assert len(_evals(v.store)) == 2 and pod.calls[0].job_id != pod.calls[1].job_id
    assert v.store.current_king().hotkey == world.miners["m1"]


# --- model store ------------------------------------------------------------------------------------------
class FlakyStore:
    """The hub, answering 503 for the first ``failures`` listings."""

    def __init__(self, inner: Any, failures: int) -> None:
        self.inner, self.failures = inner, failures

    def files(self, repo: str, revision: str) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise TransientError("HTTP 503 from the hub")
        return self.inner.files(repo, revision)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_hub_outage_during_admission_defers_and_never_disqualifies(world):
    seed(world, ("m1", "alice/m1"))
    v = make_validator(world, FakePod())
    v.model_store = FlakyStore(world.hub, failures=2)
    report = v.epoch()
    assert [k.hotkey for k in report.admission.transient] == [world.miners["m1"]] and report.round_kind == "none"
    row = v.store.submission(world.miners["m1"])[0]
    assert row.status == "pending" and row.disqualifications == []
    assert row.admission.next_retry_block == report.block + 5
    assert v.epoch().admission.checks == 0  # not before its retry block: no hammering
    world.sim.advance(5)
    assert v.epoch().admission.transient  # second outage: backoff doubles
    assert v.store.submission(world.miners["m1"])[0].admission.next_retry_block >= world.sim.head().number + 10
    world.sim.advance(10)
    report = v.epoch()
    assert report.admission.admitted and report.round_state == "done"
    assert v.store.disqualifications() == []


# --- chain ------------------------------------------------------------------------------------------------
class RefusingChain:
    """The SimChain, but set_weights is refused or raises as scripted."""

    def __init__(self, inner: Any, script: list[Any]) -> None:
        self.inner, self.script, self.calls = inner, script, 0

    def set_weights(self, uids: list[int], weights: list[float]) -> WeightsReceipt:
        self.calls += 1
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, BaseException):
                raise step
            return step
        return self.inner.set_weights(uids, weights)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize(
    "failure",
    [
        WeightsReceipt(False, "rate limited", None, "rate_limited"),
        WeightsReceipt(False, "extrinsic failed", None, "not_confirmed"),
        TransientError("websocket dropped"),
        ChainError("bad weights"),
    ],
)
def test_failed_weights_are_recorded_and_retried_later_not_in_a_tight_loop(world, failure):
    seed(world, ("m1", "alice/m1"))
    v = make_validator(world, FakePod(), weights_retry_blocks=10)
    chain = RefusingChain(world.sim, [failure])
    v.chain = chain
    assert v.epoch().weights == "failed"
    attempt = v.store.last_weights(successful=False)
    assert attempt.success is False and attempt.message
    for _ in range(3):  # the loop keeps running epochs; no new attempt inside the retry window
        world.sim.advance(1)
        assert v.epoch().weights == "retry_later"
    assert chain.calls == 1
    world.sim.advance(10)
    assert v.epoch().weights == "set" and chain.calls == 2
    assert v.store.last_weights().confirmed is True
    world.sim.advance(1)
    assert v.epoch().weights == "not_due" and chain.calls == 2  # unchanged king, inside the interval


# --- identity -----------------------------------------------------------------------------------------------
def test_same_model_by_two_hotkeys_the_earlier_owns(world):
    seed(world, ("m1", "alice/m1"), ("m2", "alice/m1"))  # m2 commits m1's exact model later
    pod = FakePod()
    v = make_validator(world, pod)
    report = v.epoch()
    assert [k.hotkey for k in report.admission.copies] == [world.miners["m2"]]
    assert _status(v.store, "m2", world) == "disqualified"
    dq = v.store.disqualifications()[0]
    assert dq.reason == "COPY" and dq.evidence["copy_of"]["hotkey"] == world.miners["m1"]
    assert [m.submission.hotkey for m in pod.calls[0].models] == [world.miners["m1"]]
    assert v.store.current_king().hotkey == world.miners["m1"]


def test_later_copy_that_took_the_crown_loses_it_when_the_elder_is_admitted(world):
    seed(world, ("m1", "alice/m1"), ("m2", "alice/m1"))
    v = make_validator(world, FakePod())
    inner, calls = v.check, []

    def first_call_hits_an_outage(*args: Any, **kw: Any) -> Any:
        calls.append(args[1])
        if len(calls) == 1:  # m1 (oldest first) meets a 503; m2 goes through
            raise TransientError("HTTP 503")
        return inner(*args, **kw)

    v.check = first_call_hits_an_outage
    v.epoch()
    assert v.store.current_king().hotkey == world.miners["m2"]
    world.sim.advance(10)
    report = v.epoch()
    assert [k.hotkey for k in report.admission.admitted] == [world.miners["m1"]]
    assert _status(v.store, "m2", world) == "disqualified"
    assert report.round_kind == "coronation" and v.store.current_king().hotkey == world.miners["m1"]


def test_copy_of_the_king_under_another_repo_is_a_copy(world):
    src = next(p for p in (world.hub_root / "alice" / "m1").iterdir() if p.is_dir() and not p.name.startswith("."))
    rev = world.hub.publish("mallory/stolen", src)
    world.revs["mallory/stolen"] = rev
    seed(world, ("m1", "alice/m1"))
    v = make_validator(world, FakePod({"alice/m1": 0.5}))
    v.epoch()
    seed(world, ("m9", "mallory/stolen"))
    report = v.epoch()
    assert report.admission.copies and report.round_kind == "none"
    assert v.store.current_king().hotkey == world.miners["m1"]


def test_deleted_king_repo_leads_to_a_coronation(world):
    seed(world, ("m1", "alice/m1"), ("m2", "bob/m2"))
    v = make_validator(world, FakePod({"alice/m1": 0.5, "bob/m2": 0.7}), max_strikes=2)
    v.epoch()
    assert v.store.current_king().hotkey == world.miners["m1"]
    world.hub.delete("alice/m1")
    world.sim.advance(1)
    assert v.epoch().round_kind == "none"  # strike 1 of 2: the king keeps the crown for now
    world.sim.advance(1)
    report = v.epoch()
    assert _status(v.store, "m1", world) == "removed" and report.round_kind == "coronation"
    assert v.store.current_king().hotkey == world.miners["m2"]
    first, coronation = v.store.round(1), v.store.round(report.round_id)
    assert coronation.block_hash != first.block_hash  # fresh prompts, not the old round's scores
    assert set(coronation.prompt_sha256s) != set(first.prompt_sha256s)
    assert [e.round_id for e in v.store.submission(world.miners["m2"])[0].evaluations] == [1, report.round_id]
    assert any(d.reason == "REMOVED" for d in v.store.disqualifications())


def test_uid_recycling_inherits_nothing(world):
    seed(world, ("m1", "alice/m1"), ("m2", "bob/m2"))
    v = make_validator(world, FakePod({"alice/m1": 0.5}))
    v.epoch()
    uid = next(n.uid for n in world.sim.neurons() if n.hotkey == world.miners["m1"])
    world.sim.deregister(world.miners["m1"])
    assert world.register("newcomer") == uid  # the king's uid goes to a stranger
    world.sim.advance(10)
    report = v.epoch()
    assert report.round_kind == "coronation"  # the deregistered king cannot hold the crown
    assert v.store.current_king().hotkey == world.miners["m2"]
    assert v.store.submission(world.miners["newcomer"]) == []
    w = v.store.last_weights()
    assert dict(zip(w.uids, w.weights, strict=True))[uid] == 0.0


def _counting_check(v: Any) -> list[Any]:
    inner, seen = v.check, []

    def check(*args: Any, **kw: Any) -> Any:
        seen.append(args[1])
        return inner(*args, **kw)

    v.check = check
    return seen


def _live(store) -> dict[tuple, tuple]:
    rows = store._db.execute("SELECT hotkey, commit_block, repo, status FROM submissions WHERE status != 'ignored'")
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def test_king_recommit_withdraws_the_king_and_the_new_commitment_is_judged_on_its_own(world):
    seed(world, ("m1", "alice/m1"), ("m2", "bob/m2"))
    pod = FakePod({"alice/m1": 0.5, "bob/m2": 0.9, "carol/m3": 0.3})
    v = make_validator(world, pod)
    v.epoch()
    first_block = v.store.current_king().commit_block
    checks = _counting_check(v)
    new_block = world.commit("m1", "carol/m3", replace=True)  # the chain overwrites the first commitment
    world.sim.advance(10)
    report = v.epoch()
    assert report.withdrawn == 1 and report.new_submissions == 1 and checks == ["carol/m3"]
    assert report.round_kind == "coronation"  # a withdrawn king holds nothing (LESSONS 20)
    subs = v.store.submission(world.miners["m1"])
    assert [(s.commit_block, s.status) for s in subs] == [(first_block, "ignored"), (new_block, "evaluated")]
    assert subs[0].status_detail == f"withdrawn: replaced by the commitment at block {new_block}"
    assert len(subs[0].evaluations) == 1 and len(subs[1].evaluations) == 1  # one evaluation each, ever
    king = v.store.current_king()
    assert (king.hotkey, king.commit_block) == (world.miners["m1"], new_block)
    world.sim.advance(1)
    assert v.epoch().round_kind == "none" and len(pod.calls) == 2


def test_a_validator_started_after_a_recommit_agrees_with_one_that_watched_it(world, tmp_path):
    """The submission set comes from the chain alone, so history changes nothing that counts now."""
    from validator.chain.sim import SimChain

    kl = {"alice/m1": 0.5, "bob/m2": 0.9, "carol/m3": 0.3}
    seed(world, ("m1", "alice/m1"), ("m2", "bob/m2"))
    watcher = make_validator(world, FakePod(kl))
    watcher.epoch()  # m1's first model is king here
    world.commit("m1", "carol/m3", replace=True)
    seed(world, ("m3", "alice/m1"))  # m1's withdrawn weights, committed by someone else
    world.sim.advance(10)
    watcher.epoch()
    late_hotkey = hotkey("late-validator")
    world.sim.register(late_hotkey, hotkey("cold-late"), stake=1000.0, validator_permit=True)
    late_chain = SimChain(world.sim_db, 1, hotkey=late_hotkey)
    late = make_validator(world, FakePod(kl), db=tmp_path / "late.db", chain=late_chain)
    late.epoch()  # no history: it adopts the chain's consensus king (the watcher's) instead of judging anew
    assert {k: repo for k, (repo, _) in _live(watcher.store).items()} == {
        k: repo for k, (repo, _) in _live(late.store).items()
    }  # the same live submissions: m3 owns alice/m1 now, for both
    assert {status for _, status in _live(watcher.store).values()} == {"evaluated"}
    assert watcher.store.disqualifications() == late.store.disqualifications() == []
    assert late.store.king_history()[-1].reason.startswith("adopted the chain's consensus king")
    kings = [(s.current_king().hotkey, s.current_king().commit_block) for s in (watcher.store, late.store)]
    assert kings[0] == kings[1] == (world.miners["m1"], world.sim.commitments()[world.miners["m1"]].block)
    rewarded = [
        {u: x for u, x in zip(w.uids, w.weights, strict=True) if x}
        for w in (watcher.store.last_weights(), late.store.last_weights())
    ]
    assert rewarded[0] == rewarded[1] and len(rewarded[0]) == 1


def test_recommit_while_pending_replaces_the_pending_model(world):
    seed(world, ("m1", "alice/m1"))
    pod = FakePod()
    v = make_validator(world, pod)
    v.model_store = FlakyStore(world.hub, failures=1)
    assert v.epoch().admission.transient  # the first commitment waits for its retry
    first_block = v.store.submission(world.miners["m1"])[0].commit_block
    world.commit("m1", "bob/m2", replace=True)
    checks = _counting_check(v)
    world.sim.advance(20)
    report = v.epoch()
    assert report.round_state == "done" and checks == ["bob/m2"]
    subs = v.store.submission(world.miners["m1"])
    assert [s.status for s in subs] == ["ignored", "evaluated"] and subs[0].commit_block == first_block
    assert [m.repo for m in pod.calls[0].models] == ["bob/m2"]


# --- SIGKILL ------------------------------------------------------------------------------------------------
def test_sigkill_at_random_points_loses_nothing(tmp_path, world):
    seed(world, ("m1", "alice/m1"), ("m2", "bob/m2"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BT_", "KLHILL_"))}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [
        sys.executable,
        "-m",
        "validator",
        *world.cli_args("--local-pod", "--workdir", str(tmp_path / "lp"), "--once"),
    ]
    rng = random.Random(int(os.environ.get("KLHILL_FAULT_SEED", "7")))
    for _ in range(4):
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 9.0))
        proc.kill()
        proc.wait()
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    db = sqlite3.connect(world.db)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    dup = db.execute(
        "SELECT hotkey, commit_block, COUNT(*) FROM evaluations GROUP BY hotkey, commit_block HAVING COUNT(*) > 1"
    ).fetchall()
    assert dup == []
    assert db.execute("SELECT COUNT(*) FROM rounds WHERE state = 'done'").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM rounds WHERE state IN ('planned', 'dispatched')").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 2
    assert db.execute("SELECT COUNT(*) FROM king").fetchone()[0] == 1
    assert db.execute("SELECT COUNT(*) FROM weight_submissions WHERE success = 1").fetchone()[0] >= 1
