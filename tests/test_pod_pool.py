"""A pool of real pod services: the job moves off a pod that fails, refuses or is down; status follows the job."""

from __future__ import annotations

import time

import pytest

from scripts.pod_fixtures import free_port, make_job, make_wallet
from tests.pod_helpers import ScriptedRunner, scripted_pod, serve
from validator.pod.server import PodSettings, create_app
from validator.pod_client import HttpPod
from validator.pod_errors import PodDown
from validator.pod_pool import PodPool


@pytest.fixture(scope="module")
def wallets(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("wallets")
    return make_wallet(root, "validator"), make_wallet(root, "stranger")


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
