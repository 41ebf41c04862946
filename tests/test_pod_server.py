"""The pod service on loopback: signed calls, every refusal class, idempotency, queue, cancel, restart."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import time
from pathlib import Path

import httpx
import pytest
from bittensor import http_auth
from fastapi.testclient import TestClient

from scripts.pod_fixtures import make_job, make_wallet
from tests.pod_helpers import ScriptedRunner, serve
from validator.pod.jobs import JobManager
from validator.pod.server import create_app, json_too_deep
from validator.pod.settings import PodSettings


@pytest.fixture(scope="module")
def wallets(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("wallets")
    return make_wallet(root, "validator"), make_wallet(root, "stranger")


def settings(tmp_path: Path, wallets, **kw) -> PodSettings:
    return PodSettings(allow_hotkeys=frozenset({wallets[0].hotkey.ss58_address}), workdir=tmp_path, **kw)


def signed(client: httpx.Client, wallet, method: str, path: str, body: bytes = b"", **sign_kw) -> httpx.Response:
    headers = http_auth.sign(wallet, method=method, path=path, body=body, **sign_kw)
    return client.request(method, path, content=body, headers=headers)


def wait_state(client, wallet, job_id: str, states: tuple[str, ...], timeout: float = 20.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        data = signed(client, wallet, "GET", f"/jobs/{job_id}").json()
        if data["state"] in states:
            return data
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}")


@pytest.fixture
def pod(tmp_path, wallets):
    runner = ScriptedRunner(seconds=0.2)
    app = create_app(settings(tmp_path, wallets, max_queued=2), runner=runner)
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client, runner


def test_signed_job_runs_and_reports_result(pod, wallets):
    client, runner = pod
    job = make_job("ok-1")
    resp = signed(client, wallets[0], "POST", "/jobs", job.model_dump_json().encode())
    assert resp.status_code == 202, resp.text
    data = wait_state(client, wallets[0], "ok-1", ("done",))
    assert data["result"]["job_id"] == "ok-1"
    assert [m["ref"]["repo"] for m in data["result"]["models"]] == ["miner/king", "miner/c0"]
    assert runner.calls == ["ok-1"]
    health = client.get("/health").json()
    assert set(health) == {"version", "state", "queued", "gpu", "free_disk_bytes", "kernels", "kernel_warning"}


def test_refusal_classes(pod, wallets):
    client, runner = pod
    validator, stranger = wallets
    body = make_job("r-1").model_dump_json().encode()
    # unsigned
    assert client.post("/jobs", content=body).status_code == 401
    # malformed signature header
    h = http_auth.sign(validator, method="POST", path="/jobs", body=body)
    h[http_auth.HEADER_SIGNATURE] = "0xzz"
    assert client.post("/jobs", content=body, headers=h).status_code == 401
    # stale nonce
    old = time.time_ns() - 120 * 10**9
    assert signed(client, validator, "POST", "/jobs", body, nonce_ns=old).status_code == 401
    # tampered body (signature over another body)
    h = http_auth.sign(validator, method="POST", path="/jobs", body=body)
    assert client.post("/jobs", content=body.replace(b"r-1", b"r-2"), headers=h).status_code == 401
    # signed for another path
    h = http_auth.sign(validator, method="POST", path="/other", body=body)
    assert client.post("/jobs", content=body, headers=h).status_code == 401
    # valid signature, hotkey not allow-listed
    resp = signed(client, stranger, "POST", "/jobs", body)
    assert resp.status_code == 403 and resp.json() == {"error": "hotkey not allowed"}
    assert signed(client, stranger, "GET", "/jobs/r-1").status_code == 403
    # nothing was done
    assert runner.calls == []
    assert signed(client, validator, "GET", "/jobs/r-1").status_code == 404


def test_replay_refused(pod, wallets):
    client, runner = pod
    body = make_job("rp-1").model_dump_json().encode()
    h = http_auth.sign(wallets[0], method="POST", path="/jobs", body=body)
    assert client.post("/jobs", content=body, headers=h).status_code == 202
    resp = client.post("/jobs", content=body, headers=h)
    assert resp.status_code == 401 and "Replayed" in resp.json()["error"]


@pytest.mark.parametrize("method", ["DELETE", "POST"])
def test_replay_after_restart_refused(tmp_path, wallets, method):
    """A request captured before a pod restart is refused when replayed to the new process (same workdir)."""
    validator = wallets[0]
    body = make_job("rr-1").model_dump_json().encode()
    path = "/jobs/rr-1" if method == "DELETE" else "/jobs"
    content = b"" if method == "DELETE" else body
    first = create_app(settings(tmp_path, wallets), runner=ScriptedRunner(seconds=30))
    with serve(first) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert signed(client, validator, "POST", "/jobs", body).status_code == 202
        captured = http_auth.sign(validator, method=method, path=path, body=content)
        assert client.request(method, path, content=content, headers=captured).status_code in (200, 202)
    second = create_app(settings(tmp_path, wallets), runner=ScriptedRunner())
    with serve(second) as url, httpx.Client(base_url=url, timeout=10) as client:
        resp = client.request(method, path, content=content, headers=captured)
        assert resp.status_code == 401 and "Replayed" in resp.json()["error"]
        # a freshly signed call from the same validator still works
        assert signed(client, validator, "GET", "/jobs/rr-1").status_code == 200


def test_corrupt_nonce_file_resets_instead_of_crash_looping_and_refuses_the_past(tmp_path, wallets):
    """A garbage nonces.sqlite3 is moved aside; the pod starts, fresh calls work, a call signed before is refused."""
    validator = wallets[0]
    first = create_app(settings(tmp_path, wallets), runner=ScriptedRunner())
    with serve(first) as url, httpx.Client(base_url=url, timeout=10) as client:
        captured = http_auth.sign(validator, method="GET", path="/jobs/none")
        assert client.get("/jobs/none", headers=captured).status_code == 404
    # the crash left garbage and no WAL; a new inode, as the old process's still-open connection here must not mask it
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00garbage after a disk-full crash" * 100)
    for side in ("nonces.sqlite3-wal", "nonces.sqlite3-shm"):
        (tmp_path / side).unlink(missing_ok=True)
    os.replace(garbage, tmp_path / "nonces.sqlite3")
    second = create_app(settings(tmp_path, wallets), runner=ScriptedRunner())
    assert list(tmp_path.glob("nonces.sqlite3.corrupt-*"))
    with serve(second) as url, httpx.Client(base_url=url, timeout=10) as client:
        resp = client.get("/jobs/none", headers=captured)
        assert resp.status_code == 401 and "Replayed" in resp.json()["error"]
        time.sleep(http_auth.DEFAULT_ALLOWED_SKEW)  # nonces up to the allowed skew ahead are refused after a reset
        assert signed(client, validator, "GET", "/jobs/none").status_code == 404  # authenticated, no such job


def test_bad_bodies(pod, wallets):
    client, runner = pod
    v = wallets[0]
    huge = b"x" * (100 * 1024**2)
    resp = client.post("/jobs", content=huge, headers=http_auth.sign(v, method="POST", path="/jobs", body=b""))
    assert resp.status_code == 413
    deep = b"[" * 5000 + b"]" * 5000
    assert signed(client, v, "POST", "/jobs", deep).status_code == 422
    job = json.loads(make_job("many").model_dump_json())
    job["challengers"] = [
        dict(job["challengers"][0], submission={"hotkey": job["king"]["submission"]["hotkey"], "commit_block": i})
        for i in range(10_000)
    ]
    assert signed(client, v, "POST", "/jobs", json.dumps(job).encode()).status_code == 422
    job = json.loads(make_job("badrev").model_dump_json())
    job["king"]["revision"] = "main"
    assert signed(client, v, "POST", "/jobs", json.dumps(job).encode()).status_code == 422
    assert signed(client, v, "POST", "/jobs", b"not json").status_code == 422
    assert runner.calls == []


def test_oversize_body_refused_without_reading_it(tmp_path, wallets):
    """A streamed (chunked) body is cut off at the limit: the server never buffers 100 MB."""
    app = create_app(settings(tmp_path, wallets, max_body_bytes=1024), runner=ScriptedRunner())
    with serve(app) as url:

        def chunks():
            for _ in range(100):
                yield b"x" * (1024**2)

        headers = http_auth.sign(wallets[0], method="POST", path="/jobs", body=b"")
        with httpx.Client(base_url=url, timeout=10) as client:
            try:
                resp = client.post("/jobs", content=chunks(), headers=headers)
                assert resp.status_code == 413
            except httpx.HTTPError:
                pass  # the server may close the connection before the client finished sending


def test_idempotent_and_conflict(pod, wallets):
    client, runner = pod
    job = make_job("id-1")
    body = job.model_dump_json().encode()
    assert signed(client, wallets[0], "POST", "/jobs", body).status_code == 202
    again = signed(client, wallets[0], "POST", "/jobs", body)
    assert again.status_code == 200 and again.json()["job_id"] == "id-1"
    other = make_job("id-1", prompts=["something else entirely"]).model_dump_json().encode()
    assert signed(client, wallets[0], "POST", "/jobs", other).status_code == 409
    wait_state(client, wallets[0], "id-1", ("done",))
    assert runner.calls == ["id-1"]


def test_queue_bound_and_cancel(tmp_path, wallets):
    runner = ScriptedRunner(seconds=30)
    app = create_app(settings(tmp_path, wallets, max_queued=1), runner=runner)
    v = wallets[0]
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        for job_id in ("q-1", "q-2"):
            assert signed(client, v, "POST", "/jobs", make_job(job_id).model_dump_json().encode()).status_code == 202
            if job_id == "q-1":
                running = wait_state(client, v, "q-1", ("running",))
        assert signed(client, v, "POST", "/jobs", make_job("q-3").model_dump_json().encode()).status_code == 429
        assert signed(client, v, "DELETE", "/jobs/q-2").json()["state"] == "cancelled"
        running = wait_state(client, v, "q-1", ("running",))
        assert running["progress"]["phase"] == "student"
        signed(client, v, "DELETE", "/jobs/q-1")
        data = wait_state(client, v, "q-1", ("cancelled",), timeout=5)
        assert data["result"] is None
    assert runner.calls == ["q-1"]


def test_restart_reports_interrupted_then_resubmission_runs(tmp_path, wallets):
    job = make_job("rs-1")
    first = JobManager(tmp_path / "jobs", ScriptedRunner(seconds=30))
    first.start()
    first.submit(job)
    time.sleep(0.2)
    assert first.status("rs-1").state == "running"
    # simulate death: a new manager reads the same records without the old one finishing
    second = JobManager(tmp_path / "jobs", ScriptedRunner())
    status = second.status("rs-1")
    assert status.state == "interrupted" and status.result is None
    second.start()
    status, created = second.submit(job)
    assert created and status.state == "queued"
    end = time.monotonic() + 10
    while second.status("rs-1").state != "done" and time.monotonic() < end:
        time.sleep(0.02)
    assert second.status("rs-1").result is not None
    first.stop()
    second.stop()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_health_reports_kernels_and_a_cuda_fallback_is_logged_as_a_warning(tmp_path, wallets, device, caplog):
    if importlib.util.find_spec("fla") is not None:
        pytest.skip("fla-core is installed here: the message differs")
    app = create_app(settings(tmp_path, wallets, device=device), runner=ScriptedRunner(seconds=0.0))
    with caplog.at_level(logging.INFO, logger="validator.pod.server"), TestClient(app) as client:  # runs the lifespan
        health = client.get("/health").json()
    kernels = health["kernels"]
    assert kernels["device"] == device and kernels["full_attention"] == "sdpa"
    assert kernels["linear_attention"] == "torch-reference"  # tiny tests run transformers' reference code
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "kernel fallback" in r.message]
    assert any("kernels: device=" + device in r.message for r in caplog.records)
    if device == "cpu":  # the reference is what a CPU runs: nothing to warn about
        assert health["kernel_warning"] is None and not warnings
    else:  # a GPU pod on the reference path is a finding, in the log and on /health
        assert "fla-core" in health["kernel_warning"] and ".[gpu]" in health["kernel_warning"]
        assert len(warnings) == 1 and health["kernel_warning"] in warnings[0].message


def test_json_depth_check_ignores_brackets_in_strings():
    assert not json_too_deep(json.dumps({"a": "[[[[[[" * 100}).encode(), 4)
    assert json_too_deep(b'{"a":[[[[[1]]]]]}', 4)


def test_client_disconnect_does_not_kill_the_service(pod, wallets):
    client, _ = pod
    url = str(client.base_url)
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b'POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"job')
    assert client.get("/health").status_code == 200


def test_refusals_are_short_json_and_a_strangers_delete_cancels_nothing(pod, wallets):
    client, runner = pod
    validator, stranger = wallets
    body = make_job("sd-1").model_dump_json().encode()
    assert signed(client, validator, "POST", "/jobs", body).status_code == 202
    refusals = [
        client.post("/jobs", content=body),
        client.delete("/jobs/sd-1"),
        signed(client, stranger, "DELETE", "/jobs/sd-1"),
        signed(client, validator, "DELETE", "/jobs/sd-1", nonce_ns=time.time_ns() - 10**12),
    ]
    assert [r.status_code for r in refusals] == [401, 401, 403, 401]
    for r in refusals:
        assert r.headers["content-type"] == "application/json" and set(r.json()) == {"error"}
        assert len(r.content) < 300
    assert wait_state(client, validator, "sd-1", ("done",))["result"] is not None


def test_graceful_shutdown_marks_the_running_job_interrupted_not_cancelled(tmp_path):
    """A PM2/systemd restart stops the running job: the host must see "interrupted" (re-submit), not a cancel."""
    manager = JobManager(tmp_path / "jobs", ScriptedRunner(seconds=30))
    manager.start()
    manager.submit(make_job("gs-1"))
    end = time.monotonic() + 10
    while manager.status("gs-1").state != "running" and time.monotonic() < end:
        time.sleep(0.02)
    manager.stop()
    assert manager.status("gs-1").state == "interrupted"
    reloaded = JobManager(tmp_path / "jobs", ScriptedRunner())
    status = reloaded.status("gs-1")
    assert status.state == "interrupted" and status.result is None
    # a host cancel is still reported as a cancel
    manager = JobManager(tmp_path / "jobs2", ScriptedRunner(seconds=30))
    manager.start()
    manager.submit(make_job("gs-2"))
    while manager.status("gs-2").state != "running" and time.monotonic() < end + 10:
        time.sleep(0.02)
    manager.cancel("gs-2")
    while manager.status("gs-2").state == "running" and time.monotonic() < end + 20:
        time.sleep(0.02)
    manager.stop()
    assert manager.status("gs-2").state == "cancelled"


def test_progress_bars_only_on_a_terminal(tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert JobManager(tmp_path / "a", ScriptedRunner()).progress_bar is False
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert JobManager(tmp_path / "b", ScriptedRunner()).progress_bar is True


def test_get_shows_tokens_per_s_and_eta_while_a_real_student_is_scored(tmp_path, wallets):
    """The real runner (tiny models from a local hub) paused mid-student: GET reports rate and ETA."""
    import threading

    from eval.downloads import DiskLimits
    from eval.runner import run_job
    from scripts.pod_fixtures import build_hub, hub_job

    store, revs = build_hub(tmp_path / "hub")
    job = hub_job(
        revs,
        ["miner/king", "miner/c0"],
        "lp-1",
        prompts=["The river valley was", "A prime number is", "Farmers in the north"],
    )
    reached, release = threading.Event(), threading.Event()

    def runner(j, on_progress, should_cancel):
        def progress(p):
            on_progress(p)
            if p.phase == "student" and p.prompt == 1 and not reached.is_set():
                reached.set()
                release.wait(20)

        return run_job(
            j,
            store,
            tmp_path / "work",
            "cpu",
            on_progress=progress,
            should_cancel=should_cancel,
            limits=DiskLimits(min_free_bytes=0),
        )

    app = create_app(settings(tmp_path / "pod", wallets), runner=runner)
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert signed(client, wallets[0], "POST", "/jobs", job.model_dump_json().encode()).status_code == 202
        assert reached.wait(60)
        progress = signed(client, wallets[0], "GET", "/jobs/lp-1").json()["progress"]
        release.set()
        assert progress["phase"] == "student" and progress["model"] == job.models[0].spec
        assert (progress["prompt"], progress["prompt_count"]) == (1, 3)
        assert (progress["model_index"], progress["model_count"]) == (0, 2)
        assert progress["tokens_per_s"] > 0 and progress["eta_s"] > 0
        assert wait_state(client, wallets[0], "lp-1", ("done",), timeout=60)["result"] is not None
