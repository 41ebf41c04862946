"""Host pod clients against the real service: signed end to end, timeouts, failover, SIGKILL restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from eval.schemas import EvalResult, JobStatus, ModelResult
from scripts.pod_fixtures import build_hub, free_port, hub_job, make_job, make_wallet
from tests.pod_helpers import ScriptedRunner, fake_result, serve
from validator.pod.server import PodSettings, create_app
from validator.pod_client import (
    HttpPod,
    InvalidResult,
    LocalPod,
    PodDown,
    PodError,
    PodPool,
    PodRejected,
    PodTimeout,
    SinglePod,
    validate_result,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wallets(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("wallets")
    return make_wallet(root, "validator"), make_wallet(root, "stranger")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    return build_hub(tmp_path_factory.mktemp("hub"))


def scripted_pod(tmp_path: Path, wallets, seconds: float = 0.1):
    settings = PodSettings(allow_hotkeys=frozenset({wallets[0].hotkey.ss58_address}), workdir=tmp_path)
    return create_app(settings, runner=ScriptedRunner(seconds=seconds))


# --- validate_result ------------------------------------------------------------
def test_validate_result_accepts_a_matching_result():
    job = make_job("v-1", n_challengers=2)
    assert validate_result(job, fake_result(job)).job_id == "v-1"


@pytest.mark.parametrize(
    "mutation",
    [
        "job_id",
        "missing",
        "extra",
        "swapped_ref",
        "short",
        "king_early",
        "tokens",
        "negative",
        "no_onpolicy",
        "long_onpolicy",
        "winner_unguarded",
        "loser_guarded",
    ],
)
def test_validate_result_refuses_mismatches(mutation):
    job = make_job("v-2", n_challengers=2)
    result = fake_result(job)
    models = list(result.models)
    if mutation == "job_id":
        result = result.model_copy(update={"job_id": "other"})
    elif mutation == "missing":
        result = result.model_copy(update={"models": models[:-1]})
    elif mutation == "extra":
        other = make_job("x", n_challengers=4).models[-1]
        result = result.model_copy(update={"models": models + [models[0].model_copy(update={"ref": other})]})
    elif mutation == "swapped_ref":
        bad_ref = models[1].ref.model_copy(update={"revision": "9" * 40})
        result = result.model_copy(
            update={"models": [models[0], models[1].model_copy(update={"ref": bad_ref}), models[2]]}
        )
    elif mutation == "short":
        short = ModelResult(ref=models[1].ref, status="ok", prompt_kl=[0.1], prompt_tokens=[3])
        result = result.model_copy(update={"models": [models[0], short, models[2]]})
    elif mutation == "king_early":
        early = ModelResult(ref=models[0].ref, status="early_stopped", prompt_kl=[0.1], prompt_tokens=[3])
        result = result.model_copy(update={"models": [early, *models[1:]]})
    elif mutation == "tokens":
        many = models[1].model_copy(update={"prompt_tokens": [10_000, 4]})
        result = result.model_copy(update={"models": [models[0], many, models[2]]})
    elif mutation == "negative":
        negative = models[1].model_copy(update={"prompt_kl": [-0.5, 0.1]})
        result = result.model_copy(update={"models": [models[0], negative, models[2]]})
    elif mutation == "no_onpolicy":  # the king is always measured: without its values no winner can be judged
        unguarded = models[0].model_copy(update={"onpolicy": []})
        result = result.model_copy(update={"models": [unguarded, models[1], models[2]]})
    elif mutation == "long_onpolicy":
        own = [o.model_copy(update={"tokens": job.rules.onpolicy_new_tokens + 1}) for o in models[0].onpolicy]
        result = result.model_copy(update={"models": [models[0].model_copy(update={"onpolicy": own}), *models[1:]]})
    elif mutation == "winner_unguarded":  # a challenger past the king's KL margin must carry the guard's values
        winner = models[1].model_copy(update={"prompt_kl": [0.01] * len(models[1].prompt_kl), "onpolicy": []})
        result = result.model_copy(update={"models": [models[0], winner, models[2]]})
    elif mutation == "loser_guarded":  # values where no pod measures them: not what the job asked for
        loser = models[1].model_copy(update={"onpolicy": models[0].onpolicy})
        result = result.model_copy(update={"models": [models[0], loser, models[2]]})
    with pytest.raises(InvalidResult):
        validate_result(job, result)


def _winner(models, onpolicy):
    """Challenger 1 past the king's KL margin, carrying ``onpolicy`` as its guard values."""
    return models[1].model_copy(update={"prompt_kl": [0.01] * len(models[1].prompt_kl), "onpolicy": onpolicy})


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda m: m[:2], "model set differs"),  # a planned model without a result
        (lambda m: [m[0], m[1], m[1]], "model set differs"),  # one submission twice, another missing
        (
            lambda m: [*m[:2], m[2].model_copy(update={"ref": m[2].ref.model_copy(update={"repo": "org/other"})})],
            "names",
        ),
        (lambda m: [m[0], m[1].model_copy(update={"prompt_kl": m[1].prompt_kl[:-1]}), m[2]], "prompts"),
        (lambda m: [m[0], _winner(m, []), m[2]], "on-policy values"),
        (lambda m: [m[0], _winner(m, m[0].onpolicy[:-1]), m[2]], "on-policy values"),
    ],
)
def test_validate_result_is_the_one_check_the_verdicts_rely_on(mutate, match):
    """The verdicts index the result without checking it again: each of these must stop here (LESSONS 1, 27)."""
    job = make_job("v-3", n_challengers=2)
    result = fake_result(job)
    with pytest.raises(InvalidResult, match=match):
        validate_result(job, result.model_copy(update={"models": mutate(list(result.models))}))


