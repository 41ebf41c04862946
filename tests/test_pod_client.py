"""The HTTP pod client against the real service: signed end to end, timeouts, a dead pod, SIGKILL restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from scripts.pod_fixtures import build_hub, free_port, hub_job, make_job, make_wallet, pod_args
from tests.pod_helpers import ScriptedRunner, scripted_pod, serve
from validator.pod.server import PodSettings, create_app
from validator.pod_client import HttpPod
from validator.pod_errors import PodDown, PodRejected, PodTimeout
from validator.pod_pool import PodPool

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wallets(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("wallets")
    return make_wallet(root, "validator"), make_wallet(root, "stranger")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    return build_hub(tmp_path_factory.mktemp("hub"))


# --- validate_result ------------------------------------------------------------
# --- HttpPod against the real service -------------------------------------------
def test_http_pod_runs_a_signed_job(tmp_path, wallets):
    with serve(scripted_pod(tmp_path, wallets)) as url:
        pod = HttpPod(url, wallets[0], poll_interval=0.02)
        job = make_job("h-1")
        assert pod.run(job, deadline_s=30).job_id == "h-1"
        assert pod.health()["state"] in ("idle", "busy")
        with pytest.raises(PodRejected):
            HttpPod(url, wallets[1], poll_interval=0.02).run(make_job("h-2"), deadline_s=30)


def test_pod_bound_to_its_hotkey_takes_the_host_jobs_named_for_it_and_no_others(tmp_path, wallets):
    """``--pod URL#HOTKEY``: jobs name their receiver; one signed for another pod is refused (no replay)."""
    from validator.__main__ import _pod
    from validator.settings import parse_args

    here, elsewhere = (make_wallet(tmp_path / "pods", n).hotkey.ss58_address for n in ("pod-a", "pod-b"))
    settings = PodSettings(
        allow_hotkeys=frozenset({wallets[0].hotkey.ss58_address}), workdir=tmp_path / "w", pod_hotkey=here
    )

    def host_pod(spec: str) -> HttpPod:
        pod, name = _pod(parse_args(["run", "--pod", spec], env={}), wallets[0], None)
        assert name == spec.partition("#")[0]
        pod.poll_interval = 0.02
        return pod

    with serve(create_app(settings, runner=ScriptedRunner(seconds=0.05))) as url:
        assert host_pod(f"{url}#{here}").run(make_job("bound-1"), deadline_s=30).job_id == "bound-1"
        for spec in (f"{url}#{elsewhere}", url):  # signed for the validator's other pod; signed for nobody
            with pytest.raises(PodRejected, match="401"):
                host_pod(spec).run(make_job("bound-2"), deadline_s=30)


def test_http_pod_deadline_cancels_on_the_pod(tmp_path, wallets):
    with serve(scripted_pod(tmp_path, wallets, seconds=30)) as url:
        pod = HttpPod(url, wallets[0], poll_interval=0.05)
        t0 = time.monotonic()
        with pytest.raises(PodTimeout):
            pod.run(make_job("t-1"), deadline_s=0.5)
        assert time.monotonic() - t0 < 5
        end = time.monotonic() + 5
        while pod.status("t-1").state != "cancelled" and time.monotonic() < end:
            time.sleep(0.05)
        assert pod.status("t-1").state == "cancelled"


def test_dead_pod_reported_down_and_pool_fails_over(tmp_path, wallets):
    dead = HttpPod(f"http://127.0.0.1:{free_port()}", wallets[0], retries=1, sleep=lambda s: None, timeout=2)
    with pytest.raises(PodDown):
        dead.run(make_job("d-1"), deadline_s=5)
    with serve(scripted_pod(tmp_path, wallets)) as url:
        live = HttpPod(url, wallets[0], poll_interval=0.02)
        result = PodPool([dead, live]).run(make_job("d-2"), deadline_s=30)
        assert result.job_id == "d-2"
    with pytest.raises(PodDown):
        PodPool([dead]).run(make_job("d-3"), deadline_s=5)


# --- the real service as a process: signed end to end, SIGKILL mid-job, restart --
def start_pod(workdir: Path, hub_root: Path, port: int, hotkey: str) -> subprocess.Popen:
    cmd = [sys.executable, *pod_args(port, hotkey, hub_root, workdir)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(proc.stderr.read().decode()[-2000:] if proc.stderr else "pod did not start")


@pytest.mark.slow
def test_sigkill_mid_job_then_restart_reports_interrupted_and_resubmission_completes(hub, tmp_path, wallets):
    store, revs = hub
    port = free_port()
    hotkey = wallets[0].hotkey.ss58_address
    job = hub_job(
        revs,
        ["miner/king", "miner/c0", "miner/badvocab"],
        "k-1",
        prompts=[f"Prompt number {i} about rivers and" for i in range(4)],
    )
    proc = start_pod(tmp_path / "pod", store.root, port, hotkey)
    pod = HttpPod(f"http://127.0.0.1:{port}", wallets[0], poll_interval=0.05, retries=2, sleep=lambda s: None)
    try:
        assert pod.submit(job).state == "queued"
        end = time.monotonic() + 60
        while pod.status("k-1").state != "running" and time.monotonic() < end:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = start_pod(tmp_path / "pod", store.root, port, hotkey)
        status = pod.status("k-1")
        assert status.state == "interrupted" and status.result is None
        result = pod.run(job, deadline_s=240)  # re-submits the interrupted job once and validates the result
        by_repo = {m.ref.repo: m for m in result.models}
        assert by_repo["miner/king"].status == "ok"
        assert by_repo["miner/badvocab"].status == "model_error"
        assert not any((tmp_path / "pod" / "models").rglob("*.safetensors"))
    finally:
        proc.kill()
        proc.wait(10)


class FlakyTransport(httpx.HTTPTransport):
    """Real HTTP to the pod, except that requests number ``down`` (a range) fail to connect, like a restart."""

    def __init__(self, down: range) -> None:
        super().__init__()
        self.down, self.count = down, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.count += 1
        if self.count in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return super().handle_request(request)


def test_http_pod_waits_out_a_restarting_pod_then_reports_it_down(tmp_path, wallets):
    with serve(scripted_pod(tmp_path, wallets, seconds=0.3)) as url:
        # requests 2..9 fail (8 polls in a row, each retried once): more than the retries, less than the grace
        flaky = httpx.Client(transport=FlakyTransport(range(2, 10)), timeout=5)
        pod = HttpPod(url, wallets[0], poll_interval=0.02, retries=1, sleep=lambda s: time.sleep(0.01), client=flaky)
        assert pod.run(make_job("fl-1"), deadline_s=30).job_id == "fl-1"
        # down for longer than the grace: PodDown, well before the deadline
        gone = httpx.Client(transport=FlakyTransport(range(2, 10_000)), timeout=5)
        pod = HttpPod(
            url,
            wallets[0],
            poll_interval=0.02,
            retries=1,
            sleep=lambda s: time.sleep(0.01),
            client=gone,
            down_grace_s=0.5,
        )
        t0 = time.monotonic()
        with pytest.raises(PodDown, match="unreachable"):
            pod.run(make_job("fl-2"), deadline_s=30)
        assert time.monotonic() - t0 < 10
