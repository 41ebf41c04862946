"""The epoch loop: zero pod calls without challengers, resume of an open round, live progress, SIGTERM."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures_contest import FakePod, make_validator, make_world

from validator.chain.port import ChainThrottled, ChainUnavailable
from validator.loop import retry_delay
from validator.store.database import Store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def world(tmp_path, contest_hub):
    w = make_world(tmp_path, *contest_hub)
    for name, repo in [("m1", "alice/m1"), ("m2", "bob/m2")]:
        w.register(name)
        w.commit(name, repo)
    return w


def test_no_challenger_means_no_pod_call_and_no_weight_spam(world):
    pod = FakePod({"alice/m1": 0.4})
    v = make_validator(world, pod, weights_interval=50)
    assert v.epoch().weights == "set"
    for _ in range(5):
        world.sim.advance(6)  # past the rate limit, inside the refresh interval
        report = v.epoch()
        assert (report.round_kind, report.weights) == ("none", "not_due")
    assert len(pod.calls) == 1 and len(v.store._db.execute("SELECT * FROM weight_submissions").fetchall()) == 1
    world.sim.advance(30)
    assert v.epoch().weights == "set"  # refreshed every --weights-interval blocks


def test_job_identity_comes_from_the_chain(world):
    pod = FakePod()
    v = make_validator(world, pod)
    v.epoch()
    chain_blocks = {c.hotkey: c.block for c in world.sim.commitments().values()}
    job = pod.calls[0]
    assert {m.submission.hotkey: m.submission.commit_block for m in job.models} == chain_blocks
    assert job.block_hash == world.sim.block_hash(job.block)  # prompts seeded by the block HASH
    rnd = v.store.round(1)
    assert rnd.block_hash == job.block_hash and len(rnd.prompt_sha256s) == len(job.prompts)


def test_jobs_are_numbered_by_the_stores_round_count_not_the_apis_pages(world, monkeypatch):
    pod = FakePod()
    v = make_validator(world, pod)

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the loop counts rounds with its own query")

    monkeypatch.setattr(v.store, "rounds", refused)
    v.store.create_round("first", 1, "0x" + "0" * 64, ["e" * 64], v.rules, [], None)
    v.store.fail_round(1, "an earlier attempt")
    report = v.epoch()
    assert report.round_id == 2 and pod.calls[0].job_id.startswith("r2-")


class StoppingPod(FakePod):
    """Requests a stop while 'running', then hangs like a long job on a remote pod."""

    def __init__(self, validator_ref: list[Any]) -> None:
        super().__init__({"alice/m1": 0.4})
        self.ref = validator_ref

    def answer(self, job: Any, deadline_s: float) -> Any:
        self.calls.append(job)
        self.ref[0].request_stop()
        time.sleep(5)
        raise RuntimeError("never reached in the test")


def test_stopped_round_is_resumed_with_the_same_job(world):
    ref: list[Any] = []
    v = make_validator(world, StoppingPod(ref))
    ref.append(v)
    report = v.epoch()
    assert report.round_state == "abandoned" and report.weights == "not_due"
    first = v.pod.calls[0]
    assert [r.state for r in v.store.interrupted_rounds()] == ["dispatched"]
    v.store.close()
    world.sim.advance(3)
    pod = FakePod({"alice/m1": 0.4})
    v2 = make_validator(world, pod)
    report = v2.epoch()
    assert report.resumed == [(1, "done")] and report.weights == "set"
    again = pod.calls[0]
    assert again.job_id == first.job_id and again.prompts == first.prompts and again.block_hash == first.block_hash
    assert v2.store._db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 2
    world.sim.advance(1)
    assert v2.epoch().round_kind == "none" and len(pod.calls) == 1  # nothing evaluated twice


class ProgressPod(FakePod):
    """Reports progress through ``status``, as every pod does; waits until the host wrote it to the store."""

    def __init__(self, db: Path) -> None:
        super().__init__()
        self.db = db
        self.seen: Any = None

    def status(self, job_id: str) -> Any:
        from eval.schemas import JobProgress, JobStatus

        progress = JobProgress(phase="student", model_index=1, model_count=2, prompt=3, prompt_count=4)
        return JobStatus(job_id=job_id, state="running", progress=progress)

    def answer(self, job: Any, deadline_s: float) -> Any:
        reader = Store.open_readonly(self.db)
        end = time.monotonic() + 10
        while time.monotonic() < end and self.seen is None:
            p = reader.progress()
            if p and p.data.get("phase") == "running":
                self.seen = p.data
            time.sleep(0.05)
        reader.close()
        return super().answer(job, deadline_s)


def test_live_progress_is_written_while_the_pod_runs_and_cleared_after(world):
    pod = ProgressPod(world.db)
    v = make_validator(world, pod)
    assert v.epoch().round_state == "done"
    assert pod.seen is not None and pod.seen["progress"]["prompt"] == 3 and pod.seen["job_id"] == pod.calls[0].job_id
    assert v.store.progress() is None


def test_sigterm_stops_the_running_loop_cleanly(world, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BT_", "KLHILL_"))}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [
        sys.executable,
        "-m",
        "validator",
        *world.cli_args("--local-pod", "--workdir", str(tmp_path / "lp"), "--log-format", "json"),
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait for the first round to be recorded, then ask it to stop
        if world.db.exists():
            s = Store.open_readonly(world.db)
            try:
                done = s.rounds().total and s.last_weights() is not None
            except Exception:  # noqa: BLE001 - schema may not exist yet
                done = False
            s.close()
            if done:
                break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    bad = [line for line in err.splitlines() if line.strip() and not line.startswith("{")]
    assert bad == [], bad[:5]
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]  # JSON lines, nothing else
    msgs = [r["msg"] for r in lines]
    assert any("finishing the current step" in m for m in msgs) and msgs[-1] == "stopped"
    s = Store.open_readonly(world.db)
    assert s.integrity_ok() and s.interrupted_rounds() == [] and s.current_king() is not None


class CallLog:
    """The SimChain, recording which reads the loop makes (and raising from ``fail`` on block_number)."""

    def __init__(self, inner: Any, fail: list[BaseException] | None = None) -> None:
        self.inner, self.fail, self.calls = inner, fail or [], []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            self.calls.append(name)
            if name == "block_number" and self.fail:
                raise self.fail.pop(0)
            return attr(*args, **kw)

        return call


def test_block_hash_is_fetched_only_for_a_round_and_polls_read_the_number(world):
    v = make_validator(world, FakePod())
    v.chain = chain = CallLog(world.sim)
    v.epoch()  # a first round: its prompts need the slot's final block hash
    assert chain.calls.count("final_block_hash") == 1 and "head" not in chain.calls and "block_hash" not in chain.calls
    chain.calls.clear()
    world.sim.advance(1)
    assert v.epoch().round_kind == "none"  # nothing to run: the block itself is never fetched
    assert (
        "final_block_hash" not in chain.calls and "head" not in chain.calls and chain.calls.count("block_number") == 1
    )
    chain.calls.clear()
    v.config = dataclasses.replace(v.config, epoch_blocks=2, poll_seconds=0.01)
    target = world.sim.block_number() + 2

    class Advance(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            world.sim.advance(1)
            return False

    v.stop = Advance()
    v._sleep(target - 2)
    assert set(chain.calls) == {"block_number"} and world.sim.block_number() >= target


class Recorder(threading.Event):
    """Records what the loop waits for, and stops it at the first wait."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0))
        self.set()
        return True


def test_a_throttled_chain_aborts_the_epoch_and_the_loop_backs_off_as_asked(world, caplog):
    v = make_validator(world, FakePod(), poll_seconds=2.0)
    v.chain = CallLog(world.sim, [ChainThrottled("HTTP 429 from the RPC endpoint", retry_after_s=45.0)])
    v.stop = v.rounds.stop = Recorder()
    assert v.run() == 0
    assert v.stop.waits == [45.0] and v.chain.calls == ["block_number"]
    assert "epoch aborted (ChainThrottled" in caplog.text


@pytest.mark.parametrize(
    ("failures", "hint", "expected"),
    [
        (1, None, 12.0),
        (2, None, 24.0),
        (3, None, 48.0),
        (10, None, 600.0),
        (1, 90.0, 90.0),
        (4, 30.0, 96.0),
    ],
)
def test_retry_delay_doubles_up_to_a_cap_and_respects_retry_after(failures, hint, expected):
    exc = ChainThrottled("429", retry_after_s=hint) if hint is not None else ChainUnavailable("timed out")
    assert retry_delay(exc, failures, 12.0, 600.0) == expected