def test_the_host_checks_a_result_in_exactly_one_place():
    """One authority: ``validate_result`` is called once on the host's path (``SinglePod.run``), nowhere else."""
    import ast

    calls = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in sorted((ROOT / "validator").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "validate_result"
    ]
    assert len(calls) == 1 and calls[0].startswith("validator/pod_client.py"), calls
    assert {HttpPod, LocalPod} <= set(SinglePod.__subclasses__())


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


def test_local_pod_uses_the_same_routine(hub, tmp_path):
    store, revs = hub
    from eval.runner import DiskLimits

    observed: list[str] = []  # a benchmark's timer may watch too; the host reads status()
    pod = LocalPod(
        store, tmp_path, "cpu", on_progress=lambda p: observed.append(p.phase), limits=DiskLimits(min_free_bytes=0)
    )
    job = hub_job(revs, ["miner/king", "miner/c0"], "l-1")
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(pod.run(job, deadline_s=300)))
    worker.start()
    seen: list[JobStatus] = []
    while worker.is_alive():  # the local pod reports progress through status(), as a remote one does
        try:
            seen.append(pod.status("l-1"))
        except PodError:
            pass
        time.sleep(0.01)
    worker.join()
    result = done[0]
    assert isinstance(result, EvalResult) and [m.status for m in result.models][0] == "ok"
    assert {s.state for s in seen} == {"running"} and "teacher" in {s.progress.phase for s in seen}
    assert {"teacher", "student", "done"} <= set(observed)
    with pytest.raises(PodError):
        pod.status("l-1")  # finished: nothing running
    with pytest.raises(PodTimeout):
        pod.run(hub_job(revs, ["miner/king", "miner/c0"], "l-2"), deadline_s=0.0)


# --- the real service as a process: signed end to end, SIGKILL mid-job, restart --
def start_pod(workdir: Path, hub_root: Path, port: int, hotkey: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "validator.pod",
        "--port",
        str(port),
        "--allow-hotkey",
        hotkey,
        "--workdir",
        str(workdir),
        "--hub",
        str(hub_root),
        "--device",
        "cpu",
        "--min-free-gb",
        "0",
    ]
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


def test_pool_moves_the_job_off_a_pod_that_fails_it_or_refuses(tmp_path, wallets):
    """A pod whose disk is full (job failed) or whose allow-list lacks us (403) is skipped, not fatal."""
    from eval.errors import InfraError

    def full_disk(job, on_progress, should_cancel):
        raise InfraError("disk nearly full: 10 bytes free")

    hotkeys = frozenset({wallets[0].hotkey.ss58_address})
    failing = create_app(PodSettings(allow_hotkeys=hotkeys, workdir=tmp_path / "a"), runner=full_disk)
    other = frozenset({wallets[1].hotkey.ss58_address})
    refusing = create_app(PodSettings(allow_hotkeys=other, workdir=tmp_path / "b"), runner=ScriptedRunner())
    with serve(failing) as url_a, serve(refusing) as url_b, serve(scripted_pod(tmp_path / "c", wallets)) as url_c:
        pods = [HttpPod(u, wallets[0], poll_interval=0.02) for u in (url_a, url_b, url_c)]
        result = PodPool(pods).run(make_job("pf-1"), deadline_s=30)
        assert result.job_id == "pf-1"
        assert pods[0].status("pf-1").state == "failed"
        with pytest.raises(PodDown, match="disk nearly full"):
            PodPool(pods[:2]).run(make_job("pf-2"), deadline_s=30)


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


def test_pool_reports_live_status_from_the_pod_running_the_job(tmp_path, wallets):
    """The host's dashboard polls ``pod.status``; with several pods that must reach the one doing the work."""
    import threading

    from eval.errors import KlhillError

    dead = HttpPod(f"http://127.0.0.1:{free_port()}", wallets[0], retries=0, timeout=2)
    with serve(scripted_pod(tmp_path, wallets, seconds=1.5)) as url:
        pool = PodPool([dead, HttpPod(url, wallets[0], poll_interval=0.05)])
        box: list[object] = []
        worker = threading.Thread(target=lambda: box.append(pool.run(make_job("ps-1"), deadline_s=30)))
        worker.start()
        seen = None
        end = time.monotonic() + 20
        while worker.is_alive() and time.monotonic() < end:
            try:
                seen = pool.status("ps-1")
                if seen.state == "running" and seen.progress.phase == "student":
                    break
            except KlhillError:
                pass
            time.sleep(0.05)
        worker.join(30)
        assert seen is not None and seen.state == "running" and seen.progress.prompt_count == 2
        assert box and box[0].job_id == "ps-1"
        with pytest.raises(KlhillError):
            pool.status("ps-1")  # finished: no pod is running it any more
